//! `pyzor-milter generate DIR`: the man pages and the shell completions,
//! rendered from the clap definitions of the other personalities, so that
//! `--help`, the manual and the completions cannot drift apart. Packaging
//! runs it (`scripts/package`); nothing else needs it.
//!
//! It is not a clap subcommand of [`Cli`]: clap_complete completes hidden
//! subcommands too, so it would document and complete itself. `cli::main`
//! hands it the arguments before clap sees them.
//!
//! The pages are written without a date so that two builds of one source
//! give the same bytes.

mod manual;

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use super::{Cli, client, server};

/// The word after the program name that selects this generator.
pub const COMMAND: &str = "generate";

/// Shown as the page footer's source and in the header's centre.
const SOURCE: &str = concat!("pyzor-milter ", env!("CARGO_PKG_VERSION"));
const MANUAL: &str = "pyzor-milter manual";

/// The shells and where each one's completion file goes under
/// `DIR/completions/` (the names Debian's bash-completion, zsh and fish
/// look for in their vendor directories).
const SHELLS: [(Shell, &str, &str, &str); 3] = [
    (Shell::Bash, "bash", "", ""),
    (Shell::Zsh, "zsh", "_", ""),
    (Shell::Fish, "fish", "", ".fish"),
];

/// Runs the generator with the arguments after `generate`.
pub fn main(args: &[OsString]) -> ExitCode {
    let [dir] = args else {
        eprintln!("usage: pyzor-milter {COMMAND} DIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(dir)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "pyzor-milter: cannot generate into \"{}\": {error}",
                Path::new(dir).display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Writes `DIR/man/*.{1,8}` and `DIR/completions/{bash,zsh,fish}/*`;
/// returns the files written.
pub fn generate(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = dir.join("man");
    fs::create_dir_all(&man_dir)?;
    for (name, text) in man_pages()? {
        let path = man_dir.join(name);
        fs::write(&path, text)?;
        written.push(path);
    }
    for (shell, shell_dir, prefix, suffix) in SHELLS {
        let shell_dir = dir.join("completions").join(shell_dir);
        fs::create_dir_all(&shell_dir)?;
        for mut command in [
            top_command(),
            client::Args::command(),
            server::PyzordArgs::command(),
        ] {
            let name = command.get_name().to_owned();
            let path = shell_dir.join(format!("{prefix}{name}{suffix}"));
            let mut file = fs::File::create(&path)?;
            clap_complete::generate(shell, &mut command, &name, &mut file);
            file.flush()?;
            written.push(path);
        }
    }
    Ok(written)
}

/// `pyzor-milter` as clap sees it, with the subcommands' names and binary
/// names filled in (`pyzor-milter-milter` and so on).
fn top_command() -> Command {
    let mut command = Cli::command();
    command.build();
    command
}

/// A subcommand of `pyzor-milter`, built within its parent.
fn subcommand(name: &str) -> Command {
    top_command()
        .find_subcommand(name)
        .expect("the subcommand is defined in Cli")
        .clone()
}

/// Every page: file name and roff text.
pub fn man_pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let top = page(top_command(), "8");
    let mut top_text = Vec::new();
    // The generated SUBCOMMANDS section would name pages such as
    // pyzor-milter-pyzor(8); the personalities have their own pages.
    top.render_title(&mut top_text)?;
    top.render_name_section(&mut top_text)?;
    top.render_synopsis_section(&mut top_text)?;
    top.render_description_section(&mut top_text)?;
    top.render_options_section(&mut top_text)?;
    manual::top(&mut top_text)?;

    let pages = [
        (top.get_filename(), top_text),
        with_sections(page(client::Args::command(), "1"), manual::pyzor)?,
        with_sections(page(server::PyzordArgs::command(), "8"), manual::pyzord)?,
        with_sections(page(subcommand("milter"), "8"), manual::milter)?,
        with_sections(page(subcommand("migrate"), "8"), manual::migrate)?,
    ];
    Ok(pages.into())
}

fn page(command: Command, section: &str) -> Man {
    Man::new(command)
        .section(section)
        .source(SOURCE)
        .manual(MANUAL)
}

/// The whole generated page, then the hand-written sections that clap
/// cannot know (files, signals, the milter's configuration keys).
fn with_sections(
    man: Man,
    sections: fn(&mut dyn Write) -> io::Result<()>,
) -> io::Result<(String, Vec<u8>)> {
    let mut text = Vec::new();
    man.render(&mut text)?;
    sections(&mut text)?;
    Ok((man.get_filename(), text))
}

/// Writes sections of `(heading, [(term, description)])` as tagged
/// paragraphs; an empty term makes a plain paragraph.
fn write_sections(
    out: &mut dyn Write,
    sections: &[(&str, Vec<(String, String)>)],
) -> io::Result<()> {
    let mut roff = Roff::new();
    for (heading, entries) in sections {
        roff.control("SH", [*heading]);
        for (term, text) in entries {
            if term.is_empty() {
                roff.control("PP", []);
            } else {
                roff.control("TP", []);
                roff.text([bold(term.as_str())]);
            }
            roff.text([roman(text.as_str())]);
        }
    }
    roff.to_writer(out)
}
