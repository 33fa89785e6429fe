//! What the harness tests stand on: the echo upstream on 127.0.0.1:0, a fake gateway that
//! speaks just enough of the `/auth` API for every scenario (logins, sessions, codes mailed
//! over SMTP, a revocation seen late by its second instance), a raw SMTP client, and
//! `loadtest run` flags parsed as the command line would parse them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use loadtest::run::{RunConfig, Summary};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The echo upstream, stopped when dropped.
pub struct Echo {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(loadtest::echo::run(listener, async {
            let _ = stopped.await;
        }));
        Echo { addr, _stop: stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A TLS front for the echo upstream (ALPN h2 and http/1.1, certificate for `localhost` and
/// 127.0.0.1) and the PEM file that trusts it; stopped when dropped.
pub struct TlsEcho {
    pub addr: SocketAddr,
    pub ca_file: std::path::PathBuf,
    _echo: Echo,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl TlsEcho {
    pub async fn start() -> TlsEcho {
        let echo = Echo::start().await;
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let issued = rcgen::generate_simple_self_signed(names).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, issued.cert.pem()).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(issued.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![issued.cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = echo.addr;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let accept = async {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut plain = TcpStream::connect(upstream).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            };
            tokio::select! {
                () = accept => {}
                _ = stopped => {}
            }
        });
        TlsEcho {
            addr,
            ca_file,
            _echo: echo,
            _dir: dir,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

/// `loadtest run ARGS…` as validated from the command line.
pub fn config(args: &[&str]) -> RunConfig {
    RunConfig::from_flags(args).unwrap_or_else(|e| panic!("bad test flags {args:?}: {e:#}"))
}

/// Runs `loadtest run ARGS…` to its end.
pub async fn run(args: &[&str]) -> Summary {
    tokio::time::timeout(Duration::from_secs(60), loadtest::run::run(config(args)))
        .await
        .expect("the run stops by itself")
        .expect("the run starts")
}

/// A loopback port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Tokens that the fake gateway takes as seeded sessions.
pub const SEEDED_PREFIX: &str = "gw_test";

/// Writes `n` made-up tokens to a file in `dir` and returns its path.
pub fn token_file(dir: &std::path::Path, n: usize) -> String {
    let path = dir.join("tokens.txt");
    let text: String = (0..n).map(|i| format!("{SEEDED_PREFIX}{i:06}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Sends one message to the SMTP server at `addr` with a raw dialogue, checking each reply
/// code; returns the replies.
pub async fn smtp_send(addr: SocketAddr, to: &str, message: &str) -> Vec<String> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut replies = Vec::new();
    expect_reply(&mut lines, "220", &mut replies).await;
    for (command, code) in [
        ("EHLO fake.test".to_string(), "250"),
        ("MAIL FROM:<no-reply@fake.test>".to_string(), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_string(), "354"),
    ] {
        write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        expect_reply(&mut lines, code, &mut replies).await;
    }
    for line in message.lines() {
        let stuffed = if line.starts_with('.') { "." } else { "" };
        write
            .write_all(format!("{stuffed}{line}\r\n").as_bytes())
            .await
            .unwrap();
    }
    write.write_all(b".\r\n").await.unwrap();
    expect_reply(&mut lines, "250", &mut replies).await;
    write.write_all(b"QUIT\r\n").await.unwrap();
    expect_reply(&mut lines, "221", &mut replies).await;
    replies
}

/// Reads one (possibly multi-line) SMTP reply, which must have `code`.
async fn expect_reply(
    lines: &mut Lines<BufReader<OwnedReadHalf>>,
    code: &str,
    replies: &mut Vec<String>,
) {
    loop {
        let line = lines.next_line().await.unwrap().expect("a reply");
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        let last = line.as_bytes().get(3) != Some(&b'-');
        replies.push(line);
        if last {
            return;
        }
    }
}

/// What the two instances of the fake gateway share: the "database".
#[derive(Default)]
struct Store {
    /// Token → when it was revoked (None while live).
    sessions: HashMap<String, Option<Instant>>,
    /// Email → the code mailed for it.
    codes: HashMap<String, String>,
}

/// A fake gateway: password logins (password `pw`), bearer sessions (and every token of
/// [`token_file`] as a seeded one), `/auth/session`,
/// `/auth/logout`, codes mailed to `smtp`, and a second instance that notices a revocation
/// only [`FakeGateway::REVOCATION_DELAY`] after it happened.
pub struct FakeGateway {
    pub addr: SocketAddr,
    pub addr2: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl FakeGateway {
    pub const REVOCATION_DELAY: Duration = Duration::from_millis(50);

    pub async fn start(smtp: Option<SocketAddr>) -> FakeGateway {
        let store = Arc::new(Mutex::new(Store::default()));
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = futures_util::FutureExt::shared(async {
            let _ = stopped.await;
        });
        let mut addrs = Vec::new();
        for instance in [1u8, 2] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let store = Arc::clone(&store);
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let store = Arc::clone(&store);
                        tokio::spawn(async move {
                            let service = service_fn(move |req| {
                                answer(Arc::clone(&store), instance, smtp, req)
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    () = stopped => {}
                }
            });
        }
        FakeGateway {
            addr: addrs[0],
            addr2: addrs[1],
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url2(&self) -> String {
        format!("http://{}", self.addr2)
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

async fn answer(
    store: Arc<Mutex<Store>>,
    instance: u8,
    smtp: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let bearer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let live = |store: &Store| match bearer.as_ref().and_then(|t| store.sessions.get(t)) {
        None if bearer
            .as_ref()
            .is_some_and(|t| t.starts_with(SEEDED_PREFIX)) =>
        {
            true
        }
        Some(None) => true,
        Some(Some(revoked)) => instance == 2 && revoked.elapsed() < FakeGateway::REVOCATION_DELAY,
        None => false,
    };
    let new_session = |store: &mut Store| {
        let token = format!("gw_fake{}", NEXT.fetch_add(1, Ordering::Relaxed));
        store.sessions.insert(token.clone(), None);
        reply(StatusCode::OK, json!({"token": token}))
    };
    let email = input["email"].as_str().unwrap_or_default().to_string();
    let response = match (parts.method, parts.uri.path()) {
        (Method::POST, "/auth/login") => {
            if input["password"] == "pw" && email.ends_with("@loadtest.example") {
                new_session(&mut store.lock().unwrap())
            } else {
                reply(StatusCode::UNAUTHORIZED, json!({}))
            }
        }
        (Method::POST, "/auth/logout") => {
            let mut store = store.lock().unwrap();
            let revoked = live(&store);
            if let Some(t) = &bearer {
                store.sessions.insert(t.clone(), Some(Instant::now()));
            }
            reply(StatusCode::OK, json!({"revoked": revoked}))
        }
        (Method::POST, "/auth/otp/request") => {
            let code = format!("{:06}", NEXT.fetch_add(1, Ordering::Relaxed) % 1_000_000);
            store
                .lock()
                .unwrap()
                .codes
                .insert(email.clone(), code.clone());
            if let Some(smtp) = smtp {
                let message = format!(
                    "Subject: Your sign-in code\r\nContent-Type: text/plain\r\n\r\n\
                     Use this code to sign in:\r\n\r\n    {code}\r\n"
                );
                tokio::spawn(async move { smtp_send(smtp, &email, &message).await });
            }
            reply(StatusCode::ACCEPTED, json!({"status": "accepted"}))
        }
        (Method::POST, "/auth/otp/verify") => {
            let mut store = store.lock().unwrap();
            let good = store
                .codes
                .get(&email)
                .is_some_and(|c| input["code"] == **c);
            if good {
                store.codes.remove(&email);
                new_session(&mut store)
            } else {
                reply(StatusCode::UNAUTHORIZED, json!({}))
            }
        }
        (_, p) if p.starts_with("/public") => reply(StatusCode::OK, json!({})),
        (Method::GET, _) if live(&store.lock().unwrap()) => reply(StatusCode::OK, json!({})),
        _ => reply(StatusCode::UNAUTHORIZED, json!({})),
    };
    Ok(response)
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}
