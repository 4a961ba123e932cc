//! The Debian package of this test run's binary, built once per run with
//! cargo-deb and shared by the tests that need it (the package's contents,
//! and the package installed under a real systemd).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{Output, manifest_dir, our_binary, run};

/// The cargo-deb scripts/test installs; any 3.x builds the same package.
const CARGO_DEB_HINT: &str =
    "cargo-deb is needed: cargo install cargo-deb --version 3.8.0 --locked (scripts/test does)";

/// Runs a command that must succeed; its output otherwise fails the test,
/// with `hint` saying what may be missing.
pub fn run_ok(command: &mut Command, hint: &str) -> Output {
    let output = run(command, b"");
    assert!(
        output.status.success(),
        "{command:?} exited {}: {}{}\n{hint}",
        output.exit(),
        output.stdout_text(),
        output.stderr_text()
    );
    output
}

/// The .deb, built on first use into cargo's temporary directory for
/// integration tests (under target/), where it stays until the next run.
pub fn debian_package() -> &'static Path {
    static PACKAGE: OnceLock<PathBuf> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-package");
        if work.exists() {
            std::fs::remove_dir_all(&work).expect("the last run's package can be removed");
        }
        build_deb(&work)
    })
}

/// Builds the .deb with cargo-deb from a copy of the binary under test, so
/// the package holds what this run tested whichever profile built it.
/// Returns the .deb's path.
fn build_deb(work: &Path) -> PathBuf {
    let target = work.join("target");
    let release = target.join("release");
    std::fs::create_dir_all(&release).expect("the target directory can be made");
    std::fs::copy(our_binary(), release.join("pyzor-milter")).expect("the binary can be copied");
    run_ok(
        Command::new(our_binary())
            .arg("generate")
            .arg(release.join("generated")),
        "pyzor-milter generate failed",
    );
    let deb = work.join("pyzor-milter.deb");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_ok(
        Command::new(cargo)
            .current_dir(manifest_dir())
            .env("CARGO_TARGET_DIR", &target)
            .args(["deb", "--no-build", "--fast", "--output"])
            .arg(&deb),
        CARGO_DEB_HINT,
    );
    deb
}
