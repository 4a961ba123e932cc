//! `pyzor-milter pyzor` against Python's `pyzor` 1.1.2, both talking to a
//! real Python pyzord 1.1.2 (or to a fake server for bad answers): same
//! homedir, same stdin, same stdout and exit code.

use crate::client_util::{
    FakeServer, Home, Pyzord, compare, compare_masked, line, ours, python, sorted_lines, thread_of,
};

fn message(body: &str) -> Vec<u8> {
    format!(
        "From: someone@example.com\nTo: you@example.org\nSubject: offer\n\n{body}\n\
         This is the second line of the message body.\nAnd a third line that is long enough.\n"
    )
    .into_bytes()
}

#[test]
fn ping_one_and_several_servers() {
    let first = Pyzord::start();
    let second = Pyzord::start();
    let home = Home::new(&[line(first.address)]);
    compare(&home, &["ping"], b"");
    let home = Home::new(&[line(first.address), line(second.address)]);
    compare(&home, &["ping"], b"");
}

#[test]
fn check_report_info_pong_whitelist_anonymous() {
    let server = Pyzord::start();
    let home = Home::new(&[line(server.address)]);
    let spam = message("Buy cheap watches now, the best offer of this year!");
    compare(&home, &["check"], &spam);
    compare(&home, &["info"], &spam);
    compare(&home, &["report"], &spam);
    compare(&home, &["check"], &spam);
    compare(&home, &["info"], &spam);
    compare(&home, &["-r", "1", "check"], &spam);
    compare(&home, &["-r", "5", "check"], &spam);
    compare(&home, &["pong"], &spam);
    // Anonymous may not whitelist by default: 403, exit 1.
    compare(&home, &["whitelist"], &spam);
    // Python reads stdin once: later commands digest an empty message.
    compare(&home, &["check", "info", "check"], &spam);
}

#[test]
fn styles_digests_and_mbox() {
    let server = Pyzord::start();
    let home = Home::new(&[line(server.address)]);
    let digests = b"da39a3ee5e6b4b0d3255bfef95601890afd80709\n\n  0123456789abcdef0123456789abcdef01234567 \r\nnot-a-digest\n";
    compare(&home, &["-s", "digests", "report"], digests);
    compare(&home, &["-s", "digests", "check"], digests);
    compare(&home, &["-s", "digests", "info"], digests);
    compare(&home, &["-s", "digests", "digest"], digests);
    let mut mbox = b"From a@b Mon Jan  1 00:00:00 2024\n".to_vec();
    mbox.extend(message("First message of the mailbox, with some words."));
    mbox.extend(b"\nFrom c@d Mon Jan  1 00:00:00 2024\n");
    mbox.extend(message("Second message of the mailbox, other words."));
    compare(&home, &["--style=mbox", "report"], &mbox);
    compare(&home, &["--style=mbox", "check"], &mbox);
    compare(&home, &["-s", "mbox", "digest"], &mbox);
    compare(&home, &["-s", "nonsense", "check"], b"");
}

#[test]
fn several_servers_report_and_check() {
    let first = Pyzord::start();
    let second = Pyzord::start();
    let home = Home::new(&[line(first.address), line(second.address)]);
    let spam = message("Several servers get this report at once.");
    let sorted = |text: &str| sorted_lines(text);
    compare_masked(&home, &["report"], &spam, sorted);
    compare_masked(&home, &["check"], &spam, sorted);
    compare_masked(&home, &["info"], &spam, |text| {
        // Blocks of several lines: compare the set of lines.
        sorted_lines(text)
    });
}

#[test]
fn server_that_never_answers() {
    let server = Pyzord::start();
    let silent = FakeServer::silent();
    let spam = message("Nobody answers for this one.");
    let home = Home::new(&[line(silent.address)]);
    compare(&home, &["-t", "1", "check"], &spam);
    // Timeout 0: Python's non-blocking read fails with EAGAIN at once.
    compare(&home, &["-t", "0", "check"], &spam);
    // A negative timeout: Python crashes after sending.
    compare(&home, &["-t", "-1", "check"], &spam);
    compare(&home, &["-t", "1", "ping"], b"");
    let home = Home::new(&[line(server.address), line(silent.address)]);
    compare_masked(&home, &["-t", "1", "report"], &spam, sorted_lines);
    compare_masked(&home, &["-t", "1", "check"], &spam, sorted_lines);
    compare(&home, &["-t", "1", "ping"], b"");
}

#[test]
fn closed_port_times_out_as_for_python() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let home = Home::new(&[line(address)]);
    compare(&home, &["-t", "1", "check"], &message("refused"));
    compare(&home, &["-t", "1", "ping"], b"");
}

/// Python pyzord's access files: `bob` may do everything, anonymous the
/// default operations.
fn authenticated_server() -> Pyzord {
    Pyzord::with_files(&[
        (
            "pyzord.passwd",
            "bob : 0123456789abcdef0123456789abcdef01234567\n",
        ),
        (
            "pyzord.access",
            "all : bob : allow\ncheck report ping pong info : anonymous : allow\n",
        ),
    ])
}

#[test]
fn authenticated_account_may_whitelist() {
    let server = authenticated_server();
    let home = Home::new(&[line(server.address)]);
    home.write(
        "accounts",
        &format!(
            "127.0.0.1 : {} : bob : 00112233,0123456789ABCDEF0123456789abcdef01234567\n",
            server.address.port()
        ),
    );
    let ham = message("A newsletter that people asked for.");
    compare(&home, &["whitelist"], &ham);
    compare(&home, &["report", "report"], &ham);
    compare(&home, &["check"], &ham);
    compare(&home, &["info"], &ham);
    compare(&home, &["-w", "5", "check"], &ham);
}

#[test]
fn wrong_key_is_refused() {
    let server = authenticated_server();
    let home = Home::new(&[line(server.address)]);
    home.write(
        "accounts",
        &format!(
            "127.0.0.1 : {} : bob : 00112233,ffffffffffffffffffffffffffffffffffffffff\n",
            server.address.port()
        ),
    );
    let ham = message("Signed with the wrong key.");
    compare(&home, &["whitelist"], &ham);
    compare(&home, &["check"], &ham);
    compare(&home, &["ping"], b"");
}

#[test]
fn local_whitelist_and_check() {
    let server = Pyzord::start();
    let home = Home::new(&[line(server.address)]);
    let spam = message("Reported, then whitelisted locally.");
    compare(&home, &["report"], &spam);
    home.write("whitelist", "# my list\nabc # comment\n");
    compare(&home, &["local_whitelist"], &spam);
    let python_list = home.read("whitelist");
    compare(&home, &["local_whitelist"], &spam);
    compare(&home, &["check"], &spam);
    compare(&home, &["local_unwhitelist"], &spam);
    compare(&home, &["local_unwhitelist"], &spam);
    compare(&home, &["check"], &spam);
    // Both leave the same set of entries (Python writes a set, in hash order).
    let mut expected: Vec<&str> = python_list.split('\n').collect();
    expected.sort_unstable();
    let homedir = home.path().to_str().expect("utf-8");
    home.write("whitelist", "# my list\nabc # comment\n");
    ours(&["--homedir", homedir, "local_whitelist"], &spam);
    let ours_list = home.read("whitelist");
    let mut actual: Vec<&str> = ours_list.split('\n').collect();
    actual.sort_unstable();
    assert_eq!(actual, expected);
}

#[test]
fn config_file_and_home_files() {
    let server = Pyzord::start();
    let home = Home::new(&[]);
    home.write("elsewhere", &line(server.address));
    home.write(
        "config",
        "# pyzor client config\n[DEFAULT]\nname = elsewhere\n[client]\nServersFile = %(name)s\n\
         timeout: 3\nReportThreshold = 1\n\n[server]\nPort = 1\n",
    );
    let spam = message("Configured through the config file.");
    compare(&home, &["report"], &spam);
    compare(&home, &["check"], &spam);
    compare(&home, &["report"], &spam);
    compare(&home, &["check"], &spam);
    compare(&home, &["-r", "0", "check"], &spam);
    compare(&home, &["--servers-file", "elsewhere", "ping"], b"");
    // optparse: repeated options (the last wins) and abbreviated ones.
    compare(
        &home,
        &["-t", "9", "--time=3", "--report-th", "0", "check"],
        &spam,
    );
}

#[test]
fn options_help_version_and_unknown_command() {
    let home = Home::new(&[]);
    compare(&home, &[], b"");
    compare(&home, &["-h"], b"");
    compare(&home, &["--help"], b"");
    compare(&home, &["frobnicate"], b"");
    let (_, actual) = compare(&home, &["frobnicate", "digest"], &message("x"));
    assert!(actual.stderr_text().contains("Unknown command: frobnicate"));
    // `-V` prints the program path, which differs.
    let expected = python(&["-V"], b"");
    let actual = ours(&["-V"], b"");
    assert_eq!(actual.exit(), expected.exit());
    assert!(expected.stdout_text().ends_with("pyzor 1.1.2\n"));
    assert!(
        actual.stdout_text().ends_with(" 1.1.2\n"),
        "{}",
        actual.stdout_text()
    );
}

#[test]
fn homedir_is_created_private_or_reported() {
    let base = crate::util::temp_dir();
    let made = base.path().join("new-home");
    let made = made.to_str().expect("utf-8");
    let python_out = python(&["--homedir", made, "digest"], b"");
    let python_mode = std::fs::metadata(made)
        .expect("Python made it")
        .permissions();
    std::fs::remove_dir(made).expect("remove");
    let our_out = ours(&["--homedir", made, "digest"], b"");
    let our_mode = std::fs::metadata(made).expect("we made it").permissions();
    assert_eq!(our_out.stdout_text(), python_out.stdout_text());
    assert_eq!(our_mode, python_mode);
    // A homedir that cannot be made: "ERROR ..." on stdout, exit 0.
    let impossible = base.path().join("missing/deeper");
    let impossible = impossible.to_str().expect("utf-8");
    let expected = python(&["--homedir", impossible, "digest"], b"");
    let actual = ours(&["--homedir", impossible, "digest"], b"");
    assert_eq!(
        (actual.stdout_text(), actual.exit()),
        (expected.stdout_text(), expected.exit())
    );
}

#[test]
fn genkey_from_stdin() {
    let home = Home::new(&[]);
    let homedir = home.path().to_str().expect("utf-8");
    for output in [
        python(&["--homedir", homedir, "genkey"], b"secret\nsecret\n"),
        ours(&["--homedir", homedir, "genkey"], b"secret\nsecret\n"),
    ] {
        assert_eq!(output.exit(), "0", "{}", output.stderr_text());
        let text = output.stdout_text();
        let (head, pair) = text.split_once('\n').expect("two lines");
        assert_eq!(head, "salt,key:");
        let (salt, key) = pair.trim_end().split_once(',').expect("salt,key");
        // key = sha1(raw salt digest + passphrase), checked by Python.
        let check = format!(
            "import hashlib; print(hashlib.sha1(bytes.fromhex('{salt}') + b'secret').hexdigest())"
        );
        let mut command = std::process::Command::new(crate::util::reference_python());
        command.args(["-c", &check]);
        let computed = crate::util::run(&mut command, b"");
        assert_eq!(computed.stdout_text().trim(), key);
    }
    compare(&home, &["genkey"], b"one\ntwo\n");
}

/// A named way to answer a request badly.
type BadAnswer = (&'static str, fn(&str) -> Vec<u8>);

/// Servers that answer badly, each answer built from the request and
/// carrying its Thread.
fn bad_answers() -> Vec<BadAnswer> {
    vec![
        ("no Count", |request| {
            format!(
                "Code: 200\nDiag: OK\nPV: 2.1\nThread: {}\n\n",
                thread_of(request)
            )
            .into_bytes()
        }),
        ("no Diag", |request| {
            format!(
                "Code: 200\nPV: 2.1\nThread: {}\nCount: 1\nWL-Count: 0\n",
                thread_of(request)
            )
            .into_bytes()
        }),
        ("truncated", |request| {
            format!(
                "Code: 200\nDiag: OK\nPV: 2.1\nThread: {}\nCou",
                thread_of(request)
            )
            .into_bytes()
        }),
        ("Code not a number", |request| {
            format!(
                "Code: OK\nDiag: OK\nPV: 2.1\nThread: {}\nCount: 1\nWL-Count: 0\n",
                thread_of(request)
            )
            .into_bytes()
        }),
        ("CRLF and odd order", |request| {
            format!("WL-Count: 0\r\nCount: 7\r\nThread: {}\r\nPV: 2.1\r\ndiag: fine\r\nCODE: 200\r\n\r\n", thread_of(request))
                .into_bytes()
        }),
    ]
}

/// Datagrams from the server's address that answer no request of ours:
/// Python takes the first one as the answer; we wait for ours.
fn answers_to_others() -> Vec<BadAnswer> {
    vec![
        ("no Thread", |_| {
            b"Code: 200\nDiag: OK\nPV: 2.1\nCount: 1\nWL-Count: 0\n".to_vec()
        }),
        ("garbage", |_| b"\xff\xfe\x00garbage\n\n".to_vec()),
        ("another Thread", |request| {
            let thread: u32 = thread_of(request).parse().unwrap_or(2000);
            let other = if thread >= 65535 { 1024 } else { thread + 1 };
            format!("Code: 200\nDiag: OK\nPV: 2.1\nThread: {other}\nCount: 1\nWL-Count: 0\n")
                .into_bytes()
        }),
        ("Thread not a number", |_| {
            b"Code: 200\nDiag: OK\nPV: 2.1\nThread: abc\nCount: 1\nWL-Count: 0\n".to_vec()
        }),
        ("error Thread", |_| {
            b"Code: 200\nDiag: OK\nPV: 2.1\nThread: 1023\nCount: 1\nWL-Count: 0\n".to_vec()
        }),
    ]
}

#[test]
fn bad_responses_match_python_or_fail_cleanly() {
    let spam = message("Bad answers.");
    for (name, answer) in bad_answers() {
        let server = FakeServer::start(move |request| Some(answer(request)));
        let home = Home::new(&[line(server.address)]);
        for command in ["check", "info", "ping"] {
            let (expected, actual) = compare(&home, &["-t", "2", command], &spam);
            if expected.stderr_text().contains("Traceback") {
                let stderr = actual.stderr_text();
                assert_eq!(
                    stderr.lines().count(),
                    1,
                    "{name}/{command}: one line: {stderr}"
                );
                assert!(
                    stderr.contains(&server.address.to_string()),
                    "{name}/{command}: the error names the server: {stderr}"
                );
            }
        }
        // With a good server beside it, Python loses only the bad server's
        // thread.
        let good = Pyzord::start();
        let home = Home::new(&[line(good.address), line(server.address)]);
        compare_masked(&home, &["-t", "2", "check"], &spam, sorted_lines);
    }
}

/// A check answer with our Thread and these counts.
fn check_answer(request: &str, count: &str) -> Vec<u8> {
    let thread = thread_of(request);
    format!("Code: 200\nDiag: OK\nPV: 2.1\nThread: {thread}\nCount: {count}\nWL-Count: 0\n")
        .into_bytes()
}

#[test]
fn answers_to_no_request_of_ours_are_ignored() {
    let spam = message("Answers to others.");
    // What Python prints for a server that does not answer is what we
    // print for one that sends only answers to other requests.
    let silent = FakeServer::silent();
    let home = Home::new(&[line(silent.address)]);
    for command in ["check", "info", "ping"] {
        let expected = python(&home.args(&["-t", "1", command]), &spam);
        for (name, answer) in answers_to_others() {
            let server = FakeServer::start(move |request| Some(answer(request)));
            let home = Home::new(&[line(server.address)]);
            let args = home.args(&["-t", "1", command]);
            let ours = ours(&args, &spam);
            let python = python(&args, &spam);
            let timed_out = |output: &crate::util::Output, port: u16| {
                (
                    output.stdout_text().replace(&port.to_string(), "PORT"),
                    output.exit(),
                )
            };
            assert_eq!(
                timed_out(&ours, server.address.port()),
                timed_out(&expected, silent.address.port()),
                "{name}/{command}: {}",
                ours.stderr_text()
            );
            // Python took the datagram as its answer.
            assert_ne!(
                timed_out(&python, server.address.port()),
                timed_out(&expected, silent.address.port()),
                "{name}/{command}"
            );
        }
    }
}

#[test]
fn a_spoofed_answer_before_the_real_one_does_not_make_the_verdict() {
    let spam = message("Spoofed answers.");
    // The real answer alone: what Python prints is what we must print.
    let honest = FakeServer::start(|request| Some(check_answer(request, "0")));
    let home = Home::new(&[line(honest.address)]);
    let (expected, _) = compare(&home, &["check"], &spam);
    let honest_port = honest.address.port().to_string();
    for spoofed_thread in ["1023", "0", "another"] {
        let spoofer = FakeServer::sending(move |request| {
            let real = check_answer(request, "0");
            let thread = match spoofed_thread {
                "another" => {
                    (thread_of(request).parse::<u32>().unwrap_or(2000) % 60000 + 1025).to_string()
                }
                thread => thread.to_owned(),
            };
            let spoofed = format!(
                "Code: 200\nDiag: OK\nPV: 2.1\nThread: {thread}\nCount: 999\nWL-Count: 0\n"
            );
            vec![spoofed.into_bytes(), real]
        });
        let home = Home::new(&[line(spoofer.address)]);
        let port = spoofer.address.port().to_string();
        let actual = ours(&home.args(&["check"]), &spam);
        assert_eq!(
            (actual.stdout_text().replace(&port, "PORT"), actual.exit()),
            (
                expected.stdout_text().replace(&honest_port, "PORT"),
                expected.exit()
            ),
            "Thread {spoofed_thread}: {}",
            actual.stderr_text()
        );
        // Python takes the first datagram: the spoofer's counts make its
        // verdict, or its error hides the real answer.
        let python = python(&home.args(&["check"]), &spam);
        let shown = python.stdout_text();
        match spoofed_thread {
            "another" => assert!(shown.contains("received unexpected thread id"), "{shown}"),
            _ => assert_eq!(
                (shown, python.exit()),
                (
                    format!("127.0.0.1:{port}\t(200, 'OK')\t999\t0\n"),
                    "0".to_owned()
                )
            ),
        }
    }
}

#[test]
fn a_count_that_is_no_number_is_shown_escaped_as_python_shows_it() {
    let spam = message("Escapes.");
    let server =
        FakeServer::start(|request| Some(check_answer(request, "\x1b]0;owned\x07\x1b[2J5")));
    let home = Home::new(&[line(server.address)]);
    for command in ["check", "info"] {
        let (expected, actual) = compare(&home, &[command], &spam);
        // ValueError: invalid literal for int() with base 10: '\x1b]0;...'
        let traceback = expected.stderr_text();
        let python_repr = traceback
            .lines()
            .find_map(|line| {
                line.strip_prefix("ValueError: invalid literal for int() with base 10: ")
            })
            .unwrap_or_else(|| panic!("{command}: Python's ValueError: {traceback}"));
        assert_eq!(python_repr, r"'\x1b]0;owned\x07\x1b[2J5'");
        let stderr = actual.stderr_text();
        assert!(stderr.contains(python_repr), "{command}: {stderr}");
        assert!(
            !stderr.trim_end().chars().any(char::is_control),
            "{command}: a control character on stderr: {stderr:?}"
        );
    }
}

#[test]
fn unreadable_config_and_servers_lines() {
    let spam = message("Broken setups.");
    for config in [
        "Timeout = 3\n",
        "[client]\nTimeout = 3\ntimeout = 4\n",
        "[client]\njust a line\n",
        "[client]\nTimeout = abc\n",
        "[client]\nStyle = 50%\n",
    ] {
        let home = Home::new(&["127.0.0.1:9".to_owned()]);
        home.write("config", config);
        let (_, actual) = compare(&home, &["digest"], &spam);
        let stderr = actual.stderr_text();
        assert_eq!(stderr.lines().count(), 1, "{config:?}: {stderr}");
    }
    let home = Home::new(&["# comment".to_owned(), "127.0.0.1:24441x".to_owned()]);
    let (_, actual) = compare(&home, &["digest"], &spam);
    let stderr = actual.stderr_text();
    assert!(
        stderr.contains("servers") && stderr.contains("line 2"),
        "{stderr}"
    );
    // Lines Python skips: the default server would be used; both exit the
    // same way for a local command.
    let home = Home::new(&["not a server".to_owned(), "[::1]".to_owned()]);
    compare(&home, &["digest"], &spam);
}

#[test]
fn ipv6_server_in_brackets() {
    // Python cannot read `[::1]:port`; we can. A fake server on ::1.
    let Ok(socket) = std::net::UdpSocket::bind("[::1]:0") else {
        panic!("this machine has no IPv6 loopback; the IPv6 test needs one");
    };
    let address = socket.local_addr().expect("address");
    drop(socket);
    let server = FakeServer::start_on(address, |request| {
        Some(
            format!(
                "Code: 200\nDiag: OK\nPV: 2.1\nThread: {}\n\n",
                thread_of(request)
            )
            .into_bytes(),
        )
    });
    let home = Home::new(&[format!("[::1]:{}", server.address.port())]);
    let homedir = home.path().to_str().expect("utf-8");
    let output = ours(&["--homedir", homedir, "ping"], b"");
    assert_eq!(
        (output.stdout_text(), output.exit()),
        (
            format!("[::1]:{}\t(200, 'OK')\n", server.address.port()),
            "0".to_owned()
        )
    );
}
