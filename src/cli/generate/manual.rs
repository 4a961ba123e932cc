//! The man page sections that clap's definitions do not hold: the milter's
//! configuration keys, files, signals and cross references. Defaults are
//! taken from the constants the code uses, never retyped.

use std::io::{self, Write};

use pyzor_milter::client::servers::DEFAULT_SERVER;
use pyzor_milter::milter::config as milter_config;
use pyzor_milter::server::config as server_config;

use super::write_sections;

type Entries = Vec<(String, String)>;

fn entries(items: &[(&str, &str)]) -> Entries {
    items
        .iter()
        .map(|(term, text)| ((*term).to_owned(), (*text).to_owned()))
        .collect()
}

fn paragraphs(items: &[&str]) -> Entries {
    items
        .iter()
        .map(|text| (String::new(), (*text).to_owned()))
        .collect()
}

/// pyzor-milter(8): the personalities and where each is documented.
pub fn top(out: &mut dyn Write) -> io::Result<()> {
    write_sections(
        out,
        &[
            (
                "COMMANDS",
                entries(&[
                    (
                        "pyzor",
                        "The Pyzor client, a drop-in for Python pyzor's pyzor command; see pyzor(1).",
                    ),
                    (
                        "pyzord",
                        "The Pyzor server, a drop-in for Python pyzor's pyzord; see pyzord(8).",
                    ),
                    (
                        "milter",
                        "The milter for Postfix and Sendmail; see pyzor-milter-milter(8).",
                    ),
                    (
                        "migrate",
                        "Copy a Pyzor database from one engine to another, also from Python pyzord's gdbm file; see pyzor-milter-migrate(8).",
                    ),
                ]),
            ),
            (
                "INVOCATION BY NAME",
                paragraphs(&[
                    "Started through a link named pyzor or pyzord, the binary acts as that command: pyzor check is pyzor-milter pyzor check. The Debian package installs both links in /usr/bin, so SpamAssassin, procmail and cron jobs written for Python pyzor find it by name.",
                ]),
            ),
            (
                "SEE ALSO",
                see_also(&[
                    "pyzor(1)",
                    "pyzord(8)",
                    "pyzor-milter-milter(8)",
                    "pyzor-milter-migrate(8)",
                ]),
            ),
        ],
    )
}

fn see_also(pages: &[&str]) -> Entries {
    paragraphs(&[&pages.join(", ")])
}

/// The milter's TOML keys: name, then what it does and its default.
fn milter_keys() -> Entries {
    use milter_config::*;
    use pyzor_milter::client::DEFAULT_REFRESH_SECS;
    let (server_host, server_port) = DEFAULT_SERVER;
    let trusted = DEFAULT_TRUSTED_NETWORKS
        .map(|net| format!("\"{net}\""))
        .join(", ");
    vec![
        ("socket", format!("Where to listen: \"inet:HOST:PORT\", \"inet6:HOST:PORT\" (also Sendmail's \"inet:PORT@HOST\") or \"unix:PATH\". Default \"{DEFAULT_SOCKET}\". The --socket option overrides it.")),
        ("rspamd_socket", format!("Also serve rspamd's external_services pyzor scanner here: \"inet:HOST:PORT\" (rspamd's default port is {RSPAMD_DEFAULT_PORT}), \"inet6:HOST:PORT\" or \"unix:PATH\". Unset by default: off. With socket = \"\" only this listener runs.")),
        ("rspamd_read_timeout_ms", format!("How long a peer of the rspamd listener may take to send its whole message before it is dropped, in milliseconds. Default {DEFAULT_RSPAMD_READ_TIMEOUT_MS}.")),
        ("socket_mode", format!("Permissions of a unix socket, in octal as a string. Default \"{DEFAULT_SOCKET_MODE:04o}\": the MTA's user must be in the milter's group.")),
        ("servers", format!("The Pyzor servers to ask, \"host:port\", \"[v6]:port\" or a bare host (port {server_port}), all of them in parallel. Default [\"{server_host}:{server_port}\"].")),
        ("accounts_file", "A Python pyzor accounts file (one \"host : port : user : key\" per line) for signed requests; without it the milter asks anonymously.".into()),
        ("timeout_ms", format!("Deadline in milliseconds for all servers together. Default {DEFAULT_TIMEOUT_MS}.")),
        ("resolve_refresh_secs", format!("How often, in seconds, the servers' names are looked up again; while a lookup fails the last address is kept, and a name that did not resolve is tried again at a later message. Default {DEFAULT_REFRESH_SECS}.")),
        ("action", "What to do with a listed message: \"tag\" (accept, with the header), \"reject\", \"tempfail\", \"quarantine\" or \"discard\". Default \"tag\".".into()),
        ("reject_threshold", "Reject a listed message, whatever the action, when some server's count exceeds this number. Unset by default.".into()),
        ("report_threshold", format!("A message is listed when some server's report count exceeds this number, as pyzor check's --report-threshold. Default {DEFAULT_REPORT_THRESHOLD}.")),
        ("whitelist_threshold", format!("A message is whitelisted, never listed, when some server's whitelist count exceeds this number, as pyzor check's --whitelist-threshold. Default {DEFAULT_WHITELIST_THRESHOLD}.")),
        ("min_count", "The report count must also be at least this number to list a message. Default 0.".into()),
        ("whitelist_factor", "Also whitelisted when the whitelist count is at least this fraction of the report count, as SpamAssassin's pyzor_whitelist_factor. Unset by default.".into()),
        ("check_empty_digest", "Ask the servers about messages whose digest is empty (no body text left after normalisation). Default false: such messages are skipped.".into()),
        ("on_error", "What to do when no server answered in time: \"accept\" (fail open, with the header saying error) or \"tempfail\". Default \"accept\".".into()),
        ("reject_reply", format!("The SMTP reply for rejected messages, a 5XX code, an optional enhanced code and text. Default \"{DEFAULT_REJECT_REPLY}\".")),
        ("tempfail_reply", format!("The SMTP reply for deferred messages, a 4XX code. Default \"{DEFAULT_TEMPFAIL_REPLY}\".")),
        ("quarantine_reason", format!("The reason given to the MTA with action \"quarantine\". Default \"{DEFAULT_QUARANTINE_REASON}\".")),
        ("header", format!("The header added to accepted messages with the verdict, the digest and each server's counts; copies of it arriving with the message are removed. Default \"{DEFAULT_HEADER}\".")),
        ("max_message_size", format!("Messages larger than this many bytes are skipped. Default {DEFAULT_MAX_MESSAGE_SIZE}, Postfix's message_size_limit.")),
        ("skip_authenticated", "Skip messages from SMTP AUTH authenticated senders. Default true.".into()),
        ("trusted_networks", format!("Skip messages from clients in these networks (CIDR notation). Default [{trusted}].")),
        ("skip_sender_domains", "Skip messages whose envelope sender is in one of these domains. Default [].".into()),
        ("skip_recipient_domains", "Skip messages all of whose envelope recipients are in these domains. Default [].".into()),
        ("cache_ttl_secs", format!("How long a server's answer for a digest is reused, in seconds; 0 turns the cache off. Default {DEFAULT_CACHE_TTL_SECS}.")),
        ("cache_max_entries", format!("The most digests the cache holds. Default {DEFAULT_CACHE_MAX_ENTRIES}.")),
        ("max_connections", format!("The most MTA connections served at once; changed only by a restart. Default {DEFAULT_MAX_CONNECTIONS}.")),
        ("dry_run", "Check and log, but accept every message (the header is still added), as --dry-run. Default false.".into()),
    ]
    .into_iter()
    .map(|(key, text)| (key.to_owned(), text))
    .collect()
}

/// pyzor-milter-milter(8).
pub fn milter(out: &mut dyn Write) -> io::Result<()> {
    let config = milter_config::DEFAULT_CONFIG_PATH;
    let mut configuration = paragraphs(&[&format!(
        "The configuration file, {config} unless --config names another, is TOML. Unknown and repeated keys are errors naming the file and line; an absent key takes its default, and without the default file the milter runs on the defaults. The keys:"
    )]);
    configuration.extend(milter_keys());
    write_sections(
        out,
        &[
            ("CONFIGURATION", configuration),
            (
                "DECISION",
                paragraphs(&[
                    "A message is checked like pyzor check: it is listed when some server's count exceeds report_threshold and no server's whitelist count exceeds whitelist_threshold. A listed message gets the configured action; every accepted message gets the header, whose value begins with the verdict: listed, clean, whitelisted, error or skipped (with reason=).",
                ]),
            ),
            (
                "LOGGING",
                paragraphs(&[
                    "Logs go to standard error (the journal under systemd). Each message gives one line beginning with its queue id, with the verdict, the digest, the counts of each server and the action taken. RUST_LOG=debug gives more.",
                    "To see why a message was tagged, read its header and its log line, then run pyzor predigest on the message: it prints the normalised lines the digest was made from, and pyzor digest prints the digest itself.",
                ]),
            ),
            (
                "SIGNALS",
                entries(&[
                    (
                        "SIGHUP",
                        "Reread the configuration file; a file with errors is logged and the old configuration kept. socket and max_connections change only on restart.",
                    ),
                    ("SIGTERM, SIGINT", "Stop after the messages in flight."),
                ]),
            ),
            ("FILES", entries(&[(config, "The configuration file.")])),
            (
                "SEE ALSO",
                see_also(&["pyzor-milter(8)", "pyzor(1)", "pyzord(8)", "postconf(5)"]),
            ),
        ],
    )
}

/// pyzor(1).
pub fn pyzor(out: &mut dyn Write) -> io::Result<()> {
    write_sections(
        out,
        &[
            (
                "COMMANDS",
                entries(&[
                    (
                        "check",
                        "Ask the servers about each message; exit 0 when every server answered, some message is listed and none is whitelisted, else 1.",
                    ),
                    ("report", "Report each message as spam."),
                    ("whitelist", "Whitelist each message."),
                    ("info", "Print what the servers know about each message."),
                    ("ping", "Ask each server whether it is up."),
                    (
                        "pong",
                        "As check, but the servers answer as if every message were listed: a test of the setup.",
                    ),
                    ("digest", "Print each message's digest, 40 hex digits."),
                    (
                        "predigest",
                        "Print the normalised lines the digest is made from.",
                    ),
                    (
                        "genkey",
                        "Make a salt and key for the accounts file from a passphrase.",
                    ),
                    (
                        "local_whitelist, local_unwhitelist",
                        "Add the messages' digests to, or remove them from, the local whitelist file.",
                    ),
                ]),
            ),
            (
                "FILES",
                entries(&[(
                    "~/.pyzor/",
                    "The home directory (/etc/pyzor without $HOME), or --homedir: config (its [client] section), servers (host:port lines; public.pyzor.org:24441 without it), accounts and whitelist, read as Python pyzor 1.1.2 reads them.",
                )]),
            ),
            (
                "SEE ALSO",
                see_also(&["pyzor-milter(8)", "pyzord(8)", "spamassassin(1)"]),
            ),
        ],
    )
}

/// pyzord(8).
pub fn pyzord(out: &mut dyn Write) -> io::Result<()> {
    let sqlite = pyzor_milter::storage::sqlite::DEFAULT_FILE_NAME;
    let port = server_config::DEFAULT_PORT;
    write_sections(
        out,
        &[
            (
                "NOTES",
                paragraphs(&[&format!(
                    "pyzord serves the Pyzor protocol over UDP (port {port} unless --port or Port says otherwise) from a SQLite, Redis or MySQL/MariaDB database. It reads Python pyzord's home directory and options; its own additions are marked \"ours\". A Python pyzord gdbm database is not opened: pyzor-milter migrate copies it into SQLite."
                )]),
            ),
            (
                "FILES",
                entries(&[
                    (
                        "HOMEDIR/config",
                        "The [server] section: Port, ListenAddress, Engine, DigestDB, PasswdFile, AccessFile, CleanupAge, LogFile, UsageLogFile, PidFile, ForwardClientHomedir, and ours: MetricsAddress, MetricsLogInterval, SQLiteSynchronous. Relative file names are taken in the home directory, ~/.pyzor (or /etc/pyzor without $HOME) unless --homedir names another.",
                    ),
                    (
                        &format!("HOMEDIR/{sqlite}"),
                        "The SQLite database unless DigestDB names another.",
                    ),
                    (
                        "HOMEDIR/pyzord.passwd, HOMEDIR/pyzord.access",
                        "Accounts and their permissions, as Python pyzord reads them.",
                    ),
                ]),
            ),
            (
                "SIGNALS",
                entries(&[
                    ("SIGUSR1, SIGHUP", "Reread pyzord.passwd and pyzord.access."),
                    ("SIGTERM, SIGINT", "Stop."),
                ]),
            ),
            (
                "METRICS",
                paragraphs(&[
                    "With --metrics-address (MetricsAddress) pyzord answers HTTP requests on that address with its request counters in the Prometheus text format.",
                ]),
            ),
            (
                "SEE ALSO",
                see_also(&["pyzor(1)", "pyzor-milter(8)", "pyzor-milter-migrate(8)"]),
            ),
        ],
    )
}

/// pyzor-milter-migrate(8).
pub fn migrate(out: &mut dyn Write) -> io::Result<()> {
    write_sections(
        out,
        &[
            (
                "EXAMPLES",
                paragraphs(&[
                    "pyzor-milter migrate --se gdbm --sd /var/lib/pyzor/pyzord.db --de sqlite --dd /var/lib/pyzor/pyzord.sqlite",
                    "The engines are gdbm (as a source only), sqlite, redis and mysql; the DSNs are those of pyzord --dsn.",
                ]),
            ),
            ("SEE ALSO", see_also(&["pyzord(8)", "pyzor-milter(8)"])),
        ],
    )
}
