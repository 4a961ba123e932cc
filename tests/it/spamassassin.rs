//! SpamAssassin's Pyzor plugin with `pyzor_path` pointing at a link named
//! `pyzor` to our binary, asking a local Python pyzord: PYZOR_CHECK for a
//! message reported 10 times, not for an unreported one.

use std::path::Path;
use std::process::Command;

use crate::client_util::{Home, Pyzord, line, pyzor_link};
use crate::util;

/// A site config directory for `spamassassin --siteconfigpath`: Debian's
/// `.pre` files, the Pyzor plugin loaded early, and our `pyzor`.
fn site_config(dir: &Path, pyzor: &Path, homedir: &Path) {
    let stock = Path::new("/etc/spamassassin");
    let entries = std::fs::read_dir(stock).unwrap_or_else(|error| {
        panic!(
            "cannot read /etc/spamassassin ({error}): run scripts/test, which installs spamassassin"
        )
    });
    for entry in entries {
        let path = entry.expect("readable directory").path();
        if path.extension().is_some_and(|ext| ext == "pre") {
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, dir.join(name)).expect("copy a .pre file");
        }
    }
    std::fs::write(
        dir.join("zz_pyzor.pre"),
        "loadplugin Mail::SpamAssassin::Plugin::Pyzor\n",
    )
    .expect("write the plugin .pre");
    std::fs::write(
        dir.join("local.cf"),
        format!(
            "use_pyzor 1\npyzor_path {}\npyzor_options --homedir {}\npyzor_timeout 10\n\
             use_razor2 0\nuse_dcc 0\nskip_rbl_checks 1\n",
            pyzor.display(),
            homedir.display()
        ),
    )
    .expect("write local.cf");
}

fn spamassassin(site: &Path, message: &[u8]) -> String {
    let mut command = Command::new("spamassassin");
    command.args(["-t", "--siteconfigpath"]).arg(site);
    let output = util::run(&mut command, message);
    assert!(
        output.status.success(),
        "spamassassin failed (run scripts/test, which installs it): {}",
        output.stderr_text()
    );
    output.stdout_text()
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: sender@example.com\nTo: rcpt@example.org\nSubject: {subject}\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <{subject}@example.com>\n\n\
         {body}\nA second line of text in the body of this message.\n\
         And a third line, so that the digest has enough to chew on.\n"
    )
    .into_bytes()
}

#[test]
fn spamassassin_sees_pyzor_check_through_our_pyzor() {
    let server = Pyzord::start();
    let home = Home::new(&[line(server.address)]);
    let dir = util::temp_dir();
    let pyzor = pyzor_link(dir.path());
    let site = dir.path().join("site");
    std::fs::create_dir(&site).expect("site dir");
    site_config(&site, &pyzor, home.path());

    let reported = message(
        "reported",
        "Cheap watches, cheap pills, all cheap, only today.",
    );
    let homedir = home.path().to_str().expect("utf-8");
    for _ in 0..10 {
        let mut command = Command::new(&pyzor);
        command.args(["--homedir", homedir, "report"]);
        let output = util::run(&mut command, &reported);
        assert!(output.status.success(), "report: {}", output.stderr_text());
    }
    let unreported = message(
        "unreported",
        "A personal note to a friend about the weekend.",
    );

    let report = spamassassin(&site, &reported);
    assert!(report.contains("PYZOR_CHECK"), "no PYZOR_CHECK:\n{report}");
    let report = spamassassin(&site, &unreported);
    assert!(
        !report.contains("PYZOR_CHECK"),
        "unexpected PYZOR_CHECK:\n{report}"
    );
}
