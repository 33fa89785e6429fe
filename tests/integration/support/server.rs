//! An in-process gateway for the tests, on its own test database and `127.0.0.1:0`:
//! `TestGateway::builder(&db).route("/api", echo, "required").start().await`, plus the echo
//! upstream and the user and login helpers the tests share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use gateway::app::Gateway;
use gateway::config::Config;
use gateway::server::Server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::TestDb;
use super::http;

/// A secret of the required length for every test gateway.
pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
/// The `sessions.token_key` of every test gateway.
pub const TOKEN_KEY: &str = "test-token-key-9876543210-zyxwvutsrqpo";

/// The token keys of every test gateway: tokens they issue are tagged as a gateway's are.
pub fn token_keys() -> gateway::sessions::TokenKeys {
    gateway::sessions::TokenKeys::new(TOKEN_KEY.as_bytes(), &[])
}
/// What test gateways put in `server.public_url`; browsers' `Origin` must match it.
pub const PUBLIC_ORIGIN: &str = "https://gw.test";

/// Starts the echo upstream (`loadtest echo`) on `127.0.0.1:0`; it stops with the runtime.
pub async fn echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    tokio::spawn(loadtest::echo::run(listener, std::future::pending::<()>()));
    addr
}

/// A running gateway; stopped (gracefully) when dropped or by [`TestGateway::stop`].
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub gw: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Builds a [`TestGateway`].
pub struct Builder<'a> {
    db: &'a TestDb,
    env: Vec<(String, String)>,
    routes: String,
}

impl TestGateway {
    pub fn builder(db: &TestDb) -> Builder<'_> {
        Builder {
            db,
            env: Vec::new(),
            routes: String::new(),
        }
    }

    /// Stops accepting, drains in-flight requests, and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Session queries this instance sent to the database.
    pub fn session_queries(&self) -> u64 {
        self.gw
            .sessions
            .stats()
            .queries
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Logs in by password and returns the token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let resp = http::post_json(
            self.addr,
            "/auth/login",
            &serde_json::json!({"email": email, "password": password}),
        )
        .send()
        .await;
        assert_eq!(resp.status, 200, "login of {email} failed: {}", resp.body);
        resp.json()["token"].as_str().expect("token").to_string()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Builder<'_> {
    /// Adds a route (`auth` is `required`, `optional` or `public`).
    pub fn route(self, prefix: &str, upstream: SocketAddr, auth: &str) -> Self {
        self.route_with(prefix, upstream, auth, "")
    }

    /// Adds a route with extra TOML lines (`roles = ["admin"]`, `strip_prefix = true`, ...).
    pub fn route_with(
        mut self,
        prefix: &str,
        upstream: SocketAddr,
        auth: &str,
        extra: &str,
    ) -> Self {
        self.routes.push_str(&format!(
            "[[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"http://{upstream}\"\nauth = \"{auth}\"\n{extra}\n"
        ));
        self
    }

    /// Sets a key as `GATEWAY_SECTION__KEY` would.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Serves TLS with these PEM files.
    pub fn tls(self, cert: &std::path::Path, key: &std::path::Path) -> Self {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        self.env("GATEWAY_SERVER__TLS_CERT", &cert)
            .env("GATEWAY_SERVER__TLS_KEY", &key)
    }

    /// The validated configuration this builder describes.
    pub fn config(&self) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let file: PathBuf = dir.path().join("gateway.toml");
        std::fs::write(&file, &self.routes).expect("write config");
        let mut env: Vec<(String, String)> = [
            ("GATEWAY_DATABASE__URL", self.db.url()),
            ("GATEWAY_AUTH__SECRET", SECRET),
            ("GATEWAY_SESSIONS__TOKEN_KEY", TOKEN_KEY),
            ("GATEWAY_AUTH__BCRYPT_COST", "4"),
            ("GATEWAY_SERVER__LISTEN", "127.0.0.1:0"),
            ("GATEWAY_SERVER__ADMIN_LISTEN", "127.0.0.1:0"),
            ("GATEWAY_SERVER__PUBLIC_URL", PUBLIC_ORIGIN),
            ("GATEWAY_SERVER__SHUTDOWN_GRACE", "5s"),
            ("GATEWAY_SERVER__ACCEPT_GRACE", "0s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(self.env.iter().cloned());
        Config::load(Some(&file), env).unwrap_or_else(|e| panic!("test gateway config: {e}"))
    }

    /// Binds and starts the gateway.
    pub async fn start(self) -> TestGateway {
        let server = Server::bind(self.config())
            .await
            .unwrap_or_else(|f| panic!("gateway failed to start: {f}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, admin, gw) = (server.local_addr(), server.admin_addr(), server.gateway());
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestGateway {
            addr,
            admin,
            gw,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// Creates an active, verified user with a password (bcrypt cost 4) and roles; returns its id.
pub async fn user(db: &TestDb, email: &str, password: &str, roles: &[&str]) -> String {
    create_user(db, email, password, roles, true).await
}

/// Like [`user`], with an email address not yet verified.
pub async fn unverified_user(db: &TestDb, email: &str, password: &str, roles: &[&str]) -> String {
    create_user(db, email, password, roles, false).await
}

async fn create_user(
    db: &TestDb,
    email: &str,
    password: &str,
    roles: &[&str],
    email_verified: bool,
) -> String {
    let hash = gateway::password::Hasher::new(4, 2, 16)
        .hash(password)
        .await
        .expect("hash");
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    gateway::users::create(
        db.pool(),
        &gateway::users::NewUser {
            email,
            email_verified,
            password_hash: Some(&hash),
            roles: &roles,
        },
    )
    .await
    .expect("create user")
    .id
}

/// `n` sessions of `user_id` made directly in the database (an hour long), so no gateway has
/// them cached; returns their tokens.
pub async fn sessions(db: &TestDb, user_id: &str, n: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let session = gateway::sessions::create(
            db.pool(),
            &token_keys(),
            user_id,
            &gateway::sessions::SessionMeta::default(),
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("create a session");
        tokens.push(session.token);
    }
    tokens
}

/// The real `gateway serve` binary, as an operator runs it: a child process on free loopback
/// ports with `config` as its file and `env` on top of the database URL and secret.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// The admin listener (`/readyz`, `/metrics`).
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts it (stdout and stderr piped) and waits until it accepts connections.
    pub async fn start(db: &TestDb, config: &str, env: &[(&str, &str)]) -> ServeProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, config).expect("write config");
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
        };
        let (addr, admin) = (free(), free());
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
        command
            .args(["serve", "--config"])
            .arg(&file)
            .env("GATEWAY_DATABASE__URL", db.url())
            .env("GATEWAY_AUTH__SECRET", SECRET)
            .env("GATEWAY_SESSIONS__TOKEN_KEY", TOKEN_KEY)
            .env("GATEWAY_SERVER__LISTEN", addr.to_string())
            .env("GATEWAY_SERVER__ADMIN_LISTEN", admin.to_string())
            .env("GATEWAY_SERVER__ACCEPT_GRACE", "0s")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn gateway serve");
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "gateway did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ServeProcess {
            child,
            addr,
            admin,
            _dir: dir,
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    }
}
