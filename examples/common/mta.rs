//! The MTA side of the milter protocol for the example load generators
//! (`milter_load`, `soak`): a connection that plays Sendmail's habits
//! (protocol 6, the queue id with MAIL FROM) and the SpamAssassin corpus
//! split as an MTA hands a message over.
//!
//! The client is written here rather than with indymilter-test, whose
//! socket has Nagle's algorithm on: with every stage before end of message
//! unanswered, small writes then wait for delayed ACKs.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Milter protocol version 6 (Sendmail 8.14 and later, Postfix 2.6 and later).
const VERSION: u32 = 6;
/// Every action (SMFIF_*) an MTA offers.
const ALL_ACTIONS: u32 = 0x1ff;
/// Every protocol option (SMFIP_*) up to SMFIP_HDR_LEADSPC.
const ALL_OPTS: u32 = 0x1f_ffff;
/// How long a reply may take before the connection counts as failed.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The body chunk size MTAs use (MILTER_CHUNK_SIZE).
const CHUNK: usize = 65535;

/// SMFIP_NO* (the stage is not sent) and SMFIP_NR_* (it is not answered).
struct Stage {
    skip: u32,
    no_reply: u32,
}
const CONNECT: Stage = Stage {
    skip: 0x1,
    no_reply: 0x1000,
};
const HELO: Stage = Stage {
    skip: 0x2,
    no_reply: 0x2000,
};
const MAIL: Stage = Stage {
    skip: 0x4,
    no_reply: 0x4000,
};
const RCPT: Stage = Stage {
    skip: 0x8,
    no_reply: 0x8000,
};
const BODY: Stage = Stage {
    skip: 0x10,
    no_reply: 0x80000,
};
const HEADER: Stage = Stage {
    skip: 0x20,
    no_reply: 0x80,
};
const EOH: Stage = Stage {
    skip: 0x40,
    no_reply: 0x40000,
};
const DATA: Stage = Stage {
    skip: 0x200,
    no_reply: 0x10000,
};
const LEADING_SPACE: u32 = 0x10_0000;

/// One corpus message as an MTA hands it over.
pub struct Message {
    /// Header name and value, the value with its leading space and with
    /// folded lines joined by LF.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body with CRLF line ends.
    body: Vec<u8>,
}

fn split(raw: &[u8]) -> Message {
    let mut raw: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\r').collect();
    // The corpus files start with mbox's "From " envelope line, which an
    // SMTP client does not send.
    if raw.starts_with(b"From ") {
        let end = raw
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |at| at + 1);
        raw.drain(..end);
    }
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&raw[..at], &raw[at + 2..]),
        None => (&raw[..], &[][..]),
    };
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line: Vec<u8> = line.iter().copied().filter(|&b| b != 0).collect();
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if let Some((_, value)) = headers.last_mut() {
                value.push(b'\n');
                value.extend_from_slice(&line);
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            headers.push((line[..colon].to_vec(), line[colon + 1..].to_vec()));
        }
    }
    let mut crlf = Vec::with_capacity(body.len() + body.len() / 40);
    for &byte in body {
        if byte == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(byte);
    }
    Message {
        headers,
        body: crlf,
    }
}

pub fn corpus(dir: &Path) -> std::io::Result<Vec<Message>> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(dir)? {
        let sub = sub?.path();
        if sub.is_dir() {
            for file in std::fs::read_dir(&sub)? {
                let file = file?.path();
                if file.extension().is_some_and(|e| e == "txt") {
                    files.push(file);
                }
            }
        }
    }
    files.sort();
    files
        .iter()
        .map(|f| Ok(split(&std::fs::read(f)?)))
        .collect()
}

/// One milter connection, played as an MTA.
pub struct Mta {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
    opts: u32,
}

/// A final end-of-message reply, and the first word of an added X-Pyzor.
pub struct Verdict {
    pub reply: u8,
    pub tag: Option<String>,
}

impl Mta {
    pub async fn open(address: &str) -> std::io::Result<Mta> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let mut mta = Mta {
            stream: BufReader::new(stream),
            out: Vec::new(),
            opts: 0,
        };
        let mut negotiate = Vec::new();
        for word in [VERSION, ALL_ACTIONS, ALL_OPTS] {
            negotiate.extend_from_slice(&word.to_be_bytes());
        }
        mta.command(b'O', &negotiate);
        let (code, data) = mta.reply().await?;
        if code != b'O' || data.len() < 12 {
            return Err(std::io::Error::other("bad negotiation reply"));
        }
        mta.opts = u32::from_be_bytes(data[8..12].try_into().expect("four bytes"));
        let mut connect = b"client.example.org\x004".to_vec();
        connect.extend_from_slice(&41000u16.to_be_bytes());
        connect.extend_from_slice(b"192.0.2.25\0");
        mta.stage(&CONNECT, b'C', &connect).await?;
        mta.stage(&HELO, b'H', b"client.example.org\0").await?;
        Ok(mta)
    }

    fn command(&mut self, code: u8, data: &[u8]) {
        let length = u32::try_from(data.len() + 1).expect("small command");
        self.out.extend_from_slice(&length.to_be_bytes());
        self.out.push(code);
        self.out.extend_from_slice(data);
    }

    async fn reply(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        if !self.out.is_empty() {
            self.stream.get_mut().write_all(&self.out).await?;
            self.out.clear();
        }
        let read = async {
            let length = self.stream.read_u32().await? as usize;
            let mut data = vec![0; length];
            self.stream.read_exact(&mut data).await?;
            Ok::<_, std::io::Error>(data)
        };
        let mut data = tokio::time::timeout(REPLY_TIMEOUT, read)
            .await
            .map_err(|_| std::io::Error::other("no reply in time"))??;
        if data.is_empty() {
            return Err(std::io::Error::other("empty reply"));
        }
        let code = data.remove(0);
        Ok((code, data))
    }

    /// Sends a stage unless skipped; reads its reply unless no-reply.
    async fn stage(&mut self, stage: &Stage, code: u8, data: &[u8]) -> std::io::Result<()> {
        if self.opts & stage.skip != 0 {
            return Ok(());
        }
        self.command(code, data);
        if self.opts & stage.no_reply == 0 {
            let (reply, _) = self.reply().await?;
            if reply != b'c' {
                return Err(std::io::Error::other(format!("reply {}", reply as char)));
            }
        }
        Ok(())
    }

    pub async fn send(&mut self, message: &Message, queue_id: &str) -> std::io::Result<Verdict> {
        let mut macros = b"Mi\0".to_vec();
        macros.extend_from_slice(queue_id.as_bytes());
        macros.push(0);
        self.command(b'D', &macros);
        self.stage(&MAIL, b'M', b"<sender@example.org>\0").await?;
        self.stage(&RCPT, b'R', b"<rcpt@example.net>\0").await?;
        self.stage(&DATA, b'T', b"").await?;
        let leading_space = self.opts & LEADING_SPACE != 0;
        for (name, value) in &message.headers {
            let value = match value.strip_prefix(b" ") {
                Some(rest) if !leading_space => rest,
                _ => value,
            };
            let mut data = Vec::with_capacity(name.len() + value.len() + 2);
            data.extend_from_slice(name);
            data.push(0);
            data.extend_from_slice(value);
            data.push(0);
            self.stage(&HEADER, b'L', &data).await?;
        }
        self.stage(&EOH, b'N', b"").await?;
        for chunk in message.body.chunks(CHUNK) {
            self.stage(&BODY, b'B', chunk).await?;
        }
        self.command(b'E', b"");
        let mut tag = None;
        loop {
            let (reply, data) = self.reply().await?;
            match reply {
                b'h' if data.starts_with(b"X-Pyzor\0") => {
                    let value = String::from_utf8_lossy(&data[8..]);
                    tag = value.split(';').next().map(|w| w.trim().to_owned());
                }
                b'a' | b'c' | b'r' | b't' | b'y' | b'd' => {
                    return Ok(Verdict { reply, tag });
                }
                _ => {}
            }
        }
    }
}
