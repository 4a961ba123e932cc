//! The `pyzor` config file, read as Python 3.11's `configparser.ConfigParser`
//! reads it (strict, `#` and `;` full-line comments, `=` or `:`, indented
//! continuation lines, `[DEFAULT]`, lower-cased option names) and values
//! fetched with its `BasicInterpolation` (`%%`, `%(name)s`).
//!
//! Where Python raises (a line before any section, a duplicate option, a
//! line that is no option, a bad `%`), we return an error naming the line.

use std::collections::HashMap;

/// Python's `configparser.MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// Ours: the longest value interpolation may build. Python has no bound,
/// and a few hundred bytes of nested references expand past any memory (20
/// references 8 levels deep make a terabyte); no real value comes near it.
const MAX_INTERPOLATED_LEN: usize = 1 << 20;

/// Python's `ConfigParser.default_section`.
const DEFAULT_SECTION: &str = "DEFAULT";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IniError {
    #[error("line {line}: no [section] header before \"{text}\"")]
    MissingSectionHeader { line: usize, text: String },
    #[error("line {line}: section \"{section}\" appears twice")]
    DuplicateSection { line: usize, section: String },
    #[error("line {line}: option \"{option}\" appears twice in section \"{section}\"")]
    DuplicateOption {
        line: usize,
        section: String,
        option: String,
    },
    #[error("line {line}: not an option line: \"{text}\"")]
    Parse { line: usize, text: String },
    #[error("option \"{option}\": {reason}")]
    Interpolation { option: String, reason: String },
    #[error("no option \"{option}\" in section \"{section}\"")]
    NoOption { section: String, option: String },
}

/// A parsed config: sections of lower-cased options.
#[derive(Debug, Default, Clone)]
pub struct Ini {
    defaults: HashMap<String, String>,
    sections: HashMap<String, HashMap<String, String>>,
}

impl Ini {
    pub fn add_section(&mut self, section: &str) {
        self.sections.entry(section.to_owned()).or_default();
    }

    /// `config.set(section, option, value)`, which refuses a value whose
    /// `%` would not interpolate.
    pub fn set(&mut self, section: &str, option: &str, value: &str) -> Result<(), IniError> {
        let stripped = remove_references(&value.replace("%%", ""));
        if let Some(position) = stripped.find('%') {
            return Err(IniError::Interpolation {
                option: option.to_lowercase(),
                reason: format!(
                    "invalid interpolation syntax in \"{value}\" at position {position}"
                ),
            });
        }
        self.sections
            .entry(section.to_owned())
            .or_default()
            .insert(option.to_lowercase(), value.to_owned());
        Ok(())
    }

    /// `config.get(section, option)` with interpolation.
    pub fn get(&self, section: &str, option: &str) -> Result<String, IniError> {
        let option = option.to_lowercase();
        let raw = self
            .raw(section, &option)
            .ok_or_else(|| IniError::NoOption {
                section: section.to_owned(),
                option: option.clone(),
            })?;
        let mut out = String::new();
        self.interpolate(section, &option, raw, 1, &mut out)?;
        Ok(out)
    }

    fn raw(&self, section: &str, option: &str) -> Option<&str> {
        self.sections
            .get(section)
            .and_then(|options| options.get(option))
            .or_else(|| self.defaults.get(option))
            .map(String::as_str)
    }

    /// `BasicInterpolation._interpolate_some`.
    fn interpolate(
        &self,
        section: &str,
        option: &str,
        mut rest: &str,
        depth: usize,
        out: &mut String,
    ) -> Result<(), IniError> {
        let error = |reason: String| IniError::Interpolation {
            option: option.to_owned(),
            reason,
        };
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(error("interpolation too deep".to_owned()));
        }
        while let Some(position) = rest.find('%') {
            if out.len() > MAX_INTERPOLATED_LEN {
                return Err(error(format!(
                    "longer than {MAX_INTERPOLATED_LEN} bytes after interpolation"
                )));
            }
            out.push_str(&rest[..position]);
            rest = &rest[position..];
            if let Some(after) = rest.strip_prefix("%%") {
                out.push('%');
                rest = after;
            } else if rest.starts_with("%(") {
                let Some((name, after)) = reference(rest) else {
                    return Err(error(format!(
                        "bad interpolation variable reference \"{rest}\""
                    )));
                };
                let name = name.to_lowercase();
                let value = self
                    .raw(section, &name)
                    .ok_or_else(|| error(format!("no option \"{name}\" to interpolate")))?;
                if value.contains('%') {
                    self.interpolate(section, &name, value, depth + 1, out)?;
                } else {
                    out.push_str(value);
                }
                rest = after;
            } else {
                return Err(error(format!(
                    "'%' must be followed by '%' or '(', found: \"{rest}\""
                )));
            }
        }
        out.push_str(rest);
        Ok(())
    }

    /// `ConfigParser.read_string`, for the text of one file.
    pub fn read(&mut self, text: &str) -> Result<(), IniError> {
        let mut seen_sections: Vec<String> = Vec::new();
        let mut seen_options: Vec<(String, String)> = Vec::new();
        // The current section (None before any; DEFAULT is a section name
        // here too), the current option and its lines.
        let mut section: Option<String> = None;
        let mut current: Option<(String, Vec<String>)> = None;
        let mut indent_level = 0;
        let mut parse_error = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let value = line.trim();
            let is_comment = value.starts_with('#') || value.starts_with(';');
            if is_comment || value.is_empty() {
                // Blank lines belong to a multi-line value; comments do not.
                if let Some((_, lines)) = current.as_mut().filter(|_| !is_comment) {
                    lines.push(String::new());
                }
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            if let Some((_, lines)) = current.as_mut().filter(|_| indent > indent_level) {
                lines.push(value.to_owned());
                continue;
            }
            indent_level = indent;
            self.store(section.as_deref(), current.take());
            if let Some(name) = section_header(value) {
                if name != DEFAULT_SECTION {
                    if seen_sections.iter().any(|seen| seen == name) {
                        return Err(IniError::DuplicateSection {
                            line: number,
                            section: name.to_owned(),
                        });
                    }
                    seen_sections.push(name.to_owned());
                    self.add_section(name);
                }
                section = Some(name.to_owned());
                continue;
            }
            let Some(section_name) = section.as_deref() else {
                return Err(IniError::MissingSectionHeader {
                    line: number,
                    text: line.to_owned(),
                });
            };
            match option_line(value) {
                Some((name, option_value)) => {
                    let name = name.to_lowercase();
                    let key = (section_name.to_owned(), name.clone());
                    if seen_options.contains(&key) {
                        return Err(IniError::DuplicateOption {
                            line: number,
                            section: key.0,
                            option: key.1,
                        });
                    }
                    seen_options.push(key);
                    current = Some((name, vec![option_value.to_owned()]));
                }
                None => {
                    parse_error.get_or_insert(IniError::Parse {
                        line: number,
                        text: line.to_owned(),
                    });
                }
            }
        }
        self.store(section.as_deref(), current);
        parse_error.map_or(Ok(()), Err)
    }

    /// Stores a finished option: its lines joined and right-stripped.
    fn store(&mut self, section: Option<&str>, option: Option<(String, Vec<String>)>) {
        let (Some(section), Some((name, lines))) = (section, option) else {
            return;
        };
        let value = lines.join("\n").trim_end().to_owned();
        if section == DEFAULT_SECTION {
            self.defaults.insert(name, value);
        } else {
            self.sections
                .entry(section.to_owned())
                .or_default()
                .insert(name, value);
        }
    }
}

/// `SECTCRE = r"\[(?P<header>.+)\]"`, matched at the start of the line.
fn section_header(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

/// `OPTCRE`: the name up to the first `=` or `:`, the value after it.
fn option_line(value: &str) -> Option<(&str, &str)> {
    let position = value.find(['=', ':'])?;
    let name = value[..position].trim_end();
    if name.is_empty() {
        return None;
    }
    Some((name, value[position + 1..].trim()))
}

/// `%(name)s` at the start of `text`: the name and the text after it.
fn reference(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix("%(")?;
    let close = inner.find(')')?;
    if close == 0 {
        return None;
    }
    let after = inner[close + 1..].strip_prefix('s')?;
    Some((&inner[..close], after))
}

/// `_KEYCRE.sub('', value)`: every `%(name)s` removed.
fn remove_references(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(position) = rest.find("%(") {
        out.push_str(&rest[..position]);
        match reference(&rest[position..]) {
            Some((_, after)) => rest = after,
            None => {
                out.push_str("%(");
                rest = &rest[position + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_with(text: &str) -> Result<Ini, IniError> {
        let mut ini = Ini::default();
        ini.add_section("client");
        ini.set("client", "Timeout", "5")?;
        ini.read(text)?;
        Ok(ini)
    }

    #[test]
    fn reads_as_configparser() {
        let ini = client_with(
            "# comment\n[DEFAULT]\nbase = /srv\n[client]\nTimeout : 7\nServersFile = %(base)s/servers\n\
             LogFile = a\n  b\n\n; note\n[other]\nTimeout = 9\n",
        )
        .expect("valid");
        assert_eq!(ini.get("client", "timeout"), Ok("7".to_owned()));
        assert_eq!(
            ini.get("client", "serversfile"),
            Ok("/srv/servers".to_owned())
        );
        assert_eq!(ini.get("client", "logfile"), Ok("a\nb".to_owned()));
    }

    /// fuzz/regressions/client_homedir/interpolation-bomb: 922 bytes whose
    /// ServersFile would interpolate to a terabyte.
    #[test]
    fn interpolation_is_bounded() {
        let mut text = String::from("[client]\n");
        for level in b'a'..b'i' {
            let next = char::from(level + 1);
            text.push_str(&format!(
                "{} = {}\n",
                char::from(level),
                format!("%({next})s").repeat(20)
            ));
        }
        text.push_str(&format!("i = {}\nServersFile = %(a)s\n", "x".repeat(48)));
        assert_eq!(text.len(), 922);
        let mut ini = Ini::default();
        ini.add_section("client");
        ini.read(&text).expect("valid syntax");
        assert_eq!(
            ini.get("client", "ServersFile"),
            Err(IniError::Interpolation {
                option: "h".to_owned(),
                reason: "longer than 1048576 bytes after interpolation".to_owned()
            })
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            client_with("timeout = 1\n").map(|_| ()),
            Err(IniError::MissingSectionHeader {
                line: 1,
                text: "timeout = 1".to_owned()
            })
        );
        assert_eq!(
            client_with("[client]\na=1\nA=2\n").map(|_| ()),
            Err(IniError::DuplicateOption {
                line: 3,
                section: "client".to_owned(),
                option: "a".to_owned()
            })
        );
        assert_eq!(
            client_with("[client]\nnovalue\n").map(|_| ()),
            Err(IniError::Parse {
                line: 2,
                text: "novalue".to_owned()
            })
        );
        let ini = client_with("[client]\nstyle = 50%\n").expect("read");
        assert!(matches!(
            ini.get("client", "Style"),
            Err(IniError::Interpolation { .. })
        ));
    }
}
