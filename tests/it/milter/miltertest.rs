//! OpenDKIM's miltertest (Lua scripts in milter-tests/) against the milter
//! and our pyzord in process; digests from Python pyzor.

use std::process::Command;

use pyzor_milter::protocol::Op;

use super::util::{message_file, start_milter, start_pyzord, tell};
use crate::util::{manifest_dir, temp_dir};

/// The message check.lua sends, as a file for Python pyzor.
fn lua_message(subject: &str, prefix: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.org>\r\nTo: rcpt@example.net\r\nSubject: {subject}\r\n\
         X-Pyzor: whitelisted; forged\r\n\r\n\
         {prefix}This is the body of the miltertest message for the milter.\r\n\
         It has a few lines of plain text that are long enough to count.\r\n\
         The digest of this text is what the Pyzor server is asked about.\r\n\
         Kind regards from the test suite and its friendly robots.\r\n"
    )
    .into_bytes()
}

#[test]
fn miltertest_check_lua() {
    let dir = temp_dir();
    let pyzord = start_pyzord(dir.path());
    let (_, clean) = message_file(dir.path(), "clean.eml", &lua_message("clean", ""));
    let (_, spam) = message_file(dir.path(), "spam.eml", &lua_message("spam", "Buy now! "));
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(tell(pyzord.address, Op::Report, &spam, 1));
    let milter = start_milter(&format!(
        "servers = [\"{}\"]\ntrusted_networks = []\naction = \"reject\"\n",
        pyzord.address
    ));
    let output = Command::new("miltertest")
        .arg("-D")
        .arg(format!("port={}", milter.address.port()))
        .arg("-D")
        .arg(format!("spam_digest={spam}"))
        .arg("-D")
        .arg(format!("clean_digest={clean}"))
        .arg("-D")
        .arg(format!("server={}", pyzord.address))
        .arg("-s")
        .arg(manifest_dir().join("milter-tests/check.lua"))
        .output()
        .expect("miltertest is installed (apt-get install miltertest; scripts/test does)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("ok"),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
