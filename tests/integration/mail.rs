//! `gateway::mail` end to end: messages leave through lettre and arrive at a real SMTP server
//! on loopback (aiosmtpd, [`SmtpSink`]); a server that is down at first gets the message after
//! retries; a hung server fills the queue and new mail is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway::config::{Branding, Mail, MailTransport};
use gateway::mail::{CodePurpose, MailError, Mailer, Message, compose};
use tokio::net::TcpListener;

use crate::support::smtp::SmtpSink;
use crate::support::wait;

const FROM: &str = "Gateway <no-reply@gateway.test>";
const WAIT: Duration = Duration::from_secs(10);

fn smtp_config(url: String) -> Mail {
    Mail {
        transport: MailTransport::Smtp,
        smtp_url: url,
        from: FROM.into(),
        queue: 16,
        retries: 3,
        send_timeout: Duration::from_secs(5),
    }
}

fn message(to: &str, (subject, text, html): (String, String, String)) -> Message {
    Message {
        to: to.into(),
        subject,
        text,
        html,
    }
}

#[tokio::test]
async fn a_code_arrives_over_smtp_as_text_and_html() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mailer = Mailer::start(&smtp_config(sink.url()), None).expect("start the mailer");
    let mail = compose::code(&Branding::default(), CodePurpose::Login, "493027", 10, None);
    mailer
        .enqueue(message("alice@example.com", mail.clone()))
        .expect("queued");

    let got = sink.next_message(WAIT).await.expect("the mail arrives");
    assert_eq!(got.to, "alice@example.com");
    assert_eq!(got.from, FROM);
    assert_eq!(got.subject, mail.0);
    assert!(got.text.contains("493027"), "{}", got.text);
    assert!(got.text.contains("10 minutes"), "{}", got.text);
    assert!(got.html.contains(">493027<"), "{}", got.html);
    assert!(got.html.starts_with("<!DOCTYPE html>"), "{}", got.html);
    let raw = got.raw.to_ascii_lowercase();
    assert!(
        raw.contains("content-type: multipart/alternative"),
        "{}",
        got.raw
    );
    assert!(
        raw.contains("message-id: <") && raw.contains("@gateway.test>"),
        "{}",
        got.raw
    );
    assert!(raw.contains("\ndate: "), "{}", got.raw);
}

#[tokio::test]
async fn long_links_and_non_ascii_survive_transfer_encoding() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mailer = Mailer::start(&smtp_config(sink.url()), None).expect("start the mailer");
    // Longer than a 76-character encoded line, so it is wrapped on the wire.
    let url = format!(
        "https://gw.test/auth/magic/{}?return_to=%2Fapp%2Fdashboard&x=1",
        "Ab9_-".repeat(12)
    );
    let (_, text, html) = compose::magic_link(&Branding::default(), &url, 15);
    mailer
        .enqueue(Message {
            to: "Zoë Ünal <zoe@example.com>".into(),
            subject: "Réinitialisation — ✓".into(),
            text,
            html,
        })
        .expect("queued");

    let got = sink.next_message(WAIT).await.expect("the mail arrives");
    assert_eq!(got.subject, "Réinitialisation — ✓");
    assert!(
        got.to.contains("zoe@example.com") && got.to.contains("Zoë"),
        "{}",
        got.to
    );
    assert!(got.text.contains(&url), "{}", got.text);
    assert!(
        got.html.contains(&url.replace('&', "&amp;")),
        "{}",
        got.html
    );
}

/// The server is down at first: its address takes connections and closes them at once, until
/// the mailer has been refused twice; from then on it leads to the real server. The mail
/// arrives, once.
#[tokio::test]
async fn a_server_that_is_down_at_first_gets_the_mail_after_retries() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = front.local_addr().expect("addr");
    let refused = Arc::new(AtomicUsize::new(0));
    let (up_tx, up) = tokio::sync::watch::channel(false);
    let counted = refused.clone();
    let sink_addr = sink.addr;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = front.accept().await {
            if !*up.borrow() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(conn);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(sink_addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut server).await;
                }
            });
        }
    });
    let mut cfg = smtp_config(format!("smtp://{addr}"));
    cfg.retries = 10;
    let mailer = Mailer::start(&cfg, None).expect("start the mailer");
    mailer
        .enqueue(message(
            "bob@example.com",
            compose::code(
                &Branding::default(),
                CodePurpose::PasswordReset,
                "771203",
                10,
                None,
            ),
        ))
        .expect("queued");

    // The first attempts are refused; retries back off from 200 ms.
    wait::until("two refused attempts", Duration::from_secs(10), || {
        let n = refused.load(Ordering::SeqCst);
        async move { n >= 2 }
    })
    .await;
    up_tx.send_replace(true);
    let got = sink
        .next_message(Duration::from_secs(20))
        .await
        .expect("the mail arrives once the server is up");
    assert_eq!(got.to, "bob@example.com");
    assert!(got.text.contains("771203"), "{}", got.text);
    assert_eq!(sink.messages().await.len(), 1, "sent exactly once");
}

#[tokio::test]
async fn permanent_refusals_and_bad_addresses_are_not_retried_and_do_not_block() {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let mut cfg = smtp_config(sink.url());
    cfg.retries = 10;
    let mailer = Mailer::start(&cfg, None).expect("start the mailer");
    let mail = || {
        compose::code(
            &Branding::default(),
            CodePurpose::VerifyEmail,
            "123456",
            10,
            None,
        )
    };
    for to in [
        "not an address",
        "a@b@c",
        "x@example.com\r\nBcc: y@example.com",
    ] {
        mailer.enqueue(message(to, mail())).expect("queued");
    }
    mailer
        .enqueue(message("reject-me@example.com", mail()))
        .expect("queued");
    mailer
        .enqueue(message("carol@example.com", mail()))
        .expect("queued");

    let got = sink
        .next_message(WAIT)
        .await
        .expect("the good mail arrives");
    assert_eq!(got.to, "carol@example.com");
    // Retries would come after 100-200 ms, then 200-400 ms, ...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.rejected(), ["reject-me@example.com"], "a 550 is final");
    assert_eq!(sink.messages().await.len(), 1);
}

#[tokio::test]
async fn a_hung_server_fills_the_queue_and_enqueue_never_waits() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let mut cfg = smtp_config(format!("smtp://{addr}"));
    cfg.queue = 1;
    cfg.send_timeout = Duration::from_secs(60);
    let mailer = Mailer::start(&cfg, None).expect("start the mailer");

    let mut accepted = 0;
    let mut full = false;
    for _ in 0..50 {
        let started = std::time::Instant::now();
        let result = mailer.enqueue(message(
            "dave@example.com",
            compose::code(&Branding::default(), CodePurpose::Login, "555555", 10, None),
        ));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "enqueue waited"
        );
        match result {
            Ok(()) => accepted += 1,
            Err(MailError::QueueFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
        // Let the sender take what it can from the queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(full, "the queue never filled ({accepted} accepted)");
    assert!(accepted >= 1, "the first message fits in the queue");
    // A few in flight plus one waiting in the queue; the rest is refused.
    assert!(accepted <= 10, "{accepted} accepted: sends are not bounded");
    assert!(matches!(
        mailer.enqueue(message(
            "erin@example.com",
            compose::account_exists_notice(&Branding::default(), "https://gw.test/auth/login")
        )),
        Err(MailError::QueueFull)
    ));
}
