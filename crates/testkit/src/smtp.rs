//! A real SMTP server for tests: Python's `aiosmtpd` on a port of
//! 127.0.0.1, writing each message it accepts to a directory as JSON
//! (sender, recipients, subject, and the plain-text and HTML parts decoded
//! from their transfer encoding), which [`SmtpServer::messages`] reads.
//!
//! `.ci/run` installs `aiosmtpd`; a machine without it fails the test with
//! that said (a test never passes without the server).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::tls::{Process, free_port, temp_dir, wait_for_port};

/// The server: a handler that stores each message as `<n>.json` (written
/// to a temporary name first, so a reader never sees half a file).
const SERVER: &str = r#"
import asyncio, json, os, sys
from email import message_from_bytes, policy
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]

class Keep:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        def part(kind):
            body = message.get_body(preferencelist=(kind,))
            return body.get_content() if body is not None else None
        Keep.count += 1
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "content_type": message.get_content_type(),
            "text": part("plain"),
            "html": part("html"),
        }
        path = os.path.join(out, "%06d.json" % Keep.count)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"

controller = Controller(Keep(), hostname="127.0.0.1", port=port)
controller.start()
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
"#;

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// The top-level content type (`multipart/alternative` for a message
    /// with both parts).
    pub content_type: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

impl Delivered {
    /// The first `http(s)://…` link in the plain-text part that contains
    /// `path`.
    pub fn link(&self, path: &str) -> Option<String> {
        self.text
            .as_deref()?
            .split_whitespace()
            .find(|word| word.starts_with("http") && word.contains(path))
            .map(str::to_owned)
    }
}

/// `aiosmtpd` on a port of 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    pub port: u16,
    dir: TempDir,
    _process: Process,
}

impl SmtpServer {
    /// Starts it on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts it on `port` (one a test kept free, to bring a mail server
    /// back where it was down).
    #[allow(clippy::expect_used)]
    pub fn start_on(port: u16) -> Self {
        let dir = temp_dir("echo-test-smtp-");
        let out = dir.path().join("messages");
        std::fs::create_dir(&out).expect("messages directory");
        let log = dir.path().join("smtp.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(port.to_string())
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start python3 (aiosmtpd)");
        wait_for_port("aiosmtpd", port, &mut child, &log);
        Self {
            port,
            dir,
            _process: Process(child),
        }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<Delivered> {
        read_messages(&self.dir.path().join("messages"))
    }

    /// Waits up to `timeout` until `count` messages have arrived; panics
    /// with what did arrive otherwise.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Delivered> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} of {count} messages arrived in {timeout:?}: {messages:?}",
                    messages.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[allow(clippy::expect_used)]
fn read_messages(dir: &Path) -> Vec<Delivered> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("messages directory")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("read message");
            let record: Value = serde_json::from_str(&text).expect("message JSON");
            let text_of = |key: &str| record[key].as_str().map(str::to_owned);
            Delivered {
                from: text_of("from").unwrap_or_default(),
                to: record["to"]
                    .as_array()
                    .map(|to| {
                        to.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                subject: text_of("subject").unwrap_or_default(),
                content_type: text_of("content_type").unwrap_or_default(),
                text: text_of("text"),
                html: text_of("html"),
            }
        })
        .collect()
}
