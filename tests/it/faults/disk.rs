//! Our pyzord on SQLite when the disk under its file fills up (a small
//! tmpfs the test fills and frees), when the filesystem turns read-only
//! (ext4 on a loop device taken read-only by an error, as
//! `errors=remount-ro` does, then unmounted, checked and mounted again),
//! and when the file is removed and a copy put back: reports get Code 500
//! while the fault lasts and 200 after, with no restart, the file passes
//! `PRAGMA integrity_check`, and every report acknowledged with 200 is in
//! it. Mounting needs root, as the whole suite does.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pyzor_milter::storage::{Durability, EngineName, OpenOptions};

use super::backend::{report_stream, stop_stream};
use super::{code_of, exchange};
use crate::server_util::{OurServer, open_homedir, temp_dir};

/// How soon a fault must show as Code 500 (a full disk first fills the
/// WAL's room) and how soon reports must be taken again after it ends.
const FAULT_BOUND: Duration = Duration::from_secs(20);

/// Runs a command that must succeed.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A filesystem mounted on a directory, lazily unmounted when dropped
/// (pyzord may still hold files there).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Reports one new digest from `socket`; returns the digest and its Code.
fn report_once(socket: &UdpSocket, server: SocketAddr, number: u64) -> (String, Option<u16>) {
    let digest = format!("{:040x}", 0xd15c_0000_0000_u64 + number);
    let thread = 1024 + number % 60_000;
    let request = format!("Op: report\nOp-Digest: {digest}\nThread: {thread}\nPV: 2.1\n\n");
    let (answer, _) = exchange(socket, server, request.as_bytes(), thread);
    (digest, answer.as_deref().and_then(code_of))
}

/// Reports new digests until one gets `code`, within [`FAULT_BOUND`];
/// returns the digests acknowledged meanwhile.
fn report_until(server: SocketAddr, code: u16, what: &str, next: &mut u64) -> Vec<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let start = Instant::now();
    let mut acknowledged = Vec::new();
    loop {
        *next += 1;
        let (digest, answer) = report_once(&socket, server, *next);
        if answer == Some(200) {
            acknowledged.push(digest);
        }
        if answer == Some(code) {
            eprintln!("{what}: Code {code} after {:?}", start.elapsed());
            return acknowledged;
        }
        assert!(
            start.elapsed() < FAULT_BOUND,
            "{what}: no Code {code} within {FAULT_BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the report stream, starts the fault, waits for Code 500, ends the
/// fault, waits for 200 again, and checks the answers; returns the
/// acknowledged digests.
fn fault(what: &str, server: SocketAddr, start: impl FnOnce(), end: impl FnOnce()) -> Vec<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let senders = report_stream(server, &stop);
    let mut next = 0;
    std::thread::sleep(Duration::from_secs(1));
    start();
    let mut acknowledged = report_until(server, 500, what, &mut next);
    std::thread::sleep(Duration::from_secs(1));
    end();
    acknowledged.extend(report_until(server, 200, what, &mut next));
    std::thread::sleep(Duration::from_secs(1));
    let sent = stop_stream(what, &stop, senders);
    let errors = sent.iter().filter(|sent| sent.code == Some(500)).count();
    let streamed = sent.iter().filter(|sent| sent.code == Some(200));
    acknowledged.extend(streamed.map(|sent| sent.digest.clone()));
    eprintln!(
        "{what}: {} reports streamed, {} acknowledged, {errors} error answers",
        sent.len(),
        acknowledged.len()
    );
    acknowledged
}

/// The file passes `PRAGMA integrity_check` and holds every digest.
fn assert_kept(path: &Path, acknowledged: &[String]) {
    let connection = rusqlite::Connection::open(path).expect("open the database");
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    let mut statement = connection
        .prepare("SELECT r_count FROM digests WHERE digest = ?1")
        .expect("prepare");
    let unique: HashSet<&String> = acknowledged.iter().collect();
    let lost = unique
        .iter()
        .filter(|digest| {
            let count: Option<i64> = statement
                .query_row([digest.as_str()], |row| row.get(0))
                .ok();
            count.unwrap_or(0) < 1
        })
        .count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged reports lost",
        unique.len()
    );
}

/// The loop devices the image is attached to, as `losetup -j` lists them.
fn attached(image: &str) -> String {
    let output = Command::new("losetup")
        .args(["-j", image])
        .output()
        .expect("run losetup");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut filler = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    while filler.write_all(&block).is_ok() {}
    let _ = filler.sync_all();
}

#[test]
fn a_full_disk_answers_500_and_reports_are_taken_again_once_freed() {
    let dir = temp_dir();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mount point");
    let disk = disk.display().to_string();
    // Room for the WAL, which grows to tens of MB under a stream of
    // reports before it starts over.
    run("mount", &["-t", "tmpfs", "-o", "size=256m", "tmpfs", &disk]);
    let _mount = Mount(PathBuf::from(&disk));
    let home = open_homedir();
    let database = Path::new(&disk).join("pyzord.sqlite");
    let ours = OurServer::start(
        EngineName::Sqlite,
        &database.display().to_string(),
        home.path(),
    );
    let filler = Path::new(&disk).join("filler");
    let acknowledged = fault(
        "full disk",
        ours.address,
        || fill(&filler),
        || std::fs::remove_file(&filler).expect("free the disk"),
    );
    drop(ours);
    assert_kept(&database, &acknowledged);
}

#[test]
fn a_filesystem_turned_read_only_answers_500_until_mounted_again() {
    let dir = temp_dir();
    let image = dir.path().join("ext4.img").display().to_string();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mount point");
    let disk = disk.display().to_string();
    run("truncate", &["-s", "256M", &image]);
    run("mkfs.ext4", &["-q", "-F", &image]);
    let options = "loop,errors=remount-ro";
    run("mount", &["-o", options, &image, &disk]);
    let _mount = Mount(PathBuf::from(&disk));
    let home = open_homedir();
    let database = Path::new(&disk).join("pyzord.sqlite");
    // FULL: an error takes the filesystem read-only before the page cache
    // reaches the disk, as a power cut would.
    let engine = OpenOptions {
        durability: Durability::Disk,
        ..OpenOptions::default()
    };
    let dsn = database.display().to_string();
    let ours = OurServer::start_with(EngineName::Sqlite, &dsn, home.path(), engine);
    let acknowledged = fault(
        "read-only filesystem",
        ours.address,
        || {
            let output = Command::new("findmnt")
                .args(["-no", "SOURCE", &disk])
                .output()
                .expect("run findmnt");
            let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let name = device.trim_start_matches("/dev/");
            std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "test")
                .expect("trigger an ext4 error");
        },
        || {
            // What an operator does: unmount, check, mount again. The
            // filesystem is let go once pyzord closed its files there
            // (its loop device is then detached); mounted before, it
            // would be the same one, still read-only.
            run("umount", &["-l", &disk]);
            let unmounted = Instant::now();
            while !attached(&image).is_empty() {
                assert!(
                    unmounted.elapsed() < FAULT_BOUND,
                    "pyzord holds the unmounted filesystem: {}",
                    attached(&image)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let checked = Command::new("e2fsck")
                .args(["-f", "-y", &image])
                .output()
                .expect("run e2fsck");
            assert!(
                matches!(checked.status.code(), Some(0 | 1)),
                "e2fsck: {checked:?}"
            );
            run("mount", &["-o", options, &image, &disk]);
        },
    );
    drop(ours);
    assert_kept(&database, &acknowledged);
}

#[test]
fn a_removed_file_answers_500_until_a_copy_is_put_back() {
    let dir = temp_dir();
    let home = open_homedir();
    let database = dir.path().join("pyzord.sqlite");
    let ours = OurServer::start(
        EngineName::Sqlite,
        &database.display().to_string(),
        home.path(),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut next = 0;
    let mut report = || {
        next += 1;
        report_once(&socket, ours.address, next)
    };
    let kept: Vec<String> = (0..20)
        .map(|_| {
            let (digest, code) = report();
            assert_eq!(code, Some(200));
            digest
        })
        .collect();
    let backup = dir.path().join("backup.sqlite");
    let copier = rusqlite::Connection::open(&database).expect("open");
    copier
        .execute("VACUUM INTO ?1", [backup.display().to_string()])
        .expect("back up");
    drop(copier);
    std::fs::remove_file(&database).expect("remove the database");
    // Each is committed after the removal: none may be acknowledged.
    let refused: Vec<(String, Option<u16>)> = (0..10).map(|_| report()).collect();
    let codes: Vec<Option<u16>> = refused.iter().map(|(_, code)| *code).collect();
    assert_eq!(codes, [Some(500); 10]);
    let landing = dir.path().join("landing.sqlite");
    std::fs::copy(&backup, &landing).expect("copy the backup");
    std::fs::rename(&landing, &database).expect("put the copy in place");
    let back = Instant::now();
    let mut taken = Vec::new();
    while taken.len() < 20 {
        let (digest, code) = report();
        if code == Some(200) {
            taken.push(digest);
        } else {
            assert!(taken.is_empty(), "Code {code:?} after serving again");
            assert!(back.elapsed() < FAULT_BOUND, "not serving again");
        }
    }
    drop(ours);
    assert_kept(&database, &[kept, taken].concat());
    let connection = rusqlite::Connection::open(&database).expect("open");
    for (digest, _) in refused {
        let count: Option<i64> = connection
            .query_row(
                "SELECT r_count FROM digests WHERE digest = ?1",
                [&digest],
                |row| row.get(0),
            )
            .ok();
        assert_eq!(count, None, "a refused report was counted");
    }
}
