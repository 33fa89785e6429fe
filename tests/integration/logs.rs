//! Secrets never reach the logs: the real binary with JSON logs at debug level, through a
//! login, authenticated requests and a logout, never prints the token or the password.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::support::http::{self, get, post_json};
use crate::support::{SECRET, ServeProcess, TOKEN_KEY, TestDb, echo, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_passwords_never_appear_in_logs() {
    let db = TestDb::new().await;
    let up = echo().await;
    let password = "pw-that-must-not-be-logged";
    user(&db, "log@example.com", password, &[]).await;
    let config = format!(
        "[log]\nformat = \"json\"\nlevel = \"debug\"\n[[routes]]\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"required\"\n"
    );
    let mut gateway = ServeProcess::start(
        &db,
        &config,
        &[
            ("GATEWAY_AUTH__BCRYPT_COST", "4"),
            ("GATEWAY_SERVER__PUBLIC_URL", crate::support::PUBLIC_ORIGIN),
        ],
    )
    .await;
    let listen = gateway.addr;
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
    gateway.terminate();
    let _ = tokio::time::timeout(Duration::from_secs(10), gateway.child.wait()).await;
    let mut logs = String::new();
    gateway
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    gateway
        .child
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
    for secret in [token_body, password, "another-secret-pw", SECRET, TOKEN_KEY] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}\n{logs}"
        );
    }
}
