//! The milter driven as an MTA drives it (indymilter-test playing Postfix
//! and Sendmail), against our pyzord in process and Python pyzord. The
//! digests expected in the X-Pyzor header are Python pyzor's.

mod dns;
mod miltertest;
mod postfix;
mod sendmail;
pub mod util;

use std::time::{Duration, Instant};

use indymilter_test::{EomAction, Status};
use pyzor_milter::protocol::Op;

use pyzor_milter::milter::cache::DigestMemo;
use pyzor_milter::milter::session::{Session, Step};

use crate::util::reference::python_digests;
use crate::util::{corpus_files, temp_dir};
use util::{
    Envelope, Mta, added_header, message_file, rebuild, send, spam, split_message, start_milter,
    start_pyzord, tell,
};

/// A config for tests: nothing trusted (the test MTA is on loopback), one
/// server.
fn config(server: std::net::SocketAddr, extra: &str) -> String {
    format!("servers = [\"{server}\"]\ntrusted_networks = []\ntimeout_ms = 2000\n{extra}\n")
}

#[tokio::test]
async fn reported_message_is_tagged_then_rejected() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let (path, digest) = message_file(dir.path(), "spam.eml", &spam("tagged"));
    let message = std::fs::read(path).expect("read");
    tell(pyzord.address, Op::Report, &digest, 3).await;

    let tagging = start_milter(&config(pyzord.address, ""));
    for mta in [Mta::Postfix, Mta::Sendmail] {
        let envelope = Envelope {
            mta,
            ..Envelope::default()
        };
        let (actions, status) = send(tagging.address, &envelope, &message).await;
        assert_eq!(status, Status::Accept);
        assert_eq!(
            added_header(&actions),
            Some(format!("listed; digest={digest}; {}=3/0", pyzord.address))
        );
    }

    let rejecting = start_milter(&config(
        pyzord.address,
        "action = \"reject\"\ncache_ttl_secs = 0",
    ));
    let (actions, status) = send(rejecting.address, &Envelope::default(), &message).await;
    let Status::Reject {
        message: Some(reply),
    } = status
    else {
        panic!("expected a reject with our reply, got {status:?}");
    };
    assert_eq!(
        reply.to_str(),
        Ok("550 5.7.1 Message rejected as spam by Pyzor")
    );
    assert_eq!(added_header(&actions), None);

    let threshold = start_milter(&config(pyzord.address, "reject_threshold = 2"));
    let (_, status) = send(threshold.address, &Envelope::default(), &message).await;
    assert!(matches!(status, Status::Reject { .. }), "{status:?}");
}

#[tokio::test]
async fn clean_and_whitelisted_pass() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let (_, clean_digest) = message_file(dir.path(), "clean.eml", &spam("clean"));
    let (_, wl_digest) = message_file(dir.path(), "wl.eml", &spam("whitelisted"));
    tell(pyzord.address, Op::Report, &wl_digest, 5).await;
    tell(pyzord.address, Op::Whitelist, &wl_digest, 1).await;
    let milter = start_milter(&config(pyzord.address, "action = \"reject\""));

    let (actions, status) = send(milter.address, &Envelope::default(), &spam("clean")).await;
    assert_eq!(status, Status::Accept);
    assert_eq!(
        added_header(&actions),
        Some(format!(
            "clean; digest={clean_digest}; {}=0/0",
            pyzord.address
        ))
    );
    let (actions, status) = send(milter.address, &Envelope::default(), &spam("whitelisted")).await;
    assert_eq!(status, Status::Accept);
    assert_eq!(
        added_header(&actions),
        Some(format!(
            "whitelisted; digest={wl_digest}; {}=5/1",
            pyzord.address
        ))
    );
}

#[tokio::test]
async fn server_down_fails_open_within_the_deadline() {
    let dir = temp_dir();
    let (_, digest) = message_file(dir.path(), "m.eml", &spam("down"));
    // A UDP port nobody listens on: bound, then closed.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let address = silent.local_addr().expect("address");
    drop(silent);
    let milter = start_milter(&format!(
        "servers = [\"{address}\"]\ntrusted_networks = []\ntimeout_ms = 500\naction = \"reject\""
    ));
    let started = Instant::now();
    let (actions, status) = send(milter.address, &Envelope::default(), &spam("down")).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, Status::Accept);
    let header = added_header(&actions).expect("a header");
    assert!(
        header.starts_with(&format!("error; digest={digest}; {address}=")),
        "{header}"
    );

    let tempfail = start_milter(&format!(
        "servers = [\"{address}\"]\ntrusted_networks = []\ntimeout_ms = 300\non_error = \"tempfail\""
    ));
    let (_, status) = send(tempfail.address, &Envelope::default(), &spam("down")).await;
    assert!(matches!(status, Status::Tempfail { .. }), "{status:?}");
}

#[tokio::test]
async fn spoofed_header_is_removed() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let mut message = b"X-Pyzor: whitelisted; forged\r\nx-pyzor: clean\r\n".to_vec();
    message.extend_from_slice(&spam("spoofed"));
    let (_, digest) = message_file(dir.path(), "m.eml", &message);
    let milter = start_milter(&config(pyzord.address, ""));
    let (actions, status) = send(milter.address, &Envelope::default(), &message).await;
    assert_eq!(status, Status::Accept);
    let deleted: Vec<i32> = actions
        .actions
        .iter()
        .filter_map(|action| match action {
            EomAction::DeleteHeader { name, index } if name.as_bytes() == b"X-Pyzor" => {
                Some(*index)
            }
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![2, 1]);
    assert_eq!(
        added_header(&actions),
        Some(format!("clean; digest={digest}; {}=0/0", pyzord.address))
    );
}

#[tokio::test]
async fn authenticated_trusted_and_oversize_are_skipped() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let (_, digest) = message_file(dir.path(), "m.eml", &spam("skipped"));
    tell(pyzord.address, Op::Report, &digest, 2).await;
    let milter = start_milter(&format!(
        "servers = [\"{}\"]\naction = \"reject\"\ntrusted_networks = [\"10.0.0.0/8\"]\n\
         max_message_size = 4000",
        pyzord.address
    ));
    let message = spam("skipped");
    for mta in [Mta::Postfix, Mta::Sendmail] {
        let authenticated = Envelope {
            mta,
            auth: Some("alice"),
            ..Envelope::default()
        };
        let (actions, status) = send(milter.address, &authenticated, &message).await;
        assert_eq!(status, Status::Accept);
        assert_eq!(
            added_header(&actions).as_deref(),
            Some("skipped; reason=authenticated")
        );
    }
    let trusted = Envelope {
        client: "10.1.2.3",
        ..Envelope::default()
    };
    let (actions, _) = send(milter.address, &trusted, &message).await;
    assert_eq!(
        added_header(&actions).as_deref(),
        Some("skipped; reason=trusted-network")
    );

    let mut big = message.clone();
    big.extend(std::iter::repeat_n(b"more text to make it large\r\n".as_slice(), 200).flatten());
    let (actions, status) = send(milter.address, &Envelope::default(), &big).await;
    assert_eq!(status, Status::Accept);
    assert_eq!(
        added_header(&actions).as_deref(),
        Some("skipped; reason=oversize")
    );

    // The same message from elsewhere is rejected: the skips were the cause.
    let (_, status) = send(milter.address, &Envelope::default(), &message).await;
    assert!(matches!(status, Status::Reject { .. }), "{status:?}");
}

#[tokio::test]
async fn python_pyzord_as_the_server() {
    let dir = temp_dir();
    let pyzord = crate::server_util::PythonPyzord::start(dir.path(), &[], &[]);
    let (_, digest) = message_file(dir.path(), "m.eml", &spam("python"));
    tell(pyzord.address, Op::Report, &digest, 4).await;
    let milter = start_milter(&config(pyzord.address, ""));
    let (actions, status) = send(
        milter.address,
        &Envelope {
            mta: Mta::Sendmail,
            ..Envelope::default()
        },
        &spam("python"),
    )
    .await;
    assert_eq!(status, Status::Accept);
    assert_eq!(
        added_header(&actions),
        Some(format!("listed; digest={digest}; {}=4/0", pyzord.address))
    );
}

#[tokio::test]
async fn reload_replaces_the_config_for_new_messages() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let (_, digest) = message_file(dir.path(), "m.eml", &spam("reload"));
    tell(pyzord.address, Op::Report, &digest, 1).await;
    let text = config(pyzord.address, "");
    let milter = start_milter(&text);
    let (_, status) = send(milter.address, &Envelope::default(), &spam("reload")).await;
    assert_eq!(status, Status::Accept);
    let new = pyzor_milter::milter::config::parse(
        &format!("{text}action = \"discard\"\n"),
        std::path::Path::new("new.toml"),
    )
    .expect("valid");
    milter
        .reload
        .as_ref()
        .expect("reload")
        .send(new)
        .await
        .expect("sent");
    let mut status = Status::Accept;
    for _ in 0..50 {
        status = send(milter.address, &Envelope::default(), &spam("reload"))
            .await
            .1;
        if status == Status::Discard {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, Status::Discard);
}

#[tokio::test]
async fn bad_input_does_not_end_the_milter() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let milter = start_milter(&config(pyzord.address, "max_message_size = 1000000"));
    let mut nasty =
        b"Content-Type: multipart/mixed; boundary=\"x\"\r\nSubject: \xff\xfe 8-bit\r\n".to_vec();
    nasty.extend_from_slice(format!("X-Long: {}\r\n\r\n", "a".repeat(100_000)).as_bytes());
    nasty.extend_from_slice(
        b"--x\r\nContent-Type: text/html; charset=bogus\r\n\r\n<p>\x00\x00 nul</p>\r\n--x",
    );
    let (_, status) = send(milter.address, &Envelope::default(), &nasty).await;
    assert_eq!(status, Status::Accept);
    let recipients: Vec<String> = (0..3000).map(|i| format!("<r{i}@example.net>")).collect();
    let refs: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let many = Envelope {
        recipients: &refs,
        ..Envelope::default()
    };
    let (_, status) = send(milter.address, &many, &spam("many")).await;
    assert_eq!(status, Status::Accept);
    // A client that goes away mid-message.
    let mut conn = indymilter_test::TestConnection::open(milter.address)
        .await
        .expect("open");
    conn.connect("c", ([192, 0, 2, 1], 1000))
        .await
        .expect("connect");
    conn.mail(["<a@b>"]).await.expect("mail");
    conn.header("Subject", "x").await.expect("header");
    drop(conn);
    let (_, status) = send(milter.address, &Envelope::default(), &spam("after")).await;
    assert_eq!(status, Status::Accept);
}

/// A 50 MB message: skipped as oversize under the default
/// `max_message_size`, digested as Python digests it under a larger one, and
/// the milter serves the next message either way.
#[tokio::test]
async fn fifty_megabyte_message_is_skipped_or_digested() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let mut message = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: big\r\n\r\n".to_vec();
    // Long lines: Python's time over 50 MB grows with the number of lines.
    let line = format!(
        "Offer number one for you today.{}claim it\r\n",
        " ".repeat(4000)
    );
    while message.len() < 50 * 1024 * 1024 {
        message.extend_from_slice(line.as_bytes());
    }
    // Python takes seconds over 50 MB: it runs while the oversize case does.
    let python = {
        let dir = dir.path().to_owned();
        let message = message.clone();
        std::thread::spawn(move || message_file(&dir, "big.eml", &message).1)
    };

    let default = start_milter(&config(pyzord.address, ""));
    let (actions, status) = send(default.address, &Envelope::default(), &message).await;
    assert_eq!(status, Status::Accept);
    assert_eq!(
        added_header(&actions).as_deref(),
        Some("skipped; reason=oversize")
    );
    let (_, status) = send(default.address, &Envelope::default(), &spam("small")).await;
    assert_eq!(status, Status::Accept);

    let larger = start_milter(&config(pyzord.address, "max_message_size = 60000000"));
    let (actions, status) = send(larger.address, &Envelope::default(), &message).await;
    assert_eq!(status, Status::Accept);
    let digest = python.join().expect("Python digested the message");
    assert_eq!(
        added_header(&actions),
        Some(format!("clean; digest={digest}; {}=0/0", pyzord.address))
    );
    let (_, small) = message_file(dir.path(), "small.eml", &spam("small"));
    let (actions, status) = send(larger.address, &Envelope::default(), &spam("small")).await;
    assert_eq!(status, Status::Accept);
    assert_eq!(
        added_header(&actions),
        Some(format!("clean; digest={small}; {}=0/0", pyzord.address))
    );
}

/// The digest memo (on with the cache) must never change a digest: each
/// corpus message is given to a milter session as two copies of a spam run,
/// the second with other envelope headers, and each digest must be Python
/// pyzor's digest of the copy as the milter rebuilds it. (The session is
/// driven directly: through the socket this takes minutes; the callbacks
/// only pass the memo on.)
#[test]
fn digest_memo_keeps_every_digest_exact() {
    let dir = temp_dir();
    let config = std::sync::Arc::new(
        pyzor_milter::milter::config::parse("", std::path::Path::new("t.toml")).expect("config"),
    );
    let memo = DigestMemo::new(100_000);
    let mut copies = Vec::new();
    let mut ours = Vec::new();
    for (index, file) in corpus_files().iter().enumerate() {
        let raw = std::fs::read(file).expect("read a corpus message");
        let mut crlf = Vec::with_capacity(raw.len() + raw.len() / 20);
        for &byte in raw.iter().filter(|&&byte| byte != b'\r') {
            if byte == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(byte);
        }
        let (headers, body) = split_message(&crlf);
        let mut other: Vec<(String, String)> = vec![
            (
                "Received".into(),
                format!("from relay{index}.example.com\n\tby mx.example.net; Sat, 1 Jan 2000"),
            ),
            ("X-Copy".into(), index.to_string()),
        ];
        other.extend(
            headers
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("subject"))
                .cloned(),
        );
        for (copy, headers) in [("a", &headers), ("b", &other)] {
            let path = dir.path().join(format!("{index}{copy}.eml"));
            std::fs::write(&path, rebuild(headers, &body)).expect("write a copy");
            copies.push(path);
            let mut session = Session::new(std::sync::Arc::clone(&config));
            session.mail(std::sync::Arc::clone(&config), "<a@example.org>", None);
            for (name, value) in headers.iter() {
                session.header(name.as_bytes(), value.replace('\0', "").as_bytes());
            }
            session.end_of_headers();
            session.body(&body);
            ours.push(match session.end_of_message(&memo) {
                Step::Check(digest) => digest.to_hex(),
                Step::Done(outcome) => outcome.digest.map(|d| d.to_hex()).unwrap_or_default(),
            });
        }
    }
    let expected = python_digests(&copies);
    let mut wrong = Vec::new();
    let mut same_pairs = 0;
    for (index, (path, python)) in copies.iter().zip(&expected).enumerate() {
        let Ok(python) = python else { continue };
        if index % 2 == 1 && expected[index - 1].as_ref().ok() == Some(python) {
            same_pairs += 1;
        }
        if ours[index] != python.digest {
            wrong.push(format!(
                "{}: ours {}, Python {}",
                path.display(),
                ours[index],
                python.digest
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} digests differ: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    // The memo was exercised: most pairs are one text under two envelopes.
    assert!(
        same_pairs * 10 > copies.len() / 2 * 9,
        "{same_pairs} pairs agree"
    );
}
