//! End to end through a real Postfix: a private instance on 127.0.0.1 in a
//! temporary directory (no chroot, a dotted host name, IPv4, data owned by
//! `postfix`), the milter and our pyzord in process, swaks as the client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pyzor_milter::protocol::Op;

use super::util::{delivered, message_file, spam, start_milter, start_pyzord, swaks, tell};
use crate::util::temp_dir;

const SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// A private Postfix, stopped when dropped.
struct Postfix {
    config_dir: PathBuf,
    mail_dir: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Postfix {
    fn start(dir: &Path, milter_port: u16) -> Postfix {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "Postfix is missing: apt-get install postfix (scripts/test does)"
        );
        let port = free_tcp_port();
        let config_dir = dir.join("etc");
        let mail_dir = dir.join("mail");
        let log = dir.join("maillog");
        for sub in ["etc", "spool", "data", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {dir}/spool\n\
             data_directory = {dir}/data\n\
             maillog_file = {log}\n\
             maillog_file_prefixes = {dir}\n\
             myhostname = mx.example.test\n\
             mydomain = example.test\n\
             mydestination =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_recipient_restrictions = permit_mynetworks, reject\n\
             virtual_mailbox_domains = example.net\n\
             virtual_mailbox_base = {mail}\n\
             virtual_mailbox_maps = static:box/\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             alias_maps =\n\
             alias_database =\n\
             smtpd_milters = inet:127.0.0.1:{milter_port}\n\
             milter_default_action = tempfail\n\
             milter_protocol = 6\n",
            dir = dir.display(),
            log = log.display(),
            mail = mail_dir.display(),
            uid = id("-u"),
            gid = id("-g"),
        );
        std::fs::write(config_dir.join("main.cf"), main_cf).expect("main.cf");
        let master_cf = format!("127.0.0.1:{port} inet n - n - - smtpd\n{SERVICES}");
        std::fs::write(config_dir.join("master.cf"), master_cf).expect("master.cf");
        chown_postfix(&[&dir.join("data"), &mail_dir]);
        let postfix = Postfix {
            config_dir,
            mail_dir,
            log,
            port,
        };
        let status = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&postfix.config_dir)
            .arg("start")
            .status()
            .expect("run postfix start");
        assert!(
            status.success(),
            "postfix start failed: {}",
            postfix.log_text()
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Postfix does not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        postfix
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs swaks with the message file; returns its transcript.
    fn swaks(&self, file: &Path) -> String {
        swaks(self.port, "rcpt@example.net", Duration::from_secs(60), file)
    }

    /// The delivered messages' texts, waiting up to 20 s for `count`.
    fn delivered(&self, count: usize) -> Vec<String> {
        delivered(
            &self.mail_dir.join("box/new"),
            count,
            Duration::from_secs(20),
            || self.log_text(),
        )
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .status();
    }
}

fn id(flag: &str) -> String {
    let output = Command::new("id")
        .args([flag, "postfix"])
        .output()
        .expect("id");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn chown_postfix(paths: &[&Path]) {
    for path in paths {
        let status = Command::new("chown")
            .arg("-R")
            .arg("postfix:postfix")
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

#[test]
fn postfix_rejects_reported_and_tags_clean_with_pythons_digest() {
    let dir = temp_dir();
    // Postfix's processes run as postfix and must reach their directories.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let pyzord = start_pyzord(dir.path());
    let (spam_file, spam_digest) = message_file(dir.path(), "spam.eml", &spam("postfix"));
    // A clean message as a file with LF line ends, a folded header and
    // lines starting with dots (dot-stuffed on the wire).
    let clean = b"From: Someone <sender@example.org>\nTo: rcpt@example.net\n\
        Subject: a long subject that is folded\n\tonto a second line\n\
        Message-ID: <clean-postfix@example.org>\n\n\
        Hello there, this is a perfectly ordinary message for you.\n\
        .A line that begins with a dot must survive dot-stuffing.\n\
        ..And one that begins with two dots, for good measure here.\n\
        Regards, and see you at the meeting on Thursday afternoon.\n";
    let (clean_file, clean_digest) = message_file(dir.path(), "clean.eml", clean);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(tell(pyzord.address, Op::Report, &spam_digest, 2));
    let milter = start_milter(&format!(
        "servers = [\"{}\"]\ntrusted_networks = []\naction = \"reject\"\n",
        pyzord.address
    ));
    let postfix = Postfix::start(dir.path(), milter.address.port());

    let transcript = postfix.swaks(&spam_file);
    assert!(
        transcript.contains("<** 550 5.7.1 Message rejected as spam by Pyzor"),
        "{transcript}\nlog:\n{}",
        postfix.log_text()
    );

    let transcript = postfix.swaks(&clean_file);
    assert!(
        transcript.contains("<-  250 2.0.0 Ok: queued"),
        "{transcript}"
    );
    let delivered = postfix.delivered(1);
    let expected = format!(
        "X-Pyzor: clean; digest={clean_digest}; {}=0/0",
        pyzord.address
    );
    assert!(
        delivered[0].lines().any(|line| line == expected),
        "expected {expected:?} in:\n{}",
        delivered[0]
    );
}
