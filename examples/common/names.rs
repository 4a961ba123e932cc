//! Name resolution under the control of a test: a process run by
//! [`namespace_command`] sees the test's own /etc/hosts, resolv.conf and
//! nsswitch.conf, bind-mounted in a mount namespace of its own (`unshare
//! -m`, as root). The name server is an address on loopback where nothing
//! listens, so that DNS fails at once and no query leaves the machine;
//! glibc reads /etc/hosts at each lookup, so [`write_hosts`] changes what
//! the next lookup finds. Shared by `examples/soak.rs` and the
//! integration tests.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

/// The hosts file's size, the same for every content, so that an edit in
/// place never shows a lookup a truncated file.
const HOSTS_SIZE: usize = 128;

/// Rewrites `DIR/hosts` in place (same inode, as the bind mount needs, and
/// same size): `name` at `address`, or `name` unknown.
pub fn write_hosts(dir: &Path, name: &str, address: Option<&str>) -> std::io::Result<()> {
    let mut text = String::from("127.0.0.1 localhost\n");
    if let Some(address) = address {
        text.push_str(&format!("{address} {name}\n"));
    }
    text.push('#');
    let padding = HOSTS_SIZE
        .checked_sub(text.len() + 1)
        .ok_or_else(|| std::io::Error::other("the name is too long for the hosts file"))?;
    text.push_str(&" ".repeat(padding));
    text.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("hosts"))?;
    file.write_all(text.as_bytes())
}

/// A command that runs `program` in a mount namespace where /etc/hosts,
/// /etc/resolv.conf and /etc/nsswitch.conf are `DIR/hosts` (written by
/// [`write_hosts`] first) and files written here; arguments follow.
pub fn namespace_command(dir: &Path, program: &Path) -> std::io::Result<Command> {
    std::fs::write(
        dir.join("resolv.conf"),
        "nameserver 127.83.83.83\noptions timeout:1 attempts:1\n",
    )?;
    std::fs::write(dir.join("nsswitch.conf"), "hosts: files dns\n")?;
    let mounts: Vec<String> = ["hosts", "resolv.conf", "nsswitch.conf"]
        .iter()
        .map(|file| format!("mount --bind '{}' /etc/{file}", dir.join(file).display()))
        .collect();
    let script = format!("set -e\n{}\nexec \"$@\"\n", mounts.join("\n"));
    let mut command = Command::new("unshare");
    command.args(["-m", "sh", "-c", &script, "sh"]).arg(program);
    Ok(command)
}
