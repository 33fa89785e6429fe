//! Secrets never reach the logs: the real binary with JSON logs at debug level, through a
//! login, authenticated requests and a logout, never prints the token or the password.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::support::http::{self, get, post_json};
use crate::support::{SECRET, TestDb, echo, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_passwords_never_appear_in_logs() {
    let db = TestDb::new().await;
    let up = echo().await;
    let password = "pw-that-must-not-be-logged";
    user(&db, "log@example.com", password, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!("[log]\nformat = \"json\"\nlevel = \"debug\"\n[[routes]]\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"required\"\n"),
    )
    .unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("GATEWAY_DATABASE__URL", db.url())
        .env("GATEWAY_AUTH__SECRET", SECRET)
        .env("GATEWAY_AUTH__BCRYPT_COST", "4")
        .env("GATEWAY_SERVER__LISTEN", listen.to_string())
        .env("GATEWAY_SERVER__ADMIN_LISTEN", admin.to_string())
        .env("GATEWAY_SERVER__PUBLIC_URL", crate::support::PUBLIC_ORIGIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let login = post_json(
        listen,
        "/auth/login",
        &serde_json::json!({"email": "log@example.com", "password": password}),
    )
    .send()
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        get(listen, "/a?x=1").bearer(&token).send().await.status,
        200
    );
    let cookie = format!("__Host-gw_session={token}");
    assert_eq!(
        get(listen, "/b")
            .header("cookie", &cookie)
            .send()
            .await
            .status,
        200
    );
    let wrong = post_json(
        listen,
        "/auth/login",
        &serde_json::json!({"email": "log@example.com", "password": "another-secret-pw"}),
    )
    .send()
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        http::req("POST", listen, "/auth/logout")
            .bearer(&token)
            .send()
            .await
            .status,
        200
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.contains("\"status\":200"),
        "expected JSON access lines, got:\n{logs}"
    );
    let token_body = token.trim_start_matches("gw_");
    for secret in [token_body, password, "another-secret-pw", SECRET] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}\n{logs}"
        );
    }
}
