//! End to end through a real Sendmail: Debian's sendmail 8.17 run from its
//! unpacked packages (scripts/test puts them in .cache/sendmail, since
//! installing sendmail-bin removes Postfix), with a sendmail.cf built by
//! that tree's m4 in a temporary directory, in its own UTS and mount
//! namespace (a dotted host name and a private /etc/hosts, or Sendmail
//! sleeps a minute at start). Our pyzord runs in process; the milter runs
//! as our binary, so that its log line (with Sendmail's queue id, sent
//! with MAIL FROM) can be read; swaks is the client.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pyzor_milter::protocol::Op;

use super::util::{
    Group, Milter, delivered, free_tcp_port, message_file, spam, start_pyzord, swaks, tell,
    wait_for_port,
};
use crate::util::{manifest_dir, temp_dir};

/// Where the packages are unpacked, unless PYZOR_SENDMAIL_ROOT says.
const SENDMAIL_ROOT: &str = ".cache/sendmail";

/// The host name Sendmail sees in its namespace (with a dot, so it does
/// not wait for a fully qualified one) and the local domain it delivers.
const HOST_NAME: &str = "mx.example.test";

/// How long any one wait in this test may take.
const WAIT: Duration = Duration::from_secs(30);

fn sendmail_root() -> PathBuf {
    let root = std::env::var_os("PYZOR_SENDMAIL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join(SENDMAIL_ROOT));
    assert!(
        root.join("usr/libexec/sendmail/sendmail").exists(),
        "no Sendmail under \"{}\": run scripts/test once, which unpacks Debian's \
         sendmail-bin, sendmail-base, sendmail-cf, m4, liblockfile1 and libwrap0 there",
        root.display()
    );
    root
}

/// A private Sendmail, its process group killed when dropped.
struct Sendmail {
    _process: Group,
    port: u16,
    mail_dir: PathBuf,
    stderr: PathBuf,
}

impl Sendmail {
    fn start(dir: &Path, milter_port: u16) -> Sendmail {
        let root = sendmail_root();
        let port = free_tcp_port();
        let mail_dir = dir.join("mail");
        for sub in ["queue", "mail/tmp", "mail/new"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        std::fs::set_permissions(dir.join("queue"), PermissionsExt::from_mode(0o700))
            .expect("chmod");
        // The copy without its setgid bit, or the loader ignores
        // LD_LIBRARY_PATH (libwrap from the tree).
        let binary = dir.join("sendmail");
        std::fs::copy(root.join("usr/libexec/sendmail/sendmail"), &binary).expect("copy");
        std::fs::set_permissions(&binary, PermissionsExt::from_mode(0o755)).expect("chmod");
        let deliver = dir.join("deliver");
        std::fs::write(
            &deliver,
            "#!/bin/sh\n# Delivers standard input into the Maildir $1.\n\
             name=$(date +%s.%N).$$\n\
             cat > \"$1/tmp/$name\" && mv \"$1/tmp/$name\" \"$1/new/$name\"\n",
        )
        .expect("write the mailer");
        std::fs::set_permissions(&deliver, PermissionsExt::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("service.switch"), "hosts files\naliases files\n")
            .expect("service.switch");
        std::fs::write(
            dir.join("hosts"),
            format!("127.0.0.1 localhost {HOST_NAME}\n"),
        )
        .expect("hosts");
        let cf = dir.join("sendmail.cf");
        let mc = sendmail_mc(&root, dir, port, milter_port);
        std::fs::write(dir.join("sendmail.mc"), &mc).expect("sendmail.mc");
        let output = Command::new(root.join("usr/bin/m4"))
            .arg(dir.join("sendmail.mc"))
            .output()
            .expect("run the tree's m4");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "m4 sendmail.mc failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(&cf, &output.stdout).expect("sendmail.cf");

        let stderr = dir.join("sendmail.err");
        let script = format!(
            "set -e\nmount --bind '{hosts}' /etc/hosts\nhostname {HOST_NAME}\n\
             exec '{binary}' -C '{cf}' -bD\n",
            hosts = dir.join("hosts").display(),
            binary = binary.display(),
            cf = cf.display(),
        );
        let process = Group::spawn(
            Command::new("unshare")
                .args(["-u", "-m", "sh", "-c", &script])
                .env("LD_LIBRARY_PATH", root.join("usr/lib/x86_64-linux-gnu"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).expect("create sendmail.err")),
        );
        let sendmail = Sendmail {
            _process: process,
            port,
            mail_dir,
            stderr,
        };
        wait_for_port(port, "Sendmail", || sendmail.stderr_text());
        sendmail
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Runs swaks with the message file; returns its transcript.
    fn swaks(&self, file: &Path) -> String {
        swaks(self.port, &format!("root@{HOST_NAME}"), WAIT, file)
    }

    /// The delivered messages' texts, waiting up to [`WAIT`] for `count`.
    fn delivered(&self, count: usize) -> Vec<String> {
        delivered(&self.mail_dir.join("new"), count, WAIT, || {
            self.stderr_text()
        })
    }
}

/// The .mc: everything under `dir`, the milter on `milter_port`, local
/// mail (the one domain, [`HOST_NAME`]) into a Maildir by a shell script.
fn sendmail_mc(root: &Path, dir: &Path, port: u16, milter_port: u16) -> String {
    let cf_dir = root.join("usr/share/sendmail/cf");
    let dir = dir.display();
    format!(
        "divert(-1)\n\
         dnl A private Sendmail for the end-to-end test; dnl starts a comment.\n\
         divert(0)dnl\n\
         include(`{cf_dir}/m4/cf.m4')dnl\n\
         dnl No OSTYPE: Debian's and Linux's would bring /etc/mail files.\n\
         define(`__OSTYPE__', `private')dnl\n\
         undefine(`ALIAS_FILE')dnl\n\
         define(`QUEUE_DIR', `{dir}/queue')dnl\n\
         define(`STATUS_FILE', `{dir}/statistics')dnl\n\
         define(`HELP_FILE', `{dir}/helpfile')dnl\n\
         define(`confPID_FILE', `{dir}/sendmail.pid')dnl\n\
         define(`confSERVICE_SWITCH_FILE', `{dir}/service.switch')dnl\n\
         define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl\n\
         dnl With $u in the arguments the mailer is a program, not SMTP.\n\
         define(`LOCAL_MAILER_PATH', `{dir}/deliver')dnl\n\
         define(`LOCAL_MAILER_ARGS', `deliver {dir}/mail $u')dnl\n\
         define(`LOCAL_MAILER_FLAGS', `S')dnl\n\
         FEATURE(`no_default_msa')dnl\n\
         FEATURE(`nocanonify')dnl\n\
         FEATURE(`accept_unresolvable_domains')dnl\n\
         DAEMON_OPTIONS(`Name=MTA, Addr=127.0.0.1, Port={port}')dnl\n\
         INPUT_MAIL_FILTER(`pyzor', `S=inet:{milter_port}@127.0.0.1, F=T, T=S:30s;R:30s;E:5m')dnl\n\
         MAILER(`local')dnl\n\
         MAILER(`smtp')dnl\n",
        cf_dir = cf_dir.display(),
    )
}

/// The queue id Sendmail gave an accepted message, from swaks's transcript.
fn accepted_queue_id(transcript: &str) -> Option<&str> {
    transcript
        .lines()
        .find_map(|line| line.strip_prefix("<-  250 2.0.0 "))
        .and_then(|rest| rest.strip_suffix(" Message accepted for delivery"))
}

#[test]
fn sendmail_rejects_reported_and_tags_clean_with_pythons_digest() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let (spam_file, spam_digest) = message_file(dir.path(), "spam.eml", &spam("sendmail"));
    // LF line ends, a folded header and dot-stuffed lines, as for Postfix.
    let clean = b"From: Someone <sender@example.org>\nTo: root@mx.example.test\n\
        Subject: a long subject that is folded\n\tonto a second line\n\
        Message-ID: <clean-sendmail@example.org>\n\n\
        Hello there, this is a perfectly ordinary message for you.\n\
        .A line that begins with a dot must survive dot-stuffing.\n\
        ..And one that begins with two dots, for good measure here.\n\
        Regards, and see you at the meeting on Friday morning, early.\n";
    let (clean_file, clean_digest) = message_file(dir.path(), "clean.eml", clean);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(tell(pyzord.address, Op::Report, &spam_digest, 2));
    let milter = Milter::start(
        dir.path(),
        &format!(
            "servers = [\"{}\"]\ntrusted_networks = []\naction = \"reject\"\n",
            pyzord.address
        ),
    );
    let sendmail = Sendmail::start(dir.path(), milter.port);

    let transcript = sendmail.swaks(&spam_file);
    assert!(
        transcript.contains("<** 550 5.7.1 Message rejected as spam by Pyzor"),
        "{transcript}\nmilter log:\n{}\nsendmail:\n{}",
        milter.log_text(),
        sendmail.stderr_text()
    );

    let transcript = sendmail.swaks(&clean_file);
    let queue_id = accepted_queue_id(&transcript)
        .unwrap_or_else(|| panic!("not accepted:\n{transcript}"))
        .to_owned();
    let delivered = sendmail.delivered(1);
    let expected = format!(
        "X-Pyzor: clean; digest={clean_digest}; {}=0/0",
        pyzord.address
    );
    assert!(
        delivered[0].lines().any(|line| line == expected),
        "expected {expected:?} in:\n{}",
        delivered[0]
    );

    // One line per message, each beginning with the queue id Sendmail sent
    // with MAIL FROM (the rejected message's id shows only there).
    let lines = milter.message_lines();
    let listed = format!(": verdict=listed digest={spam_digest} ");
    let listed_line = lines
        .iter()
        .find(|line| line.contains(&listed))
        .unwrap_or_else(|| panic!("no line with {listed:?} in {lines:#?}"));
    let listed_id = &listed_line[..listed_line.find(&listed).expect("found")];
    assert!(
        listed_id.len() == queue_id.len()
            && listed_id.bytes().all(|b| b.is_ascii_alphanumeric())
            && listed_id != queue_id,
        "{listed_id:?} is not another Sendmail queue id like {queue_id:?}"
    );
    let clean_line = format!("{queue_id}: verdict=clean digest={clean_digest} ");
    assert!(
        lines.iter().any(|line| line.starts_with(&clean_line)),
        "no line starting {clean_line:?} in {lines:#?}"
    );
}
