//! A real SMTP server on loopback for the mail tests: Python's aiosmtpd in a child process,
//! which parses every message it accepts (MIME, quoted-printable, base64) and hands it back as
//! one JSON line. `SmtpSink::start().await` gives `None` (after printing SKIPPED) when aiosmtpd
//! is missing outside CI; under `CI` a missing aiosmtpd fails the test.
//!
//! Recipients whose local part starts with `reject` get a permanent `550` at `RCPT TO`, and are
//! listed by [`SmtpSink::rejected`].

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;

const SINK_PY: &str = r#"
import asyncio, email, json, sys
from email import policy
from aiosmtpd.smtp import SMTP

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def body(msg, kind):
    part = msg.get_body(preferencelist=(kind,))
    return part.get_content() if part is not None else ""

class Sink:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("reject"):
            emit({"rejected": address})
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=policy.default)
        emit({"mail": {
            "to": str(msg.get("To", "")),
            "from": str(msg.get("From", "")),
            "subject": str(msg.get("Subject", "")),
            "text": body(msg, "plain"),
            "html": body(msg, "html"),
            "raw": raw.decode("utf-8", "replace"),
        }})
        return "250 OK"

async def main():
    port = int(sys.argv[1])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink()), "127.0.0.1", port)
    emit({"ready": server.sockets[0].getsockname()[1]})
    await server.serve_forever()

asyncio.run(main())
"#;

/// How long the Python process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One message as the SMTP server received it, headers and bodies decoded.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedMail {
    /// The `To` header, e.g. `alice@example.com` or `Alice <alice@example.com>`.
    pub to: String,
    /// The `From` header.
    pub from: String,
    pub subject: String,
    /// The `text/plain` part, decoded; empty if there is none.
    pub text: String,
    /// The `text/html` part, decoded; empty if there is none.
    pub html: String,
    /// The whole message as sent (headers and encoded bodies).
    pub raw: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Event {
    Ready(u16),
    Mail(ReceivedMail),
    Rejected(String),
}

#[derive(Default)]
struct Received {
    mail: Vec<ReceivedMail>,
    rejected: Vec<String>,
    /// Index in `mail` of the next message [`SmtpSink::next_message`] returns.
    next: usize,
}

/// A running aiosmtpd on `addr`; the process is killed when this is dropped.
pub struct SmtpSink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    count: watch::Receiver<usize>,
    _child: Child,
    _dir: tempfile::TempDir,
}

/// A port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl SmtpSink {
    /// Starts a sink on a free loopback port. `None` when aiosmtpd is missing and `CI` is not
    /// set ([`super::skip`] says so); panics when it is missing under CI.
    pub async fn start() -> Option<SmtpSink> {
        Self::start_on(0).await
    }

    /// Like [`SmtpSink::start`], on `port` (0 for any).
    pub async fn start_on(port: u16) -> Option<SmtpSink> {
        if !aiosmtpd_available().await {
            let test = std::thread::current()
                .name()
                .unwrap_or("a test")
                .to_string();
            super::skip(
                &test,
                "python3 with aiosmtpd, the real SMTP server it needs, is missing (pip install aiosmtpd)",
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("smtp_sink.py");
        std::fs::write(&script, SINK_PY).expect("write smtp_sink.py");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let port = match ready {
            Ok(Ok(Some(line))) => match serde_json::from_str(&line) {
                Ok(Event::Ready(port)) => port,
                _ => panic!("unexpected first line from the SMTP sink: {line}"),
            },
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("the SMTP sink (aiosmtpd) did not start on port {port}:\n{log}");
            }
        };
        let received = Arc::new(Mutex::new(Received::default()));
        let (count_tx, count) = watch::channel(0);
        tokio::spawn(read_events(lines, Arc::clone(&received), count_tx));
        Some(SmtpSink {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            received,
            count,
            _child: child,
            _dir: dir,
        })
    }

    /// `smtp://127.0.0.1:PORT`: plain SMTP, the form `mail.smtp_url` takes.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The next message not yet returned by this method, waiting up to `timeout` for it.
    pub async fn next_message(&self, timeout: Duration) -> Option<ReceivedMail> {
        let want = self.received.lock().expect("sink lock").next + 1;
        let mut count = self.count.clone();
        tokio::time::timeout(timeout, count.wait_for(|n| *n >= want))
            .await
            .ok()?
            .ok()?;
        let mut received = self.received.lock().expect("sink lock");
        let mail = received.mail.get(received.next).cloned()?;
        received.next += 1;
        Some(mail)
    }

    /// Every message received so far, in order of arrival.
    pub async fn messages(&self) -> Vec<ReceivedMail> {
        self.received.lock().expect("sink lock").mail.clone()
    }

    /// Every recipient refused with `550` so far (local part starting with `reject`).
    pub fn rejected(&self) -> Vec<String> {
        self.received.lock().expect("sink lock").rejected.clone()
    }
}

async fn aiosmtpd_available() -> bool {
    Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn read_events(
    mut lines: tokio::io::Lines<BufReader<ChildStdout>>,
    received: Arc<Mutex<Received>>,
    count: watch::Sender<usize>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let event: Event = match serde_json::from_str(&line) {
            Ok(event) => event,
            Err(e) => {
                eprintln!("ignoring a line from the SMTP sink ({e}): {line}");
                continue;
            }
        };
        let mut received = received.lock().expect("sink lock");
        match event {
            Event::Mail(mail) => {
                received.mail.push(mail);
                count.send_replace(received.mail.len());
            }
            Event::Rejected(address) => received.rejected.push(address),
            Event::Ready(_) => {}
        }
    }
}

/// An SMTP server the gateway mails to, read by the code each mail carries: [`SmtpSink`]
/// (aiosmtpd, whole messages) or [`CodeSink`] (in this process, the codes only). Tests that
/// need nothing of a mail but its code take any; they run on [`CodeSink`], which never skips.
pub trait Inbox {
    /// `smtp://127.0.0.1:PORT`, for `mail.smtp_url`.
    fn url(&self) -> String;

    /// The 6-digit code of the next mail to `email`, waiting up to `timeout`.
    fn code_for(&self, email: &str, timeout: Duration) -> impl Future<Output = Option<String>>;
}

impl Inbox for SmtpSink {
    fn url(&self) -> String {
        SmtpSink::url(self)
    }

    /// The next message must be for `email`.
    async fn code_for(&self, email: &str, timeout: Duration) -> Option<String> {
        let mail = self.next_message(timeout).await?;
        assert_eq!(mail.to, email, "mail to the wrong address: {mail:?}");
        mail.text
            .split_whitespace()
            .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
    }
}

impl Inbox for CodeSink {
    fn url(&self) -> String {
        CodeSink::url(self)
    }

    async fn code_for(&self, email: &str, timeout: Duration) -> Option<String> {
        CodeSink::code_for(self, email, timeout).await
    }
}

/// The load-test harness's SMTP sink (`loadtest::smtp`), in this process: no Python, so it
/// never skips. It keeps only the 6-digit code of each message, per recipient: for tests that
/// need nothing else of a mail ([`SmtpSink`] gives whole messages).
pub struct CodeSink {
    pub addr: SocketAddr,
    codes: Arc<loadtest::smtp::Codes>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl CodeSink {
    /// Serves SMTP on a free loopback port until dropped.
    pub async fn start() -> CodeSink {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("sink address");
        let codes = loadtest::smtp::Codes::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(loadtest::smtp::serve(listener, Arc::clone(&codes), async {
            let _ = stopped.await;
        }));
        CodeSink {
            addr,
            codes,
            _stop: stop,
        }
    }

    /// `smtp://127.0.0.1:PORT`, for `mail.smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The next code mailed to `email` (one that arrived before this call included), waiting
    /// up to `timeout`.
    pub async fn code_for(&self, email: &str, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.codes.expect(email))
            .await
            .ok()?
            .ok()
    }
}
