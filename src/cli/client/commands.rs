//! The commands that ask servers: ping, pong, check, info, report and
//! whitelist, with the lines and verdicts of Python's `ClientRunner`,
//! `CheckClientRunner` and `InfoClientRunner`.
//!
//! Python asks one server inline and several in threads. An exception that
//! is no `CommError` (a response without `Count`, a Thread that is no
//! number) kills the program in the first case and only that server's
//! thread in the second; we do the same, with a one-line message instead of
//! a traceback. Lines come in server order (Python's come in answer order).

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use pyzor_milter::client::{Client, ServerAddress, ServerError};
use pyzor_milter::protocol::{OK_CODE, Op, Response, ResponseError};
use pyzor_milter::python::repr_head_tuple as head_tuple;

use super::Session;
use super::python::ctime;

/// What one server's request came to, in Python's terms.
enum Outcome {
    Response(Response),
    /// A `CommError`: Python prints `(code, text)`.
    Failed(i64, String),
    /// An exception Python does not catch.
    Crash(anyhow::Error),
}

/// The fields `InfoClientRunner` prints, in its order.
const INFO_FIELDS: [&str; 6] = [
    "Count",
    "Entered",
    "Updated",
    "WL-Count",
    "WL-Entered",
    "WL-Updated",
];

fn prefix(server: &ServerAddress) -> String {
    format!("{server}\t")
}

/// A crash caused by a response field, naming the server.
fn crash(server: &ServerAddress, source: ResponseError) -> anyhow::Error {
    ServerError::Response {
        server: server.clone(),
        source,
    }
    .into()
}

/// `CheckClientRunner`: lines plus the verdict of `check` and `pong`.
struct CheckRunner {
    report_threshold: i64,
    whitelist_threshold: i64,
    all_ok: bool,
    found_hit: bool,
    whitelisted: bool,
    lines: Vec<String>,
}

impl CheckRunner {
    fn new(report_threshold: i64, whitelist_threshold: i64) -> CheckRunner {
        CheckRunner {
            report_threshold,
            whitelist_threshold,
            all_ok: true,
            found_hit: false,
            whitelisted: false,
            lines: Vec::new(),
        }
    }

    fn verdict(&self) -> bool {
        self.all_ok && self.found_hit && !self.whitelisted
    }

    fn handle(&mut self, server: &ServerAddress, response: &Response) -> anyhow::Result<()> {
        let code = response.code().map_err(|e| crash(server, e))?;
        let mut line = format!("{}{}\t", prefix(server), head_tuple(code, response.diag()));
        if code == OK_CODE {
            // Python's counts have any size; compared saturated, as the
            // thresholds are i64s, the answer is Python's.
            let (count, whitelist_count) = response.counts().map_err(|e| crash(server, e))?;
            if whitelist_count.saturating() > self.whitelist_threshold {
                self.whitelisted = true;
            } else if count.saturating() > self.report_threshold {
                self.found_hit = true;
            }
            line.push_str(&format!("{count}\t{whitelist_count}"));
        } else {
            self.all_ok = false;
        }
        line.push('\n');
        self.lines.push(line);
        Ok(())
    }
}

/// `ClientRunner.handle_response`: the head tuple, and whether it is 200.
fn head_line(server: &ServerAddress, response: &Response) -> anyhow::Result<(String, bool)> {
    let code = response.code().map_err(|e| crash(server, e))?;
    let line = format!("{}{}\n", prefix(server), head_tuple(code, response.diag()));
    Ok((line, code == OK_CODE))
}

/// `InfoClientRunner.handle_response`.
fn info_lines(server: &ServerAddress, response: &Response) -> anyhow::Result<(String, bool)> {
    let (mut text, ok) = head_line(server, response)?;
    if ok {
        for field in INFO_FIELDS {
            let Some(value) = response.int_field(field).map_err(|e| crash(server, e))? else {
                continue;
            };
            let shown = if field.contains("Count") {
                value.to_string()
            } else if value.exact() == Some(-1) {
                "Never".to_owned()
            } else {
                value.exact().and_then(ctime).ok_or_else(|| {
                    anyhow!("server \"{server}\": {field} {value} is out of the time range")
                })?
            };
            text.push_str(&format!("\t{field}: {shown}\n"));
        }
    }
    text.push('\n');
    Ok((text, ok))
}

fn print(lines: &[String]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        out.write_all(line.as_bytes())
            .context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")
}

impl Session {
    /// Whether Python would ask the servers in threads, where a crash ends
    /// only that server's thread (`send_digest` with several servers).
    fn threaded(&self, op: Op) -> bool {
        op != Op::Ping && self.servers.len() > 1
    }

    /// A crash ends the program, or in Python's threads only that server.
    fn survive(&self, op: Op, error: anyhow::Error) -> anyhow::Result<()> {
        if self.threaded(op) {
            eprintln!("pyzor: {error:#}");
            Ok(())
        } else {
            Err(error)
        }
    }

    /// Sends one request to every server at once.
    fn ask(
        &mut self,
        op: Op,
        digest: Option<&str>,
    ) -> anyhow::Result<Vec<(ServerAddress, Outcome)>> {
        let Ok(timeout_secs) = u64::try_from(self.timeout_secs) else {
            // Python sends, then `settimeout` raises ValueError.
            let timeout = self.timeout_secs;
            return Ok(self
                .servers
                .iter()
                .map(|server| {
                    let error = anyhow!("server \"{server}\": timeout {timeout} is negative");
                    (server.clone(), Outcome::Crash(error))
                })
                .collect());
        };
        if self.client.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let client = Client::new(
                self.servers.clone(),
                std::mem::take(&mut self.accounts),
                Duration::from_secs(timeout_secs),
            );
            self.client = Some((runtime, client));
        }
        let (runtime, client) = self.client.as_ref().expect("set just above");
        let digests: Vec<String> = digest.iter().map(|d| (*d).to_owned()).collect();
        let answers = runtime.block_on(client.ask_all(op, &digests, None));
        Ok(answers
            .into_iter()
            .map(|answer| {
                let outcome = match answer.result {
                    Ok(response) => Outcome::Response(response),
                    Err(error) => match error.pyzor_status() {
                        Some((code, text)) => {
                            tracing::warn!("{error:#}");
                            Outcome::Failed(code, text)
                        }
                        None => Outcome::Crash(error.into()),
                    },
                };
                (answer.server, outcome)
            })
            .collect())
    }

    /// `ping` (and the per-digest part of `report` and `whitelist`):
    /// head lines and whether all were 200.
    fn simple(&mut self, op: Op, digest: Option<&str>) -> anyhow::Result<(Vec<String>, bool)> {
        let mut lines = Vec::new();
        let mut all_ok = true;
        for (server, outcome) in self.ask(op, digest)? {
            let handled = match outcome {
                Outcome::Response(response) => head_line(&server, &response),
                Outcome::Failed(code, text) => Ok((
                    format!("{}{}\n", prefix(&server), head_tuple(code, &text)),
                    false,
                )),
                Outcome::Crash(error) => Err(error),
            };
            match handled {
                Ok((line, ok)) => {
                    all_ok &= ok;
                    lines.push(line);
                }
                Err(error) => self.survive(op, error)?,
            }
        }
        Ok((lines, all_ok))
    }

    pub(super) fn ping(&mut self) -> anyhow::Result<bool> {
        let (lines, all_ok) = self.simple(Op::Ping, None)?;
        print(&lines)?;
        Ok(all_ok)
    }

    /// `report` and `whitelist`: lines printed after each digest.
    pub(super) fn report(&mut self, op: Op) -> anyhow::Result<bool> {
        let mut all_ok = true;
        for digest in self.input_digests()? {
            if digest.is_empty() {
                continue;
            }
            let (lines, ok) = self.simple(op, Some(&digest))?;
            all_ok &= ok;
            print(&lines)?;
        }
        Ok(all_ok)
    }

    /// Feeds one digest's answers to a check runner.
    fn run_check(&mut self, op: Op, digest: &str, runner: &mut CheckRunner) -> anyhow::Result<()> {
        for (server, outcome) in self.ask(op, Some(digest))? {
            let handled = match outcome {
                Outcome::Response(response) => runner.handle(&server, &response),
                Outcome::Failed(code, text) => {
                    runner.all_ok = false;
                    runner
                        .lines
                        .push(format!("{}{}\n", prefix(&server), head_tuple(code, &text)));
                    Ok(())
                }
                Outcome::Crash(error) => Err(error),
            };
            if let Err(error) = handled {
                self.survive(op, error)?;
            }
        }
        Ok(())
    }

    pub(super) fn pong(&mut self) -> anyhow::Result<bool> {
        let mut runner = CheckRunner::new(
            self.int_setting("ReportThreshold")?,
            self.int_setting("WhitelistThreshold")?,
        );
        for digest in self.input_digests()? {
            if !digest.is_empty() {
                self.run_check(Op::Pong, &digest, &mut runner)?;
            }
        }
        print(&runner.lines)?;
        Ok(runner.verdict())
    }

    /// `check`: digests on the local whitelist get Python's mock answer
    /// (`Count: 0`, `WL-Count: 0`) from every server without asking.
    pub(super) fn check(&mut self) -> anyhow::Result<bool> {
        let report_threshold = self.int_setting("ReportThreshold")?;
        let whitelist_threshold = self.int_setting("WhitelistThreshold")?;
        let local = self.load_local_whitelist()?;
        let mut runner = CheckRunner::new(report_threshold, whitelist_threshold);
        let mut mock = CheckRunner::new(report_threshold, whitelist_threshold);
        let mock_response =
            Response::parse(b"Code: 200\nDiag: OK\nPV: 2.1\nThread: 1024\nCount: 0\nWL-Count: 0");
        for digest in self.input_digests()? {
            if digest.is_empty() {
                continue;
            }
            if local.contains(&digest) {
                for server in self.servers.clone() {
                    mock.handle(&server, &mock_response)?;
                }
            } else {
                self.run_check(Op::Check, &digest, &mut runner)?;
            }
        }
        print(&mock.lines)?;
        print(&runner.lines)?;
        Ok(runner.verdict())
    }

    pub(super) fn info(&mut self) -> anyhow::Result<bool> {
        let mut lines = Vec::new();
        let mut all_ok = true;
        for digest in self.input_digests()? {
            if digest.is_empty() {
                continue;
            }
            for (server, outcome) in self.ask(Op::Info, Some(&digest))? {
                let handled = match outcome {
                    Outcome::Response(response) => info_lines(&server, &response),
                    Outcome::Failed(code, text) => Ok((
                        format!("{}{}\n", prefix(&server), head_tuple(code, &text)),
                        false,
                    )),
                    Outcome::Crash(error) => Err(error),
                };
                match handled {
                    Ok((text, ok)) => {
                        all_ok &= ok;
                        lines.push(text);
                    }
                    Err(error) => self.survive(Op::Info, error)?,
                }
            }
        }
        print(&lines)?;
        Ok(all_ok)
    }
}
