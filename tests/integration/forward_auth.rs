//! `/auth/verify` for nginx `auth_request`, Traefik ForwardAuth and Envoy ext_authz: the route
//! policy of the original request, the original named only by trusted proxies, and the
//! example nginx configuration in `config/` run against a real nginx when one is installed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::http::get;
use crate::support::{TestDb, TestGateway, echo, user};

const PASSWORD: &str = "correct horse battery";

async fn trusted(db: &TestDb, up: SocketAddr) -> TestGateway {
    TestGateway::builder(db)
        .route("/", up, "required")
        .route("/public", up, "public")
        .route_with("/admin", up, "required", "roles = [\"admin\"]")
        .route_with("/ro", up, "required", "methods = [\"GET\"]")
        .env("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")
        .start()
        .await
}

#[tokio::test]
async fn verify_evaluates_the_original_request() {
    let db = TestDb::new().await;
    let gw = trusted(&db, echo().await).await;
    let id = user(&db, "ann@example.com", PASSWORD, &["admin"]).await;
    user(&db, "bob@example.com", PASSWORD, &[]).await;
    let admin = gw.login("ann@example.com", PASSWORD).await;
    let plain = gw.login("bob@example.com", PASSWORD).await;
    let verify = |uri: &str| get(gw.addr, "/auth/verify").header("x-original-uri", uri);

    let ok = verify("/admin/panel?x=1").bearer(&admin).send().await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-user-id"), Some(id.as_str()));
    assert_eq!(ok.header("x-user-roles"), Some("admin"));
    assert_eq!(ok.header("x-user-email"), Some("ann@example.com"));
    assert!(ok.header("x-session-id").is_some());

    assert_eq!(
        verify("/admin/panel").bearer(&plain).send().await.status,
        403
    );
    assert_eq!(verify("/admin/panel").send().await.status, 401);
    assert_eq!(
        verify("/anything")
            .header("accept", "text/html")
            .send()
            .await
            .status,
        401,
        "no redirect: nginx wants 401"
    );
    let public = verify("/public/x").send().await;
    assert_eq!(public.status, 200);
    assert_eq!(public.header("x-user-id"), None);
    // Traefik's spelling, with the method.
    let traefik = get(gw.addr, "/auth/verify")
        .header("x-forwarded-uri", "/ro/x")
        .header("x-forwarded-method", "DELETE")
        .bearer(&plain)
        .send()
        .await;
    assert_eq!(traefik.status, 405);
    // Path tricks in the original URI get the same normalization as proxied requests.
    for sneaky in [
        "/public/..%2fadmin",
        "/public/%2e%2e/admin",
        "/admin;x",
        "relative",
        "/a%zz",
    ] {
        let r = verify(sneaky).bearer(&plain).send().await;
        assert!(matches!(r.status, 400 | 403), "{sneaky}: {}", r.status);
    }
    let r = verify("/public/../admin").send().await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn verify_ignores_original_uri_from_untrusted_peers() {
    let db = TestDb::new().await;
    let up = echo().await;
    // trusted_proxies is empty by default.
    let gw = TestGateway::builder(&db)
        .route("/", up, "public")
        .route_with("/admin", up, "required", "roles = [\"admin\"]")
        .start()
        .await;
    assert!(gw.gw.config.server.trusted_proxies.is_empty());
    let r = get(gw.addr, "/auth/verify")
        .header("x-original-uri", "/")
        .send()
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get(gw.addr, "/auth/verify").send().await;
    assert_eq!(r.status, 400);
}

/// Fills the example nginx file with this test's addresses and runs nginx in the foreground.
struct Nginx {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(listen: SocketAddr, gateway: SocketAddr, backend: SocketAddr) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().ok()?;
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/nginx-forward-auth.conf"
        ))
        .expect("config/nginx-forward-auth.conf");
        let temp = dir.path().join("tmp");
        std::fs::create_dir_all(&temp).ok()?;
        let conf = example
            .replace("127.0.0.1:8080", &listen.to_string())
            .replace("127.0.0.1:8443", &gateway.to_string())
            .replace("127.0.0.1:9000", &backend.to_string())
            .replace(
                "http {",
                &format!(
                    "http {{\n    client_body_temp_path {t}/body;\n    proxy_temp_path {t}/proxy;\n    fastcgi_temp_path {t}/fcgi;\n    uwsgi_temp_path {t}/uwsgi;\n    scgi_temp_path {t}/scgi;\n",
                    t = temp.display()
                ),
            );
        assert!(
            conf.contains(&listen.to_string()),
            "the example must listen on 127.0.0.1:8080"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, conf).ok()?;
        // One process (no master/worker split), so killing it leaves no orphaned worker that
        // would hold the test's output pipes open.
        let globals = format!(
            "daemon off; master_process off; pid {}/nginx.pid; user root;",
            dir.path().display()
        );
        let child = tokio::process::Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(&file)
            .arg("-g")
            .arg(globals)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return Some(Nginx { child, _dir: dir });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nginx did not start listening on {listen}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn the_example_nginx_config_works_with_auth_request() {
    let db = TestDb::new().await;
    let up = echo().await;
    let gw = trusted(&db, up).await;
    let listen = free_port();
    let Some(_nginx) = Nginx::start(listen, gw.addr, up).await else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed; on CI scripts/test.sh must install it"
        );
        eprintln!("SKIPPED: nginx is not installed (scripts/test.sh installs it as root)");
        return;
    };
    let id = user(&db, "cy@example.com", PASSWORD, &["admin"]).await;
    user(&db, "di@example.com", PASSWORD, &[]).await;
    // Login goes through nginx to the gateway's own endpoint.
    let login = crate::support::http::post_json(
        listen,
        "/auth/login",
        &serde_json::json!({"email": "cy@example.com", "password": PASSWORD}),
    )
    .send()
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.json()["token"].as_str().unwrap().to_string();
    let plain = gw.login("di@example.com", PASSWORD).await;

    let ok = get(listen, "/admin/x")
        .bearer(&token)
        .header("x-user-id", "root")
        .send()
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.echoed("x-user-id").as_deref(), Some(id.as_str()));
    assert_eq!(ok.echoed("x-user-roles").as_deref(), Some("admin"));

    assert_eq!(
        get(listen, "/admin/x").bearer(&plain).send().await.status,
        403
    );
    let anon = get(listen, "/x").send().await;
    assert_eq!(anon.status, 302);
    assert_eq!(anon.header("location"), Some("/auth/login?return_to=/x"));
    let public = get(listen, "/public/x")
        .header("x-user-id", "root")
        .header("x_user_id", "root")
        .send()
        .await;
    assert_eq!(public.status, 200);
    assert_eq!(
        public.echoed("x-user-id"),
        None,
        "a client's X-User-Id must not pass nginx"
    );
    assert_eq!(public.echoed("x_user_id"), None);
}
