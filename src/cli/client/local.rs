//! The commands that stay on this machine: digest, predigest, genkey and
//! the local whitelist, as Python pyzor 1.1.2 runs them.

use std::collections::HashSet;
use std::io::{self, BufRead as _, BufWriter, Read as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, bail};
use sha1::{Digest as _, Sha1};

use pyzor_milter::python as py;
use pyzor_milter::{digest, mbox};

use super::{Session, read_stdin};

/// The local whitelist in file order, without repeats (Python keeps a set
/// and writes it in hash order; any order reads back the same).
pub struct LocalWhitelist {
    digests: Vec<String>,
    seen: HashSet<String>,
}

impl LocalWhitelist {
    /// `pyzor.config.load_local_whitelist`: each line without its comment
    /// (from a `#` that is not the first character and not after a
    /// backslash), stripped, if not empty.
    pub fn parse(text: &str) -> LocalWhitelist {
        let mut list = LocalWhitelist {
            digests: Vec::new(),
            seen: HashSet::new(),
        };
        for line in py::file_lines(text) {
            let mut cut = line.len();
            let mut previous = None;
            for (index, c) in line.char_indices() {
                if c == '#' && previous.is_some_and(|p| p != '\\') {
                    cut = index;
                    break;
                }
                previous = Some(c);
            }
            let entry = py::strip(&line[..cut]);
            if !entry.is_empty() {
                list.insert(entry.to_owned());
            }
        }
        list
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.seen.contains(digest)
    }

    fn insert(&mut self, digest: String) {
        if self.seen.insert(digest.clone()) {
            self.digests.push(digest);
        }
    }

    fn remove(&mut self, digest: &str) {
        if self.seen.remove(digest) {
            self.digests.retain(|d| d != digest);
        }
    }

    /// Python writes `"\n".join(whitelist)`: no final newline.
    fn to_text(&self) -> String {
        self.digests.join("\n")
    }
}

impl Session {
    fn local_whitelist_path(&self) -> anyhow::Result<PathBuf> {
        Ok(PathBuf::from(self.setting("LocalWhitelist")?))
    }

    pub(super) fn load_local_whitelist(&self) -> anyhow::Result<LocalWhitelist> {
        let path = self.local_whitelist_path()?;
        let text = super::read_legacy_file(&path, "local whitelist")?.unwrap_or_default();
        Ok(LocalWhitelist::parse(&text))
    }

    /// `local_whitelist` (add) and `local_unwhitelist` (remove).
    pub(super) fn local_whitelist(&mut self, add: bool) -> anyhow::Result<bool> {
        let path = self.local_whitelist_path()?;
        let mut list = self.load_local_whitelist()?;
        for digest in self.input_digests()? {
            if add {
                if list.contains(&digest) {
                    tracing::error!("Digest {digest} already whitelisted locally");
                }
                list.insert(digest);
            } else if list.contains(&digest) {
                list.remove(&digest);
            } else {
                tracing::error!("Digest {digest} is not whitelisted.");
            }
        }
        std::fs::write(&path, list.to_text())
            .with_context(|| format!("cannot write local whitelist \"{}\"", path.display()))?;
        Ok(true)
    }

    /// `pyzor digest`: one digest per message of the input, printed as
    /// they come (an mbox error stops after the earlier ones).
    pub(super) fn digest(&mut self) -> anyhow::Result<bool> {
        let style = self.setting("Style")?;
        if !matches!(style.as_str(), "msg" | "mbox" | "digests") {
            bail!("unknown input style \"{style}\"");
        }
        let input = read_stdin()?;
        let mut out = BufWriter::new(io::stdout().lock());
        match style.as_str() {
            "msg" => writeln!(out, "{}", digest::digest(&input))?,
            "mbox" => {
                let entries = mbox::split(&input);
                // Python stops at the first non-ascii "From " line, after
                // printing the digests of the messages before it.
                let good = entries
                    .iter()
                    .position(|entry| !entry.from_line_is_ascii())
                    .unwrap_or(entries.len());
                for digest in digest_in_parallel(&entries[..good]) {
                    writeln!(out, "{digest}")?;
                }
                if good < entries.len() {
                    out.flush()?;
                    bail!("mbox \"From \" line is not ascii");
                }
            }
            _ => {
                let text = std::str::from_utf8(&input).context("stdin is not UTF-8")?;
                for line in py::file_lines(text).map(py::strip) {
                    if !line.is_empty() {
                        writeln!(out, "{line}")?;
                    }
                }
            }
        }
        out.flush()?;
        Ok(true)
    }
}

/// Messages handed to a worker at a time: enough to make taking them
/// cheap, few enough that the workers finish together.
const DIGEST_BATCH: usize = 64;

/// The digests of the mbox entries, in order, computed on every core.
fn digest_in_parallel(entries: &[mbox::Entry<'_>]) -> Vec<digest::Digest> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(entries.len().div_ceil(DIGEST_BATCH));
    if workers <= 1 {
        return entries
            .iter()
            .map(|entry| digest::digest(entry.message))
            .collect();
    }
    let next_batch = AtomicUsize::new(0);
    let mut batches: Vec<(usize, Vec<digest::Digest>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let batch = next_batch.fetch_add(1, Ordering::Relaxed);
                        let start = batch * DIGEST_BATCH;
                        if start >= entries.len() {
                            return done;
                        }
                        let chunk = &entries[start..entries.len().min(start + DIGEST_BATCH)];
                        let digests = chunk
                            .iter()
                            .map(|entry| digest::digest(entry.message))
                            .collect();
                        done.push((batch, digests));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    batches.sort_unstable_by_key(|&(batch, _)| batch);
    batches
        .into_iter()
        .flat_map(|(_, digests)| digests)
        .collect()
}

/// `pyzor predigest`: the normalised lines that enter the digest; always
/// reads one message, whatever the style.
pub fn predigest() -> anyhow::Result<bool> {
    let input = read_stdin()?;
    let mut out = BufWriter::new(io::stdout().lock());
    for line in digest::predigest_lines(&input) {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(true)
}

/// `pyzor genkey`: asks for a passphrase twice (on the terminal, else on
/// stdin as `getpass` falls back) and prints `salt,key` where
/// `salt = sha1(random)` and `key = sha1(raw salt digest + passphrase)`.
pub fn genkey() -> anyhow::Result<bool> {
    let mut reader = Passphrase::open();
    let first = reader.read("Enter passphrase: ")?;
    let second = reader.read("Enter passphrase again: ")?;
    if first != second {
        tracing::warn!("Passwords do not match.");
        return Ok(false);
    }
    // Python joins 20 random code points 0..=255 and encodes them as UTF-8.
    let mut random = [0u8; 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut random))
        .context("cannot read /dev/urandom")?;
    let salt: String = random.iter().map(|&b| char::from(b)).collect();
    let salt_digest = Sha1::digest(salt.as_bytes());
    let mut key = Sha1::new();
    key.update(salt_digest);
    key.update(first.as_bytes());
    println!("salt,key:");
    println!(
        "{},{}",
        hex::encode(salt_digest),
        hex::encode(key.finalize())
    );
    Ok(true)
}

/// Where `getpass` reads: the controlling terminal with echo off, or stdin.
enum Passphrase {
    Terminal(std::fs::File),
    Stdin,
}

impl Passphrase {
    fn open() -> Passphrase {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/tty")
        {
            Ok(tty) => Passphrase::Terminal(tty),
            Err(_) => {
                eprintln!("Warning: Password input may be echoed.");
                Passphrase::Stdin
            }
        }
    }

    /// One line without its newline; end of input is an error, as
    /// Python's `EOFError`.
    fn read(&mut self, prompt: &str) -> anyhow::Result<String> {
        let mut line = String::new();
        let read = match self {
            Passphrase::Terminal(tty) => {
                use std::os::fd::AsRawFd as _;
                tty.write_all(prompt.as_bytes())?;
                let fd = tty.as_raw_fd();
                let saved = echo_off(fd);
                let result = io::BufReader::new(&*tty).read_line(&mut line);
                if let Some(saved) = saved {
                    // SAFETY: restores the attributes read from this fd.
                    unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &saved) };
                }
                tty.write_all(b"\n")?;
                result
            }
            Passphrase::Stdin => {
                eprint!("{prompt}");
                io::stdin().lock().read_line(&mut line)
            }
        };
        if read.context("cannot read the passphrase")? == 0 {
            bail!("no passphrase: end of input");
        }
        if line.ends_with('\n') {
            line.pop();
        }
        Ok(line)
    }
}

/// Turns terminal echo off; returns the attributes to restore.
fn echo_off(fd: i32) -> Option<libc::termios> {
    // SAFETY: tcgetattr fills the zeroed struct; tcsetattr reads it.
    unsafe {
        let mut attributes: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut attributes) != 0 {
            return None;
        }
        let saved = attributes;
        attributes.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSAFLUSH, &attributes);
        Some(saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_whitelist_comments_as_python() {
        // python3 -c 'import re; p = re.compile(r"((?<=[^\\])#.*)");
        //   print([p.sub("", l).strip() for l in ["#a", "b # c", "d\\#e", " f#"]])'
        // ['#a', 'b', 'd\\#e', 'f']
        let list = LocalWhitelist::parse("#a\nb # c\nd\\#e\n f#\n\nb\n");
        assert_eq!(list.digests, vec!["#a", "b", "d\\#e", "f"]);
    }
}
