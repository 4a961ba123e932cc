//! The Debian package under a real systemd, as an administrator installs
//! it: a Debian 12 root made by debootstrap (cached as a tarball outside
//! the clone), booted with systemd as PID 1 in private namespaces and a
//! cgroup of its own, the .deb installed with dpkg, Debian's chrooted
//! Postfix handing mail to the milter over a unix socket under
//! /var/spool/postfix, the packaged pyzord as the milter's server. Then
//! reload, a SIGKILLed milter restarted, and purge.
//!
//! Never on the machine's own root: systemd's tmpfiles step would empty
//! the machine's /tmp. The root is extracted onto a tmpfs inside the mount
//! namespace, so it goes, with every mount, when the test kills systemd
//! (PID 1 there); the cgroup made for it is removed then too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::milter::util::{message_file, spam};
use crate::util::package::{debian_package, run_ok};
use crate::util::{Output, run, temp_dir};

/// What debootstrap adds to Debian's minimal base: systemd as init, D-Bus
/// for systemctl, Postfix and swaks for mail, iproute2 to bring up
/// loopback.
const ROOT_PACKAGES: &str = "systemd,systemd-sysv,dbus,postfix,swaks,iproute2";
const ROOT_SUITE: &str = "bookworm";
/// Outside the clone, so that a fresh clone on this machine reuses it.
const ROOT_CACHE_DIR: &str = "/var/cache/pyzor-milter-tests";
/// Where apt's sources name no bookworm mirror.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian/";
const DEBOOTSTRAP_HINT: &str =
    "debootstrap is needed: apt-get install debootstrap (scripts/test does)";

/// The packaged pyzord's address (contrib/pyzord.config: every address,
/// port 24441), which the milter and the `pyzor` client inside are told.
const PYZORD: &str = "127.0.0.1:24441";
/// The unit's comment and the README put the socket here, where Debian's
/// chrooted smtpd sees it as `pyzor-milter/milter.sock`.
const MILTER_SOCKET: &str = "/var/spool/postfix/pyzor-milter/milter.sock";
const MILTER_CONFIG: &str = "/etc/pyzor-milter/pyzor-milter.toml";
/// A local user whose mailbox (/var/mail/recipient) receives the tests'
/// messages.
const RECIPIENT: &str = "recipient";

/// Boots the machine: `$1` an empty directory for its root, `$2` the
/// cgroup made for it, `$3` the file standing in for /dev/console, `$4` the
/// root tarball. The shell moves into the cgroup, so that a cgroup
/// namespace shows it to systemd as the root: the units' cgroups stay
/// apart from the machine's, where a real systemd may run units of the
/// same names. The root is a tmpfs mounted inside the mount namespace, so
/// that it goes, mounts and all, with the namespace's last process.
const BOOT_SCRIPT: &str = r#"
set -e
echo $$ > "$2/cgroup.procs"
exec unshare --cgroup --fork --pid --mount --uts --ipc --net --propagation private sh -c '
set -e
root=$1
mount -t tmpfs -o mode=0755 root "$root"
tar --numeric-owner -I zstd -C "$root" -xpf "$3"
# No getty: the terminals of the machine running the test stay its own.
ln -s /dev/null "$root/etc/systemd/system/getty.target"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
mount --rbind /dev "$root/dev"
mount --bind "$2" "$root/dev/console"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
chroot "$root" ip link set lo up
exec chroot "$root" /lib/systemd/systemd --system
' sh "$1" "$3" "$4"
"#;

/// The cached root tarball, made by debootstrap when missing.
fn root_tarball() -> PathBuf {
    let cache = Path::new(ROOT_CACHE_DIR);
    let tarball = cache.join(format!(
        "{ROOT_SUITE}-{}.tar.zst",
        ROOT_PACKAGES.replace(',', "-")
    ));
    if tarball.exists() {
        return tarball;
    }
    std::fs::create_dir_all(cache).expect("the root cache directory can be made");
    let build = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(cache)
        .expect("a build directory can be made");
    let root = build.path().join("root");
    let mut debootstrap = Command::new("unshare");
    // Its own mount namespace: the mounts it makes in the root go with it,
    // even when it fails half-way.
    debootstrap
        .args(["--mount", "--propagation", "private", "debootstrap"])
        .args(["--variant=minbase", &format!("--include={ROOT_PACKAGES}")])
        .arg(ROOT_SUITE)
        .arg(&root)
        .arg(debian_mirror());
    if let Some(proxy) = apt_config("Acquire::http::Proxy") {
        debootstrap.env("http_proxy", proxy);
    }
    eprintln!("building {} with debootstrap", tarball.display());
    run_ok(&mut debootstrap, DEBOOTSTRAP_HINT);
    // Written beside its final name and renamed, so a run that stops
    // half-way leaves no tarball that looks whole.
    let partial = build.path().join("root.tar.zst");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "-I", "zstd -T0", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&partial)
            .arg("."),
        "tar and zstd are needed",
    );
    std::fs::rename(&partial, &tarball).expect("the tarball can be renamed into place");
    tarball
}

/// The mirror apt uses for bookworm, which is known to be reachable here.
fn debian_mirror() -> String {
    let output = run(
        Command::new("apt-get").args([
            "indextargets",
            "--format",
            "$(REPO_URI) $(RELEASE)",
            "Created-By: Packages",
        ]),
        b"",
    );
    output
        .stdout_text()
        .lines()
        .find_map(|line| {
            let (uri, release) = line.split_once(' ')?;
            (release == ROOT_SUITE).then(|| uri.to_owned())
        })
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
}

/// One of apt's settings, if set.
fn apt_config(name: &str) -> Option<String> {
    let output = run(
        Command::new("apt-config").args(["shell", "VALUE", name]),
        b"",
    );
    let text = output.stdout_text();
    let value = text.trim().strip_prefix("VALUE='")?.strip_suffix('\'')?;
    (!value.is_empty()).then(|| value.to_owned())
}

/// The cgroup v2 hierarchy: /sys/fs/cgroup itself, or its `unified`
/// mount on a machine with the v1 controllers.
fn cgroup2_root() -> PathBuf {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("cgroup.controllers").exists())
        .expect("a cgroup v2 hierarchy is mounted")
}

/// A booted Debian root, stopped and removed when dropped.
struct Machine {
    dir: tempfile::TempDir,
    cgroup: PathBuf,
    boot: Child,
    /// systemd, PID 1 inside, as the machine sees it.
    pid: u32,
}

impl Machine {
    fn boot(tarball: &Path) -> Machine {
        let dir = temp_dir();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("the root directory can be made");
        let console = dir.path().join("console.log");
        std::fs::write(&console, "").expect("the console file can be made");
        let cgroup = cgroup2_root().join(dir.path().file_name().expect("a name"));
        std::fs::create_dir(&cgroup).expect("a cgroup can be made");
        let log = std::fs::File::create(dir.path().join("boot.log")).expect("the boot log");
        let boot = Command::new("sh")
            .args(["-c", BOOT_SCRIPT, "sh"])
            .arg(&root)
            .arg(&cgroup)
            .arg(&console)
            .arg(tarball)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            // What systemd reads to know it runs in a container: no
            // consoles from the kernel's command line to wait for.
            .env("container", "pyzor-milter-test")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the boot log"))
            .stderr(log)
            .spawn()
            .expect("sh starts");
        let mut machine = Machine {
            dir,
            cgroup,
            pid: 0,
            boot,
        };
        machine.pid = machine.wait_for_systemd();
        // systemctl needs the manager's socket, which comes a moment
        // after the process.
        machine.sh_until("test -S /run/systemd/private", Duration::from_secs(30));
        let state = machine.sh("timeout 90 systemctl is-system-running --wait");
        assert!(
            matches!(state.stdout_text().trim(), "running" | "degraded"),
            "systemd did not come up: {}{}\n{}\n{}",
            state.stdout_text(),
            state.stderr_text(),
            machine.sh("systemctl --no-pager list-jobs").stdout_text(),
            machine.boot_log()
        );
        machine
    }

    /// The PID of systemd, once unshare's child has become it.
    fn wait_for_systemd(&mut self) -> u32 {
        let unshare = self.boot.id();
        let started = Instant::now();
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return pid.parse().expect("a PID");
                }
            }
            let exited = self
                .boot
                .try_wait()
                .expect("the boot shell can be waited for");
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(60),
                "systemd did not start ({exited:?}): {}",
                self.boot_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn boot_log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("boot.log"), read("console.log"))
    }

    /// A path inside the machine, as seen from outside (through systemd's
    /// root, in its mount namespace).
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(inside.trim_start_matches('/'))
    }

    /// Runs a shell script inside, as root, with a clean environment.
    fn sh(&self, script: &str) -> Output {
        run(
            Command::new("nsenter")
                .arg("-t")
                .arg(self.pid.to_string())
                .args(["-m", "-p", "-u", "-i", "-n", "-r", "-w", "--"])
                .args(["timeout", "120", "sh", "-c", script])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("HOME", "/root")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .env("SYSTEMD_PAGER", ""),
            b"",
        )
    }

    /// Runs a script that must succeed; returns its standard output.
    fn sh_ok(&self, script: &str) -> String {
        let output = self.sh(script);
        assert!(
            output.status.success(),
            "{script}\nexited {}: {}{}\n{}",
            output.exit(),
            output.stdout_text(),
            output.stderr_text(),
            self.journal()
        );
        output.stdout_text()
    }

    /// The last lines of the journal, for failure messages.
    fn journal(&self) -> String {
        let output = self.sh("journalctl --no-pager -n 60 -u pyzor-milter -u pyzord -u postfix@-");
        format!("journal:\n{}{}", output.stdout_text(), output.stderr_text())
    }

    /// Polls `script` until it succeeds, for at most `wait`; returns its
    /// standard output.
    fn sh_until(&self, script: &str, wait: Duration) -> String {
        let started = Instant::now();
        loop {
            let output = self.sh(script);
            if output.status.success() {
                return output.stdout_text();
            }
            assert!(
                started.elapsed() < wait,
                "{script}\nstill fails after {wait:?}: {}{}\n{}",
                output.stdout_text(),
                output.stderr_text(),
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A unit's main PID (0 when it has none).
    fn main_pid(&self, unit: &str) -> u32 {
        self.sh_ok(&format!("systemctl show --property MainPID --value {unit}"))
            .trim()
            .parse()
            .expect("a PID")
    }

    /// Edits a file inside: each `(from, to)` replaces text the file has.
    fn edit(&self, inside: &str, replacements: &[(&str, &str)]) {
        let path = self.path(inside);
        let mut text = std::fs::read_to_string(&path).expect("the file is readable");
        for (from, to) in replacements {
            assert!(text.contains(from), "{inside} has no {from:?}:\n{text}");
            text = text.replace(from, to);
        }
        std::fs::write(&path, text).expect("the file is writable");
    }

    /// swaks inside, to Postfix on 127.0.0.1:25; returns its transcript.
    fn swaks(&self, message: &str) -> String {
        self.sh(&format!(
            "swaks --server 127.0.0.1:25 --helo client.example.org --from sender@example.org \
             --to {RECIPIENT}@localhost --timeout 60 --data @{message}"
        ))
        .stdout_text()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGKILL to PID 1 ends its namespace, every process in it and so
        // its mounts; cgroup.kill catches whatever had not died yet. The
        // PID is systemd's only while its parent, not yet waited for, is
        // the boot process.
        if self.pid != 0 && parent_pid(self.pid) == Some(self.boot.id()) {
            // SAFETY: kill(2) with a PID and a signal number.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let _ = self.boot.kill();
        let _ = self.boot.wait();
        remove_cgroup(&self.cgroup);
    }
}

/// A process's parent, from /proc/PID/stat (its fourth field, after the
/// command name in parentheses).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Removes a cgroup and those systemd made under it, deepest first, as
/// soon as the kernel has let their processes go.
fn remove_cgroup(cgroup: &Path) {
    let children: Vec<PathBuf> = std::fs::read_dir(cgroup)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.is_dir())
                .collect()
        })
        .unwrap_or_default();
    for child in children {
        remove_cgroup(&child);
    }
    let started = Instant::now();
    while std::fs::remove_dir(cgroup).is_err() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn package_under_systemd_serves_postfix_reloads_restarts_and_purges() {
    let started = Instant::now();
    // Where the time went, shown with a failure.
    let done = |step: &str| eprintln!("{:>6.1?} {step}", started.elapsed());
    let tarball = root_tarball();
    done("root tarball");
    let deb = debian_package();
    done(".deb");
    let work = temp_dir();
    let (message, digest) = message_file(work.path(), "spam.eml", &spam("systemd"));
    let machine = Machine::boot(&tarball);
    done("booted");
    std::fs::copy(deb, machine.path("/root/pyzor-milter.deb")).expect("the .deb can be copied");
    std::fs::copy(&message, machine.path("/root/spam.eml")).expect("the message can be copied");
    machine.sh_ok("dpkg -i /root/pyzor-milter.deb");
    machine.sh_ok("systemctl is-active pyzor-milter");
    done("installed, milter active");
    pyzord_answers_and_keeps_its_database(&machine);
    done("pyzord");
    postfix_delivers_with_the_header(&machine, &digest);
    done("delivered through Postfix");
    reload_takes_effect(&machine);
    done("reloaded");
    killed_milter_is_restarted(&machine);
    done("restarted after SIGKILL");
    purge_removes_users_and_data(&machine);
    done("purged");
}

/// `systemctl enable --now pyzord`: it answers `pyzor ping`, takes a
/// report of the test message (so that the milter finds it listed) and
/// keeps its database under /var/lib/pyzord; `systemctl reload pyzord`
/// applies a new pyzord.access.
fn pyzord_answers_and_keeps_its_database(machine: &Machine) {
    machine.sh_ok("systemctl enable --now pyzord");
    std::fs::create_dir_all(machine.path("/root/.pyzor")).expect("the client's homedir");
    std::fs::write(machine.path("/root/.pyzor/servers"), format!("{PYZORD}\n"))
        .expect("the client's servers file");
    let ping = machine.sh_until("pyzor ping", Duration::from_secs(30));
    assert_eq!(ping, format!("{PYZORD}\t(200, 'OK')\n"));
    let report = machine.sh_ok("pyzor report < /root/spam.eml");
    assert_eq!(report, format!("{PYZORD}\t(200, 'OK')\n"));
    let check = machine.sh_ok("pyzor check < /root/spam.eml");
    assert_eq!(check, format!("{PYZORD}\t(200, 'OK')\t1\t0\n"));
    let owner = machine.sh_ok("stat -c '%U:%G' /var/lib/pyzord/pyzord.sqlite");
    assert_eq!(owner, "pyzord:pyzord\n");

    // `systemctl reload pyzord` rereads pyzord.access, in the same
    // process: anonymous reports are refused from then on.
    let before = machine.main_pid("pyzord");
    std::fs::write(
        machine.path("/etc/pyzor-milter/pyzord/pyzord.access"),
        "check ping pong info : anonymous : allow\n",
    )
    .expect("pyzord.access can be written");
    machine.sh_ok("systemctl reload pyzord");
    assert_eq!(
        machine.main_pid("pyzord"),
        before,
        "reload restarted pyzord"
    );
    machine.sh_until(
        &format!("pyzor report < /root/spam.eml | grep -q '^{PYZORD}\t(403, '"),
        Duration::from_secs(20),
    );
}

/// The milter on the unix socket the README describes, asking the local
/// pyzord and checking loopback's mail too; Debian's Postfix, chroot and
/// all, hands it each message, which lands in the mailbox with the header.
fn postfix_delivers_with_the_header(machine: &Machine, digest: &str) {
    machine.edit(
        MILTER_CONFIG,
        &[
            (
                "socket = \"inet:127.0.0.1:24440\"",
                &format!("socket = \"unix:{MILTER_SOCKET}\""),
            ),
            (
                "servers = [\"public.pyzor.org:24441\"]",
                &format!("servers = [\"{PYZORD}\"]"),
            ),
            (
                "trusted_networks = [\"127.0.0.0/8\", \"::1/128\"]",
                "trusted_networks = []",
            ),
        ],
    );
    machine.sh_ok(
        "install -d -o pyzor-milter -g postfix -m 0750 /var/spool/postfix/pyzor-milter \
         && adduser --quiet postfix pyzor-milter \
         && systemctl restart pyzor-milter",
    );
    machine.sh_until(&format!("test -S {MILTER_SOCKET}"), Duration::from_secs(20));
    machine.sh_ok(&format!(
        "postconf -e myhostname=mail.example.org inet_protocols=ipv4 \
         smtpd_milters=unix:pyzor-milter/milter.sock milter_default_action=tempfail \
         && useradd --create-home {RECIPIENT} \
         && systemctl restart postfix"
    ));
    let transcript = machine.swaks("/root/spam.eml");
    assert!(
        transcript.contains("<-  250 2.0.0 Ok: queued"),
        "{transcript}\n{}",
        machine.journal()
    );
    let mailbox = machine.sh_until(
        &format!("grep -q '^X-Pyzor:' /var/mail/{RECIPIENT} && cat /var/mail/{RECIPIENT}"),
        Duration::from_secs(30),
    );
    let expected = format!("X-Pyzor: listed; digest={digest}; {PYZORD}=1/0");
    assert!(
        mailbox.lines().any(|line| line == expected),
        "expected {expected:?} in:\n{mailbox}"
    );
}

/// `systemctl reload` succeeds, keeps the process and applies the new
/// configuration: listed mail is now rejected.
fn reload_takes_effect(machine: &Machine) {
    let before = machine.main_pid("pyzor-milter");
    machine.edit(
        MILTER_CONFIG,
        &[("action = \"tag\"", "action = \"reject\"")],
    );
    machine.sh_ok("systemctl reload pyzor-milter");
    assert_eq!(
        machine.main_pid("pyzor-milter"),
        before,
        "reload restarted it"
    );
    // The reload is a signal: the next message may still see the old
    // configuration, a later one must not.
    let started = Instant::now();
    loop {
        let transcript = machine.swaks("/root/spam.eml");
        if transcript.contains("<** 550 5.7.1 Message rejected as spam by Pyzor") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still not rejected after reload:\n{transcript}\n{}",
            machine.journal()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `kill -9` of the main PID: systemd starts a new one within seconds,
/// which serves with the configuration on disk.
fn killed_milter_is_restarted(machine: &Machine) {
    let before = machine.main_pid("pyzor-milter");
    assert_ne!(before, 0);
    machine.sh_ok(&format!("kill -9 {before}"));
    machine.sh_until(
        &format!(
            "systemctl is-active pyzor-milter && pid=$(systemctl show -P MainPID pyzor-milter) \
             && [ \"$pid\" != 0 ] && [ \"$pid\" != {before} ] && test -S {MILTER_SOCKET}"
        ),
        Duration::from_secs(30),
    );
    let transcript = machine.swaks("/root/spam.eml");
    assert!(
        transcript.contains("<** 550 5.7.1 Message rejected as spam by Pyzor"),
        "{transcript}\n{}",
        machine.journal()
    );
}

/// `apt-get purge`: the two users and groups, pyzord's database and logs
/// and the conffiles are gone, and so are the services. (The pyzord.access
/// written above is the administrator's, which dpkg leaves.)
fn purge_removes_users_and_data(machine: &Machine) {
    machine.sh_ok("apt-get purge -y -q pyzor-milter");
    let left = machine.sh(&format!(
        "for name in pyzor-milter pyzord; do getent passwd $name; getent group $name; done; \
         ls -d /var/lib/pyzord /var/log/pyzord {MILTER_CONFIG} /etc/pyzor-milter/pyzord/config \
         2>/dev/null; systemctl is-active pyzor-milter pyzord"
    ));
    assert_eq!(left.stdout_text(), "inactive\ninactive\n");
}
