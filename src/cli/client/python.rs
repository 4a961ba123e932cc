//! Python's spellings of values that `pyzor` prints: `time.ctime()`,
//! `str(OSError)`, and optparse's `--help` page (`repr()` is
//! [`pyzor_milter::python`]'s). Scripts and SpamAssassin parse these, so they must match
//! CPython 3.11 to the byte.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use clap::CommandFactory;
use pyzor_milter::python;

/// `time.ctime(seconds)` in local time: `Thu Jan  1 00:00:00 1970`.
pub fn ctime(seconds: i64) -> Option<String> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let tm = local_time(seconds)?;
    Some(format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS.get(usize::try_from(tm.tm_wday).ok()?)?,
        MONTHS.get(usize::try_from(tm.tm_mon).ok()?)?,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900
    ))
}

/// The broken-down local time (`localtime_r`), honouring `TZ`.
pub fn local_time(seconds: i64) -> Option<libc::tm> {
    let time = libc::time_t::try_from(seconds).ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills in (reading TZ on
    // first use); both pointers are valid for the call.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return None;
        }
        Some(tm)
    }
}

/// `str(OSError)`: `[Errno 2] No such file or directory: '/x'`.
pub fn os_error(error: &io::Error, path: Option<&Path>) -> String {
    let mut text = match error.raw_os_error() {
        Some(code) => {
            let full = io::Error::from_raw_os_error(code).to_string();
            let suffix = format!(" (os error {code})");
            format!(
                "[Errno {code}] {}",
                full.strip_suffix(&suffix).unwrap_or(&full)
            )
        }
        None => error.to_string(),
    };
    if let Some(path) = path {
        let _ = write!(text, ": {}", python::repr_str(&path.to_string_lossy()));
    }
    text
}

/// optparse's help page for the `pyzor` options, built from the clap
/// definitions of [`super::Args`]: `Usage:`, the wrapped description, then
/// each option with its metavariable, help at column 24, width from
/// `COLUMNS` (else the terminal, else 80) minus 2.
pub fn optparse_help() -> String {
    const HELP_POSITION: usize = 24;
    const INDENT: usize = 2;
    let width = terminal_columns().saturating_sub(2).max(HELP_POSITION + 11);
    let command = super::Args::command();
    let mut out = String::from("Usage: pyzor [options]\n\n");
    if let Some(about) = command.get_about() {
        for line in wrap(&about.to_string(), width) {
            out.push_str(&line);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str("Options:\n");
    for arg in command.get_arguments().filter(|arg| !arg.is_positional()) {
        let metavar = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(|name| name.to_string())
            .filter(|_| arg.get_action().takes_values());
        let mut names = Vec::new();
        if let Some(short) = arg.get_short() {
            names.push(match &metavar {
                Some(metavar) => format!("-{short} {metavar}"),
                None => format!("-{short}"),
            });
        }
        if let Some(long) = arg.get_long() {
            names.push(match &metavar {
                Some(metavar) => format!("--{long}={metavar}"),
                None => format!("--{long}"),
            });
        }
        let names = names.join(", ");
        let help = arg
            .get_help()
            .map(|help| help.to_string())
            .unwrap_or_default();
        let help_lines = wrap(&help, width - HELP_POSITION);
        let option_width = HELP_POSITION - INDENT - 2;
        let mut help_indent = 0;
        if names.len() > option_width {
            let _ = writeln!(out, "{:INDENT$}{names}", "");
            help_indent = HELP_POSITION;
        } else {
            let _ = write!(out, "{:INDENT$}{names:option_width$}  ", "");
        }
        let mut lines = help_lines.iter();
        match lines.next() {
            Some(first) => {
                let _ = writeln!(out, "{:help_indent$}{first}", "");
            }
            None => out.push('\n'),
        }
        for line in lines {
            let _ = writeln!(out, "{:HELP_POSITION$}{line}", "");
        }
    }
    out
}

/// The width optparse formats for: `$COLUMNS`, else the terminal's, else 80.
fn terminal_columns() -> usize {
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return columns;
    }
    // SAFETY: TIOCGWINSZ fills a winsize struct; fd 1 may be anything, a
    // failed ioctl leaves the zeroed struct, which we ignore.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let found = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if found && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// `textwrap.wrap(text, width)` for help texts: greedy over words, long
/// words broken.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word;
        loop {
            let needed = if line.is_empty() { 0 } else { line.len() + 1 };
            if needed + word.len() <= width {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
                break;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            let cut = word
                .char_indices()
                .map(|(index, _)| index)
                .take_while(|&index| index <= width)
                .last()
                .filter(|&index| index > 0)
                .unwrap_or(word.len());
            lines.push(word[..cut].to_owned());
            word = &word[cut..];
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_is_greedy() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh", 3), vec!["abc", "def", "gh"]);
    }
}
