use std::path::Path;

use super::*;
use crate::milter::cache::DigestMemo;
use crate::milter::config;

const EMPTY: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

fn config(text: &str) -> Arc<Config> {
    Arc::new(config::parse(text, Path::new("t.toml")).expect("valid config"))
}

fn session(text: &str) -> Session {
    let config = config(text);
    let mut session = Session::new(Arc::clone(&config));
    session.connect(Some("192.0.2.7".parse().expect("ip")));
    session.mail(config, "<a@example.org>", None);
    session.rcpt("<b@example.net>");
    session
}

fn checks(counts: &[Result<(i64, i64), &str>]) -> Vec<ServerCheck> {
    counts
        .iter()
        .enumerate()
        .map(|(index, result)| ServerCheck {
            server: format!("s{index}:24441"),
            result: result.map_err(|reason| match reason {
                "timeout" => Failure::timeout(),
                reason => Failure::error(reason),
            }),
        })
        .collect()
}

fn decide(text: &str, counts: &[Result<(i64, i64), &str>]) -> Outcome {
    session(text).decide(Digest([0xab; 20]), checks(counts))
}

fn feed(session: &mut Session, message: &[u8]) {
    let split = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = std::str::from_utf8(&message[..split]).expect("ascii");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("a header before");
            last.1.push('\n');
            last.1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("a colon");
            headers.push((
                name.to_owned(),
                value.strip_prefix(' ').unwrap_or(value).to_owned(),
            ));
        }
    }
    for (name, value) in headers {
        session.header(name.as_bytes(), value.as_bytes());
    }
    session.end_of_headers();
    session.body(&message[split + 4..]);
}

const MESSAGE: &[u8] = b"From: a@example.org\r\nSubject: a folded\r\n\tsubject\r\nX-Pyzor: listed; forged\r\n\r\nThis is the body of a message that is long enough to count.\r\nAnother line of text that enters the digest here.\r\n";

#[test]
fn rebuilds_the_message_as_the_client_sent_it() {
    let mut session = session("");
    feed(&mut session, MESSAGE);
    assert_eq!(session.spoofed_headers(), 1);
    assert_eq!(
        session.end_of_message(&DigestMemo::new(0)),
        Step::Check(digest::digest(MESSAGE))
    );
}

#[test]
fn leading_space_kept_when_negotiated() {
    let mut session = session("");
    session.leading_space = true;
    session.header(b"Subject", b" x\n\ty");
    session.end_of_headers();
    assert_eq!(session.message.text, b"Subject: x\r\n\ty\r\n\r\n");
}

#[test]
fn listed_is_tagged_by_default() {
    let outcome = decide("", &[Ok((3, 0)), Err("timeout")]);
    assert_eq!(outcome.verdict, Verdict::Listed);
    assert_eq!(outcome.disposition, Disposition::Accept);
    assert_eq!(
        outcome.header.as_deref(),
        Some(
            "listed; digest=abababababababababababababababababababab; s0:24441=3/0; s1:24441=timeout"
        )
    );
}

#[test]
fn listed_is_rejected_when_configured() {
    let outcome = decide("action = \"reject\"", &[Ok((1, 0))]);
    let reply = config::Reply {
        code: "550".into(),
        enhanced: Some("5.7.1".into()),
        text: "Message rejected as spam by Pyzor".into(),
    };
    assert_eq!(outcome.disposition, Disposition::Reject(reply));
    assert_eq!(outcome.header, None);
}

#[test]
fn reject_threshold_above_tagging() {
    let text = "reject_threshold = 10";
    assert_eq!(
        decide(text, &[Ok((10, 0))]).disposition,
        Disposition::Accept
    );
    assert!(matches!(
        decide(text, &[Ok((11, 0))]).disposition,
        Disposition::Reject(_)
    ));
}

#[test]
fn whitelist_wins() {
    let outcome = decide("action = \"reject\"", &[Ok((50, 0)), Ok((0, 1))]);
    assert_eq!(outcome.verdict, Verdict::Whitelisted);
    assert_eq!(outcome.disposition, Disposition::Accept);
    let factor = "whitelist_factor = 0.2\nwhitelist_threshold = 100";
    assert_eq!(decide(factor, &[Ok((10, 2))]).verdict, Verdict::Whitelisted);
    assert_eq!(decide(factor, &[Ok((11, 2))]).verdict, Verdict::Listed);
}

#[test]
fn thresholds() {
    assert_eq!(decide("", &[Ok((0, 0))]).verdict, Verdict::Clean);
    assert_eq!(
        decide("report_threshold = 5", &[Ok((5, 0))]).verdict,
        Verdict::Clean
    );
    assert_eq!(
        decide("report_threshold = 5", &[Ok((6, 0))]).verdict,
        Verdict::Listed
    );
    assert_eq!(
        decide("min_count = 5", &[Ok((4, 0))]).verdict,
        Verdict::Clean
    );
}

#[test]
fn no_answer_fails_open_or_tempfails() {
    let outcome = decide("action = \"reject\"", &[Err("timeout")]);
    assert_eq!(outcome.verdict, Verdict::Error);
    assert_eq!(outcome.disposition, Disposition::Accept);
    assert!(matches!(
        decide("on_error = \"tempfail\"", &[Err("error")]).disposition,
        Disposition::Tempfail(_)
    ));
}

#[test]
fn dry_run_accepts() {
    let outcome = decide("action = \"discard\"\ndry_run = true", &[Ok((9, 0))]);
    assert_eq!(outcome.verdict, Verdict::Listed);
    assert_eq!(outcome.disposition, Disposition::Accept);
}

fn skipped(session: &mut Session) -> Option<String> {
    match session.end_of_message(&DigestMemo::new(0)) {
        Step::Done(outcome) => outcome.header,
        Step::Check(_) => None,
    }
}

#[test]
fn skips() {
    let config = config("");
    let mut trusted = Session::new(Arc::clone(&config));
    trusted.connect(Some("127.0.0.1".parse().expect("ip")));
    trusted.mail(Arc::clone(&config), "<a@b>", None);
    feed(&mut trusted, MESSAGE);
    assert_eq!(
        skipped(&mut trusted).as_deref(),
        Some("skipped; reason=trusted-network")
    );

    let mut authenticated = session("");
    authenticated.mail(config, "<a@b>", Some("alice"));
    feed(&mut authenticated, MESSAGE);
    assert_eq!(
        skipped(&mut authenticated).as_deref(),
        Some("skipped; reason=authenticated")
    );

    let mut domain = session("skip_sender_domains = [\"Example.ORG\"]");
    domain.mail(domain.config().clone(), "<x@mail.example.org.>", None);
    assert_eq!(
        skipped(&mut domain).as_deref(),
        Some("skipped; reason=sender-domain")
    );

    let mut recipients = session("skip_recipient_domains = [\"example.net\"]");
    recipients.rcpt("<c@other.example>");
    feed(&mut recipients, MESSAGE);
    assert!(skipped(&mut recipients).is_none());
    let mut recipients = session("skip_recipient_domains = [\"example.net\"]");
    assert_eq!(
        skipped(&mut recipients).as_deref(),
        Some("skipped; reason=recipient-domain")
    );
}

#[test]
fn oversize_is_skipped_and_memory_dropped() {
    let mut session = session("max_message_size = 100");
    feed(&mut session, MESSAGE);
    session.body(&[b'x'; 1000]);
    assert_eq!(session.message_len(), 0);
    assert_eq!(
        skipped(&mut session).as_deref(),
        Some("skipped; reason=oversize")
    );
}

/// fuzz/regressions/milter_session/folded-header-past-limit: a header
/// folded on every line grows by a CR per fold; the text must still stay
/// within `max_message_size`.
#[test]
fn folded_header_counts_its_crlf_against_the_limit() {
    let mut session = session("max_message_size = 256");
    let value = [&b"a"[..], &b"\n ".repeat(110)].concat();
    session.header(b"Subject", &value);
    assert_eq!(session.message_len(), 0);
    session.end_of_headers();
    session.body(b"body\n");
    assert!(session.message_len() <= 256);
    assert_eq!(
        skipped(&mut session).as_deref(),
        Some("skipped; reason=oversize")
    );
}

#[test]
fn empty_digest_is_not_checked_unless_configured() {
    let mut session = session("");
    session.header(b"Subject", b"hi");
    session.end_of_headers();
    session.body(b"short\r\n");
    assert_eq!(
        skipped(&mut session),
        Some(format!("skipped; reason=empty-digest; digest={EMPTY}"))
    );
    let mut session = session_with_empty_check();
    session.end_of_headers();
    assert!(
        matches!(session.end_of_message(&DigestMemo::new(0)), Step::Check(d) if d.to_hex() == EMPTY)
    );
}

fn session_with_empty_check() -> Session {
    session("check_empty_digest = true")
}

#[test]
fn the_log_line_names_why_each_server_failed_and_the_header_does_not() {
    let outcome = decide("", &[Ok((0, 0)), Err("timeout"), Err("refused")]);
    assert_eq!(
        outcome.header.as_deref(),
        Some(
            "clean; digest=abababababababababababababababababababab; s0:24441=0/0; \
             s1:24441=timeout; s2:24441=error"
        )
    );
    let line = session("").summary(&outcome);
    let expected = "verdict=clean digest=abababababababababababababababababababab \
         counts=\"s0:24441=0/0, s1:24441=timeout, s2:24441=error\" \
         errors=\"s1:24441=timeout, s2:24441=refused\" action=accept elapsed_ms=";
    assert!(line.starts_with(expected), "{line}");
}

#[test]
fn bad_input_does_not_panic() {
    let mut session = session("");
    session.header(b"\xff\x00", b"\x00\xff\n\n\r");
    session.body(b"\x00\x00--boundary\r\n\xff");
    session.end_of_headers();
    let _ = session.end_of_message(&DigestMemo::new(0));
    let _ = session.summary(&decide("", &[]));
}

/// `MESSAGE` as another copy of a spam run carries it: other envelope
/// headers, in another order, with different folding.
const ANOTHER_COPY: &[u8] = b"Received: from mx.example.com\r\n\tby mx.example.net; Sat, 1 Jan 2000 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nFrom: b@example.org\r\nSubject: other\r\n\r\nThis is the body of a message that is long enough to count.\r\nAnother line of text that enters the digest here.\r\n";

fn key_of(message: &[u8]) -> Option<TextKey> {
    let mut session = session("");
    feed(&mut session, message);
    session.text_key()
}

#[test]
fn copies_differing_in_plain_headers_share_a_key() {
    assert_eq!(digest::digest(MESSAGE), digest::digest(ANOTHER_COPY));
    assert!(key_of(MESSAGE).is_some());
    assert_eq!(key_of(MESSAGE), key_of(ANOTHER_COPY));
    let memo = DigestMemo::new(10);
    for message in [MESSAGE, ANOTHER_COPY] {
        let mut session = session("");
        feed(&mut session, message);
        assert_eq!(
            session.end_of_message(&memo),
            Step::Check(digest::digest(message))
        );
    }
}

#[test]
fn content_headers_and_body_change_the_key() {
    let with_type = [b"Content-Type: text/html\r\n".as_slice(), MESSAGE].concat();
    let other_body = [MESSAGE, b"more\r\n".as_slice()].concat();
    let base = key_of(MESSAGE);
    assert_ne!(key_of(&with_type), base);
    assert_ne!(key_of(&other_body), base);
}

#[test]
fn headers_that_could_reshape_the_text_have_no_key() {
    for (name, value) in [
        (b"X-Bad Name".as_slice(), b"v".as_slice()),
        (b"", b"v"),
        (b"X-FF", b"a\x0cb"),
        (b"X-VT", b"a\x0bb"),
        (b"X-RS", b"a\x1eb"),
        (b"X-LF", b"a\nb"),
        (b"X-Trailing-LF", b"a\n"),
        (b"X-NUL", b"a\0b"),
    ] {
        let mut session = session("");
        session.header(name, value);
        session.end_of_headers();
        session.body(b"text\r\n");
        assert_eq!(
            session.text_key(),
            None,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    let mut session = session("");
    session.header(b"X-Folded", b"a\n\tb\n c");
    session.end_of_headers();
    assert!(session.text_key().is_some());
}

/// The exactness argument of `text_key`, checked: a header that makes the
/// key refuse would have changed the digest of the same body.
#[test]
fn a_refused_header_can_change_the_digest() {
    let body = b"This line is long enough to be part of the digest.\r\nSo is this one, which is also long.\r\n";
    let digest_with = |name: &[u8], value: &[u8]| {
        let mut session = session("");
        session.header(name, value);
        session.header(b"Content-Type", b"text/plain");
        session.end_of_headers();
        session.body(body);
        session.end_of_message(&DigestMemo::new(0))
    };
    let plain = digest_with(b"X-Plain", b"value");
    assert_ne!(digest_with(b"X-Bad Name", b"value"), plain);
    assert_ne!(
        digest_with(
            b"X-LF",
            b"a\nThis line is not a header and starts the body."
        ),
        plain
    );
}
