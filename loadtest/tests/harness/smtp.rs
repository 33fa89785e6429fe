//! The SMTP sink over raw TCP: a full dialogue hands the code to the waiting recipient, and
//! commands out of order are refused.

use std::time::Duration;

use loadtest::smtp::{self, Codes};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::support::smtp_send;

async fn sink() -> (
    std::net::SocketAddr,
    std::sync::Arc<Codes>,
    oneshot::Sender<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let codes = Codes::new();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(smtp::serve(listener, codes.clone(), async {
        let _ = stopped.await;
    }));
    (addr, codes, stop)
}

#[tokio::test]
async fn a_raw_dialogue_delivers_the_code_to_its_recipient() {
    let (addr, codes, _stop) = sink().await;
    let waiting = codes.expect("user7@loadtest.example");
    let message = "From: Gateway <no-reply@example.com>\r\n\
        To: user7@loadtest.example\r\n\
        Subject: Your sign-in code\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n\
        --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\r\n\
        Use this code to sign in:\r\n\r\n    509214\r\n\r\n\
        The code works once and expires in 10 minutes. Never share it: we will never as=\r\n\
        k you for it.\r\n\
        .hidden line that needs dot-stuffing\r\n\
        --b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
        <p style=\"color:#111827\">509214</p>\r\n--b1--\r\n";
    let replies = smtp_send(addr, "User7@Loadtest.Example", message).await;
    assert!(
        replies.iter().any(|r| r.starts_with("250-")),
        "EHLO is multi-line"
    );
    let code = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the code arrives")
        .unwrap();
    assert_eq!(code, "509214");
}

#[tokio::test]
async fn commands_out_of_order_are_refused_and_rset_noop_quit_answer() {
    let (addr, _codes, _stop) = sink().await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut say = async |command: &str| {
        write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
    };
    assert!(lines.next_line().await.unwrap().unwrap().starts_with("220"));
    for (command, code) in [
        ("HELO fake.test", "250"),
        ("RCPT TO:<a@b.example>", "503"),
        ("DATA", "503"),
        ("MAIL FROM:<x@y.example>", "250"),
        ("RSET", "250"),
        ("NOOP", "250"),
        ("VRFY someone", "502"),
        ("QUIT", "221"),
    ] {
        say(command).await;
        let reply = lines.next_line().await.unwrap().unwrap();
        assert!(reply.starts_with(code), "{command}: {reply}");
    }
    assert_eq!(lines.next_line().await.unwrap(), None, "closed after QUIT");
}
