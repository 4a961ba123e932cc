//! The Debian package as an administrator gets it: built with cargo-deb
//! from this test run's binary, listed, extracted into a temporary root,
//! its systemd units checked by `systemd-analyze verify`, its man pages
//! rendered by `man -l` without a warning, and the binary run through the
//! extracted `pyzor` link against Python pyzor 1.1.2's `pyzor -V`. And the
//! sample milter configuration: it loads, and each of its keys is
//! documented in pyzor-milter-milter(8).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use pyzor_milter::milter::config as milter_config;
use pyzor_milter::server::config as server_config;

use crate::util::package::{debian_package, run_ok};
use crate::util::{Output, manifest_dir, our_binary, reference_pyzor, run, temp_dir};

/// The sample milter configuration, installed as a conffile.
const SAMPLE_CONFIG: &str = "contrib/pyzor-milter.toml";

/// `dpkg-deb -c`: the paths in the package (`./usr/bin/pyzor -> ...` for
/// links), without the directories.
fn listing(deb: &Path) -> BTreeSet<String> {
    let output = run_ok(Command::new("dpkg-deb").arg("-c").arg(deb), "");
    output
        .stdout_text()
        .lines()
        .filter(|line| !line.starts_with('d'))
        .filter_map(|line| line.split_once(" ./").map(|(_, path)| path.to_owned()))
        .collect()
}

#[test]
fn debian_package_installs_what_an_administrator_needs() {
    let work = temp_dir();
    let deb = debian_package();

    let files = listing(deb);
    let expected = [
        "usr/bin/pyzor-milter",
        "usr/bin/pyzor -> pyzor-milter",
        "usr/bin/pyzord -> pyzor-milter",
        "usr/lib/systemd/system/pyzor-milter.service",
        "usr/lib/systemd/system/pyzord.service",
        "etc/pyzor-milter/pyzor-milter.toml",
        "etc/pyzor-milter/pyzord/config",
        "etc/logrotate.d/pyzord",
        "usr/share/man/man8/pyzor-milter.8",
        "usr/share/man/man8/pyzor-milter-milter.8",
        "usr/share/man/man8/pyzor-milter-migrate.8",
        "usr/share/man/man8/pyzord.8",
        "usr/share/man/man1/pyzor.1",
        "usr/share/bash-completion/completions/pyzor-milter",
        "usr/share/bash-completion/completions/pyzor",
        "usr/share/bash-completion/completions/pyzord",
        "usr/share/zsh/vendor-completions/_pyzor-milter",
        "usr/share/zsh/vendor-completions/_pyzor",
        "usr/share/zsh/vendor-completions/_pyzord",
        "usr/share/fish/vendor_completions.d/pyzor-milter.fish",
        "usr/share/fish/vendor_completions.d/pyzor.fish",
        "usr/share/fish/vendor_completions.d/pyzord.fish",
        "usr/share/doc/pyzor-milter/examples/spamassassin-pyzor.cf",
        "usr/share/doc/pyzor-milter/examples/prometheus.yml",
        "usr/share/doc/pyzor-milter/examples/rspamd-external_services.conf",
    ];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|path| !files.contains(*path))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from the .deb: {missing:?}\nit holds: {files:#?}"
    );

    let conffiles = run_ok(
        Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"),
        "",
    )
    .stdout_text();
    let conffiles: BTreeSet<&str> = conffiles.lines().map(str::trim).collect();
    assert_eq!(
        conffiles,
        BTreeSet::from([
            "/etc/logrotate.d/pyzord",
            "/etc/pyzor-milter/pyzor-milter.toml",
            "/etc/pyzor-milter/pyzord/config",
        ])
    );
    let postinst = run_ok(
        Command::new("dpkg-deb").arg("-I").arg(deb).arg("postinst"),
        "",
    )
    .stdout_text();
    assert!(
        postinst.contains("adduser --system") && postinst.contains("pyzor-milter.service"),
        "postinst creates the users and enables the milter:\n{postinst}"
    );

    let root = work.path().join("root");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root), "");
    verify_units(&root, work.path());
    render_man_pages(&root);
    for name in ["pyzor-milter", "pyzor", "pyzord"] {
        let script = root
            .join("usr/share/bash-completion/completions")
            .join(name);
        run_ok(Command::new("bash").arg("-n").arg(&script), "bash -n");
    }
    pyzor_link_prints_pythons_version(&root);
    pyzord_config_fits_its_unit(&root);

    // The packaged configuration loads in the packaged binary.
    let check = run_ok(
        Command::new(root.join("usr/bin/pyzor-milter"))
            .args(["milter", "--check-config", "--config"])
            .arg(root.join("etc/pyzor-milter/pyzor-milter.toml")),
        "",
    );
    assert!(
        check.stdout_text().ends_with(": OK\n"),
        "{}",
        check.stdout_text()
    );
}

/// `systemd-analyze verify` on a copy of each unit whose executables point
/// into the extracted tree (verify insists that they exist), with the
/// extracted man pages on MANPATH so that `Documentation=man:` is checked.
fn verify_units(root: &Path, work: &Path) {
    let units_dir = work.join("units");
    std::fs::create_dir_all(&units_dir).expect("the units directory can be made");
    for unit in ["pyzor-milter.service", "pyzord.service"] {
        let text = std::fs::read_to_string(root.join("usr/lib/systemd/system").join(unit))
            .expect("the unit is in the package");
        let bin = root.join("usr/bin");
        let rewritten = text.replace(
            "ExecStart=/usr/bin/",
            &format!("ExecStart={}/", bin.display()),
        );
        assert_ne!(rewritten, text, "{unit} runs a binary from /usr/bin");
        let copy = units_dir.join(unit);
        std::fs::write(&copy, rewritten).expect("the unit copy can be written");
        let output = run(
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(&copy)
                .env("MANPATH", root.join("usr/share/man"))
                .env("SYSTEMD_LOG_LEVEL", "notice"),
            b"",
        );
        assert!(
            output.status.success() && output.stderr_text().is_empty(),
            "systemd-analyze verify {unit} exited {}: {}{}\n(apt-get install systemd for systemd-analyze)",
            output.exit(),
            output.stdout_text(),
            output.stderr_text()
        );
    }
}

/// The shipped pyzord homedir loads, and every file it names lies in a
/// directory the unit lets pyzord write (the rest is read-only), which
/// logrotate rotates for the logs.
fn pyzord_config_fits_its_unit(root: &Path) {
    let homedir = root.join("etc/pyzor-milter/pyzord");
    let config = server_config::load(&homedir, &HashMap::new())
        .unwrap_or_else(|error| panic!("the packaged pyzord config does not load: {error}"));
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/pyzord.service"))
        .expect("the unit is in the package");
    assert!(
        unit.contains("ExecStart=/usr/bin/pyzord --homedir /etc/pyzor-milter/pyzord\n"),
        "{unit}"
    );
    let writable = |path: &Path, setting: &str, base: &str| {
        let name = unit
            .lines()
            .find_map(|line| line.strip_prefix(setting))
            .unwrap_or_else(|| panic!("pyzord.service has no {setting}"));
        assert_eq!(
            path.parent(),
            Some(Path::new(base).join(name).as_path()),
            "{} is not in the unit's {setting}",
            path.display()
        );
    };
    writable(Path::new(&config.dsn), "StateDirectory=", "/var/lib");
    let log_file = config.log_file.expect("the config names a log file");
    let usage_log_file = config
        .usage_log_file
        .expect("the config names a usage log file");
    writable(&log_file, "LogsDirectory=", "/var/log");
    writable(&usage_log_file, "LogsDirectory=", "/var/log");
    writable(&config.pid_file, "RuntimeDirectory=", "/run");
    let logrotate = std::fs::read_to_string(root.join("etc/logrotate.d/pyzord"))
        .expect("the logrotate file is in the package");
    let pattern = format!(
        "{}/*.log {{",
        log_file.parent().expect("a directory").display()
    );
    assert!(logrotate.contains(&pattern), "{pattern} in {logrotate}");
}

/// Each page through `man -l` with groff's warnings on: no line on stderr.
fn render_man_pages(root: &Path) {
    for page in [
        "man8/pyzor-milter.8",
        "man8/pyzor-milter-milter.8",
        "man8/pyzor-milter-migrate.8",
        "man8/pyzord.8",
        "man1/pyzor.1",
    ] {
        let text = man_text(&root.join("usr/share/man").join(page));
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}:\n{text}"
        );
    }
}

/// A page rendered as plain text by `man -l`; fails on any warning.
fn man_text(page: &Path) -> String {
    let output = run(
        Command::new("man")
            .arg("--warnings")
            .arg("-l")
            .arg(page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "")
            .env_remove("MANOPT"),
        b"",
    );
    assert!(
        output.status.success() && output.stderr_text().is_empty(),
        "man -l {} exited {}: {}\n(apt-get install man-db for man)",
        page.display(),
        output.exit(),
        output.stderr_text()
    );
    output.stdout_text()
}

/// `pyzor -V` through the extracted link prints what Python's prints,
/// each naming itself by the path it was started by.
fn pyzor_link_prints_pythons_version(root: &Path) {
    let link = root.join("usr/bin/pyzor");
    let ours = run(Command::new(&link).arg("-V"), b"");
    let python_path = reference_pyzor();
    let python = run(Command::new(&python_path).arg("-V"), b"");
    let strip = |output: &Output, program: &Path| {
        (
            output.exit(),
            output
                .stdout_text()
                .replace(&program.display().to_string(), "PROGRAM"),
            output.stderr_text(),
        )
    };
    assert_eq!(strip(&ours, &link), strip(&python, &python_path));
}

/// The keys a TOML sample sets or shows commented out (`# key = value`).
fn sample_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            let (key, _) = line.split_once(" = ")?;
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
                .then(|| key.to_owned())
        })
        .collect()
}

#[test]
fn sample_milter_config_loads_and_each_key_is_in_the_man_page() {
    let path = manifest_dir().join(SAMPLE_CONFIG);
    if let Err(error) = milter_config::load(&path) {
        panic!("{SAMPLE_CONFIG} does not load: {error}");
    }
    let check = run_ok(
        Command::new(our_binary())
            .args(["milter", "--check-config", "--config"])
            .arg(&path),
        "",
    );
    assert_eq!(check.stdout_text(), format!("{}: OK\n", path.display()));

    let text = std::fs::read_to_string(&path).expect("the sample is readable");
    let keys = sample_keys(&text);
    assert!(keys.len() > 10 && keys.contains("socket"), "keys: {keys:?}");
    let work = temp_dir();
    run_ok(
        Command::new(our_binary()).arg("generate").arg(work.path()),
        "pyzor-milter generate failed",
    );
    let page = work.path().join("man/pyzor-milter-milter.8");
    man_text(&page);
    let roff = std::fs::read_to_string(&page).expect("the page is readable");
    // The section's tagged paragraphs (`.TP`, then the term in bold) up to
    // the next heading: one per key.
    let mut documented = BTreeSet::new();
    let mut lines = roff
        .lines()
        .skip_while(|line| *line != ".SH CONFIGURATION")
        .skip(1)
        .take_while(|line| !line.starts_with(".SH"));
    while let Some(line) = lines.next() {
        if line == ".TP" {
            let term = lines.next().expect("a term follows .TP");
            documented.insert(term.replace("\\fB", "").replace("\\fR", ""));
        }
    }
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|key| !documented.contains(*key))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys of {SAMPLE_CONFIG} missing from pyzor-milter-milter(8): {undocumented:?}"
    );
    // And the page documents no key the loader does not know: a value of
    // the wrong type is refused for its type, an unknown key for its name.
    for key in &documented {
        let error = milter_config::parse(&format!("{key} = {{}}\n"), Path::new("t.toml"))
            .expect_err("a table is no valid value")
            .to_string();
        assert!(
            !error.contains("unknown field"),
            "pyzor-milter-milter(8) documents \"{key}\", which the loader refuses: {error}"
        );
    }
}
