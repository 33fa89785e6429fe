//! Outbound mail: a bounded queue that the request path fills without waiting, and one sender
//! task that delivers through SMTP (lettre, rustls) with a timeout and retries, or writes to
//! the log in development. [`compose`] renders the text and HTML of every message we send.

pub mod compose;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::config::{self, MailTransport};

/// Messages being sent at once; the rest wait in the queue.
const MAX_IN_FLIGHT: usize = 4;
/// The first retry waits about this long; each further one twice as long.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// One outgoing message. Every message has both a plain text and an HTML body.
#[derive(Clone)]
pub struct Message {
    /// One address, `user@example.com` or `Name <user@example.com>`.
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

// Bodies carry codes and sign-in links: Debug shows only their lengths.
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("html", &format_args!("<{} bytes>", self.html.len()))
            .finish()
    }
}

/// What a one-time code is for. Stored and sent as [`CodePurpose::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodePurpose {
    Login,
    VerifyEmail,
    PasswordReset,
}

impl CodePurpose {
    pub(crate) const ALL: [CodePurpose; 3] = [
        CodePurpose::Login,
        CodePurpose::VerifyEmail,
        CodePurpose::PasswordReset,
    ];

    /// `"login"`, `"verify_email"` or `"password_reset"`: the form in the database and the API.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CodePurpose::Login => "login",
            CodePurpose::VerifyEmail => "verify_email",
            CodePurpose::PasswordReset => "password_reset",
        }
    }
}

impl fmt::Display for CodePurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A purpose that is not one of [`CodePurpose::as_str`]'s values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown code purpose; use \"login\", \"verify_email\" or \"password_reset\"")]
pub struct UnknownPurpose;

impl FromStr for CodePurpose {
    type Err = UnknownPurpose;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CodePurpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(UnknownPurpose)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A configuration value that cannot be used; `key` is its dotted name (`mail.smtp_url`).
    #[error("{key}: {message}")]
    Config { key: &'static str, message: String },
    /// The queue holds `mail.queue` messages already; this one was dropped.
    #[error("the mail queue is full; the message was dropped")]
    QueueFull,
    /// The sender task is gone (the runtime is shutting down); the message was dropped.
    #[error("the mail sender has stopped; the message was dropped")]
    Stopped,
}

/// The handle the request path holds: cheap to clone, never waits.
#[derive(Clone)]
pub struct Mailer {
    tx: mpsc::Sender<Message>,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("queued", &queued(&self.tx))
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the transport and starts the sender task (must be called inside a tokio runtime).
    ///
    /// The task sends up to a few messages at once, each with `send_timeout` per attempt and up
    /// to `retries` further attempts with exponential backoff and jitter on transient failures
    /// (timeouts, connection errors, 4xx replies); a 5xx reply or a bad recipient address is
    /// final. Outcomes are counted in `gateway_mail_sent_total`, `gateway_mail_failed_total`,
    /// `gateway_mail_retries_total`; `gateway_mail_queue_depth` is the queue's length.
    ///
    /// With [`MailTransport::Log`] nothing is sent: each message's recipient, subject and text
    /// body are written to the log at info level. That is where codes and sign-in links appear
    /// in development, by design; `Config::serve_problems` refuses this transport unless the
    /// public URL is local.
    ///
    /// `sender_name` (`branding.name`), when given, is the display name of `From`, in place
    /// of the one in `mail.from`, whose address is kept; lettre quotes or encodes it.
    ///
    /// # Errors
    /// [`MailError::Config`] naming `mail.smtp_url` when lettre cannot use the URL (the message
    /// never contains the URL, which may hold a password), or `mail.from` when it is not a
    /// mailbox.
    ///
    /// # Security
    /// Message bodies are never logged with the SMTP transport. `smtp://host` without `?tls=`
    /// is plain text; a warning is logged when such a host is not loopback.
    pub fn start(cfg: &config::Mail, sender_name: Option<&str>) -> Result<Mailer, MailError> {
        let mut from: Mailbox = cfg.from.parse().map_err(|e| MailError::Config {
            key: "mail.from",
            message: format!("not a mailbox like \"Gateway <no-reply@example.com>\": {e}"),
        })?;
        if let Some(name) = sender_name {
            from.name = Some(name.to_string());
        }
        let transport = match cfg.transport {
            MailTransport::Log => Transport::Log,
            MailTransport::Smtp => {
                let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp_url)
                    .map_err(|e| MailError::Config {
                        key: "mail.smtp_url",
                        message: format!(
                            "not a usable SMTP URL (smtp://[user:pass@]host:port[?tls=required|opportunistic] \
                             or smtps://...): {e}"
                        ),
                    })?
                    .timeout(Some(cfg.send_timeout))
                    .build();
                if is_plain_remote(&cfg.smtp_url) {
                    tracing::warn!(
                        "mail.smtp_url is smtp:// without ?tls= to a host that is not loopback: \
                         mail and any SMTP password cross the network unencrypted"
                    );
                }
                Transport::Smtp(smtp)
            }
        };
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let sender = Sender {
            transport,
            from,
            retries: cfg.retries,
            send_timeout: cfg.send_timeout,
        };
        tokio::spawn(sender.run(rx));
        Ok(Mailer { tx })
    }

    /// Queues `msg` without waiting; it is sent later by the sender task.
    ///
    /// # Errors
    /// [`MailError::QueueFull`] when `mail.queue` messages are waiting already, and
    /// [`MailError::Stopped`] when the sender task has ended; either way the message is dropped
    /// and counted in `gateway_mail_dropped_total`.
    pub fn enqueue(&self, msg: Message) -> Result<(), MailError> {
        let result = self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => MailError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => MailError::Stopped,
        });
        if result.is_err() {
            metrics::counter!("gateway_mail_dropped_total").increment(1);
        }
        metrics::gauge!("gateway_mail_queue_depth").set(queued(&self.tx) as f64);
        result
    }
}

fn queued(tx: &mpsc::Sender<Message>) -> usize {
    tx.max_capacity() - tx.capacity()
}

/// Whether `url` is plain SMTP (no TLS at all) to a host other than this machine.
fn is_plain_remote(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("smtp://") else {
        return false;
    };
    if url.contains("tls=") {
        return false;
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().map_or("", |h| &h[1..])
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    !(host.eq_ignore_ascii_case("localhost") || host.starts_with("127.") || host == "::1")
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Log,
}

struct Sender {
    transport: Transport,
    from: Mailbox,
    retries: u32,
    send_timeout: Duration,
}

/// How one delivery attempt ended.
enum Attempt {
    Sent,
    Retry(String),
    Fail(String),
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let sender = Arc::new(self);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        while let Some(msg) = rx.recv().await {
            metrics::gauge!("gateway_mail_queue_depth").set(rx.len() as f64);
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                return;
            };
            let sender = Arc::clone(&sender);
            tokio::spawn(async move {
                sender.deliver(msg).await;
                drop(permit);
            });
        }
    }

    async fn deliver(&self, msg: Message) {
        let to: Mailbox = match msg.to.parse() {
            Ok(to) => to,
            Err(e) => return give_up(0, &format!("bad recipient address: {e}")),
        };
        let smtp = match &self.transport {
            Transport::Smtp(smtp) => smtp,
            Transport::Log => {
                log_message(&msg);
                metrics::counter!("gateway_mail_sent_total").increment(1);
                return;
            }
        };
        let email = match self.build(to, msg) {
            Ok(email) => email,
            Err(e) => return give_up(0, &format!("cannot build the message: {e}")),
        };
        let mut attempt = 0;
        loop {
            let sent = tokio::time::timeout(self.send_timeout, smtp.send(email.clone())).await;
            let outcome = match sent {
                Ok(Ok(_)) => Attempt::Sent,
                Ok(Err(e)) if e.is_permanent() || e.is_client() => Attempt::Fail(e.to_string()),
                Ok(Err(e)) => Attempt::Retry(e.to_string()),
                Err(_) => Attempt::Retry(format!("no answer within {:?}", self.send_timeout)),
            };
            match outcome {
                Attempt::Sent => {
                    metrics::counter!("gateway_mail_sent_total").increment(1);
                    tracing::debug!(attempts = attempt + 1, "mail sent");
                    return;
                }
                Attempt::Retry(error) if attempt < self.retries => {
                    metrics::counter!("gateway_mail_retries_total").increment(1);
                    let wait = backoff(attempt);
                    tracing::debug!(%error, attempt = attempt + 1, ?wait, "mail send failed; will retry");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Attempt::Retry(error) | Attempt::Fail(error) => {
                    return give_up(attempt + 1, &error);
                }
            }
        }
    }

    fn build(&self, to: Mailbox, msg: Message) -> Result<lettre::Message, lettre::error::Error> {
        // Our own id on the sender's domain rather than lettre's, which names this host.
        let message_id = format!("<{}@{}>", uuid::Uuid::new_v4(), self.from.email.domain());
        lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(msg.subject)
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(msg.text, msg.html))
    }
}

/// Counts and logs a message that will not be delivered; never logs its body.
fn give_up(attempts: u32, error: &str) {
    metrics::counter!("gateway_mail_failed_total").increment(1);
    tracing::warn!(%error, attempts, "mail not delivered; giving up");
}

/// The dev-only `log` transport: codes and links are in `text`, on purpose.
fn log_message(msg: &Message) {
    tracing::info!(
        to = %msg.to,
        subject = %msg.subject,
        text = %msg.text,
        "mail (log transport, development only; not sent)"
    );
}

/// The wait before retry number `attempt + 1`: `BACKOFF_BASE * 2^attempt` capped at
/// `BACKOFF_CAP`, then a random point in its upper half, so a burst of failures spreads out.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(transport: MailTransport, smtp_url: &str, from: &str) -> config::Mail {
        config::Mail {
            transport,
            smtp_url: smtp_url.into(),
            from: from.into(),
            queue: 4,
            retries: 0,
            send_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn purpose_round_trips() {
        for p in CodePurpose::ALL {
            assert_eq!(p.as_str().parse::<CodePurpose>(), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<CodePurpose>(&json).unwrap(), p);
        }
        assert_eq!(
            [
                CodePurpose::Login,
                CodePurpose::VerifyEmail,
                CodePurpose::PasswordReset
            ]
            .map(CodePurpose::as_str),
            ["login", "verify_email", "password_reset"]
        );
        for bad in [
            "",
            "Login",
            "LOGIN",
            "verify-email",
            "reset",
            " login",
            "login\n",
        ] {
            assert_eq!(bad.parse::<CodePurpose>(), Err(UnknownPurpose), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn start_refuses_a_bad_smtp_url_naming_the_key() {
        for url in [
            "http://mail.example.com",
            "smtp://",
            "smtp://mail.example.com:notaport",
            "smtp://mail.example.com?tls=sometimes",
            "not a url",
        ] {
            let err =
                Mailer::start(&cfg(MailTransport::Smtp, url, "a@example.com"), None).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(
                    err,
                    MailError::Config {
                        key: "mail.smtp_url",
                        ..
                    }
                ),
                "{url}: {text}"
            );
            assert!(text.starts_with("mail.smtp_url: "), "{text}");
        }
    }

    #[tokio::test]
    async fn start_error_never_shows_the_smtp_password() {
        let url = "smtp://user:hunter2secret@mail.example.com:notaport";
        let err = Mailer::start(&cfg(MailTransport::Smtp, url, "a@example.com"), None).unwrap_err();
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
    }

    #[tokio::test]
    async fn start_refuses_a_bad_from_naming_the_key() {
        for from in [
            "",
            "gateway",
            "Gateway <no-reply>",
            "a@b@c",
            "<a@example.com",
        ] {
            let err = Mailer::start(&cfg(MailTransport::Log, "", from), None).unwrap_err();
            assert!(
                matches!(
                    err,
                    MailError::Config {
                        key: "mail.from",
                        ..
                    }
                ),
                "{from:?}: {err}"
            );
            assert!(err.to_string().starts_with("mail.from: "), "{err}");
        }
    }

    #[tokio::test]
    async fn start_accepts_the_url_forms_of_the_config() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://user:pass@mail.example.com:587?tls=required",
            "smtp://mail.example.com?tls=opportunistic",
            "smtps://user:p%40ss@mail.example.com",
        ] {
            Mailer::start(
                &cfg(MailTransport::Smtp, url, "Gateway <no-reply@example.com>"),
                None,
            )
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[tokio::test]
    async fn log_transport_drains_the_queue_and_bad_recipients_do_not_stop_it() {
        let mut c = cfg(MailTransport::Log, "", "a@example.com");
        c.queue = 2;
        let mailer = Mailer::start(&c, None).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut queued = 0;
        while queued < 50 {
            let to = if queued % 2 == 0 {
                "not an address"
            } else {
                "b@example.com"
            };
            let msg = Message {
                to: to.into(),
                subject: "s".into(),
                text: "t".into(),
                html: "<p>t</p>".into(),
            };
            match mailer.enqueue(msg) {
                Ok(()) => queued += 1,
                Err(MailError::QueueFull) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => panic!("{e}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sender stopped draining the queue"
            );
        }
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        for attempt in 0..40 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(2u32.saturating_pow(attempt.min(16)))
                .min(BACKOFF_CAP);
            for _ in 0..20 {
                let d = backoff(attempt);
                assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
            }
        }
        assert!(backoff(0) <= Duration::from_millis(200));
        assert!(backoff(1) >= Duration::from_millis(200));
        assert!(backoff(100) >= BACKOFF_CAP / 2);
    }

    #[test]
    fn plain_remote_smtp_is_recognised() {
        assert!(is_plain_remote("smtp://mail.example.com:25"));
        assert!(is_plain_remote("smtp://u:p@10.0.0.5"));
        assert!(!is_plain_remote("smtp://127.0.0.1:2525"));
        assert!(!is_plain_remote("smtp://u:p@localhost:2525/helo"));
        assert!(!is_plain_remote("smtp://[::1]:2525"));
        assert!(!is_plain_remote("smtp://mail.example.com?tls=required"));
        assert!(!is_plain_remote("smtps://mail.example.com"));
    }

    #[test]
    fn message_debug_hides_bodies() {
        let msg = Message {
            to: "a@example.com".into(),
            subject: "Your code".into(),
            text: "123456".into(),
            html: "<b>123456</b>".into(),
        };
        let shown = format!("{msg:?}");
        assert!(!shown.contains("123456"), "{shown}");
        assert!(shown.contains("a@example.com"), "{shown}");
    }
}
