//! `/auth/verify` for nginx `auth_request`, Traefik ForwardAuth and Envoy ext_authz: the route
//! policy of the original request, the original named only by trusted proxies, what the
//! backend must receive, and the example nginx configuration in `config/` run against a real
//! nginx (required on CI): the backend gets through it what it gets from the gateway itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::support::http::{Req, Resp, get, post_json, req};
use crate::support::{TestDb, TestGateway, echo, unverified_user, user};

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
    let browser = verify("/anything?a=1&b=2")
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(browser.status, 401, "no redirect: nginx wants 401");
    assert_eq!(
        browser.header("location"),
        Some("/auth/login?return_to=%2Fanything%3Fa%3D1%26b%3D2"),
        "where the gateway would send the browser"
    );
    let api = verify("/anything")
        .header("accept", "application/json")
        .send()
        .await;
    assert_eq!(api.status, 401);
    assert_eq!(
        api.header("location"),
        None,
        "API clients get no sign-in page"
    );
    let form_post = verify("/anything")
        .header("x-forwarded-method", "POST")
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(
        form_post.header("location"),
        None,
        "only a GET or HEAD navigation is sent to sign in, as by the proxy"
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

/// A 200 of `/auth/verify` names what the backend must receive: the request target (the
/// route's `strip_prefix` applied, the normalized path, the query as sent), which the
/// signature covers, and the client's credentials without the session token.
#[tokio::test]
async fn verify_names_what_the_backend_must_receive() {
    let db = TestDb::new().await;
    let gw = signing(&db, echo().await, true).await;
    user(&db, "ann@example.com", PASSWORD, &[]).await;
    let token = gw.login("ann@example.com", PASSWORD).await;
    let verify = |uri: &str| get(gw.addr, "/auth/verify").header("x-original-uri", uri);

    let r = verify("/api/%61/b?x=1&y=%2F")
        .header("cookie", &format!("a=1; __Host-gw_session={token}"))
        .header("cookie", "b=2")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-upstream-uri"), Some("/a/b?x=1&y=%2F"));
    assert_eq!(r.header("x-upstream-cookie"), Some("a=1; b=2"));
    assert_eq!(r.header("x-upstream-authorization"), None);
    let claims = gateway::headers::Claims {
        user_id: r.header("x-user-id").unwrap(),
        email: r.header("x-user-email").unwrap(),
        email_verified: r.header("x-user-email-verified").unwrap(),
        roles: r.header("x-user-roles").unwrap(),
        session_id: r.header("x-session-id").unwrap(),
        request_id: r.header("x-request-id").unwrap(),
        method: "GET",
        path: "/a/b?x=1&y=%2F",
    };
    assert!(gateway::headers::verify_signature(
        KEY.as_bytes(),
        r.header("x-identity-signature").unwrap(),
        &claims,
        SystemTime::now(),
        Duration::from_secs(60)
    ));

    let r = verify("/x").bearer(&token).send().await;
    assert_eq!(
        r.header("x-upstream-authorization"),
        None,
        "the token stays"
    );
    assert_eq!(r.header("x-upstream-cookie"), None);
    let r = verify("/public/p")
        .header("authorization", "Basic YTpi")
        .header("cookie", &format!("__Host-gw_session={token}"))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream-uri"), Some("/public/p"));
    assert_eq!(r.header("x-upstream-authorization"), Some("Basic YTpi"));
    assert_eq!(r.header("x-upstream-cookie"), None);
    assert_eq!(
        r.header("x-user-id"),
        None,
        "public routes carry no identity"
    );
}

/// The example nginx file, filled with a test's addresses and run in the foreground; `edits`
/// are (text, replacement) pairs applied to it first.
struct Nginx {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(
        listen: SocketAddr,
        gateway: SocketAddr,
        backend: SocketAddr,
        edits: &[(&str, &str)],
    ) -> Option<Nginx> {
        let Some(binary) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            let test = std::thread::current()
                .name()
                .unwrap_or("a test")
                .to_string();
            crate::support::skip(&test, "nginx is not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conf = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/nginx-forward-auth.conf"
        ))
        .expect("config/nginx-forward-auth.conf");
        for (from, to) in edits {
            assert!(conf.contains(from), "the example no longer has {from:?}");
            conf = conf.replace(from, to);
        }
        let temp = dir.path().join("tmp");
        std::fs::create_dir_all(&temp).expect("nginx temp dir");
        let conf = conf
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
        std::fs::write(&file, conf).expect("write nginx.conf");
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
            .expect("run nginx");
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

/// The key backends share with the gateway to check `X-Identity-Signature`.
const KEY: &str = "backend-shared-key-0123456789abcdef";

/// A signing gateway with the routes the nginx tests use; `trusted`: nginx (127.0.0.1) is
/// listed in `server.trusted_proxies`.
async fn signing(db: &TestDb, up: SocketAddr, trusted: bool) -> TestGateway {
    let builder = TestGateway::builder(db)
        .route("/", up, "required")
        .route("/public", up, "public")
        .route("/opt", up, "optional")
        .route_with("/admin", up, "required", "roles = [\"admin\"]")
        .route_with("/ro", up, "required", "methods = [\"GET\"]")
        .route_with("/api", up, "required", "strip_prefix = true")
        .env("GATEWAY_HEADERS__SIGN", "true")
        .env("GATEWAY_HEADERS__SIGNING_SECRET", KEY);
    if trusted {
        builder
            .env("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")
            .start()
            .await
    } else {
        builder.start().await
    }
}

/// What the echo backend received, when the request reached it.
fn received(resp: &Resp) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&resp.body)
        .ok()
        .filter(|v| v.get("headers").is_some() && v.get("path").is_some())
}

/// Checks a request the backend received as a backend would: the signature verifies with the
/// shared key against the identity headers, method and request target that arrived, and the
/// request id is the one the client was given. Requests without identity carry no signature.
fn assert_signed_for_the_backend(label: &str, resp: &Resp, seen: &serde_json::Value) {
    let h = |n: &str| seen["headers"][n].as_str().unwrap_or_default().to_string();
    assert_eq!(
        resp.header("x-request-id"),
        Some(h("x-request-id").as_str()),
        "{label}: the backend's request id is the client's"
    );
    if h("x-user-id").is_empty() {
        assert_eq!(
            h("x-identity-signature"),
            "",
            "{label}: anonymous, unsigned"
        );
        return;
    }
    let target = match seen["query"].as_str() {
        Some(q) => format!("{}?{q}", seen["path"].as_str().unwrap()),
        None => seen["path"].as_str().unwrap().to_string(),
    };
    let (user_id, email, verified, roles, session_id, request_id) = (
        h("x-user-id"),
        h("x-user-email"),
        h("x-user-email-verified"),
        h("x-user-roles"),
        h("x-session-id"),
        h("x-request-id"),
    );
    let claims = gateway::headers::Claims {
        user_id: &user_id,
        email: &email,
        email_verified: &verified,
        roles: &roles,
        session_id: &session_id,
        request_id: &request_id,
        method: seen["method"].as_str().unwrap(),
        path: &target,
    };
    assert!(
        gateway::headers::verify_signature(
            KEY.as_bytes(),
            &h("x-identity-signature"),
            &claims,
            SystemTime::now(),
            Duration::from_secs(60)
        ),
        "{label}: the signature does not verify against what the backend received: {seen}"
    );
}

/// The example gives the upstream what the gateway does, and none of the session: no token,
/// no session cookie (other cookies kept), the identity and its signature, the request id,
/// the backend's own Host; API clients get the gateway's 401 and browsers its 302 with an
/// encoded `return_to`.
#[tokio::test]
async fn the_example_nginx_config_works_with_auth_request() {
    let db = TestDb::new().await;
    let up = echo().await;
    let gw = signing(&db, up, true).await;
    let listen = free_port();
    let Some(_nginx) = Nginx::start(listen, gw.addr, up, &[]).await else {
        return;
    };
    let id = user(&db, "cy@example.com", PASSWORD, &["admin"]).await;
    user(&db, "di@example.com", PASSWORD, &[]).await;
    // Login goes through nginx to the gateway's own endpoint.
    let login = post_json(
        listen,
        "/auth/login",
        &serde_json::json!({"email": "cy@example.com", "password": PASSWORD}),
    )
    .send()
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.json()["token"].as_str().unwrap().to_string();
    let plain = gw.login("di@example.com", PASSWORD).await;

    let by_bearer = get(listen, "/admin/x?full=1&b=2")
        .bearer(&token)
        .header("cookie", "theme=dark")
        .header("x-user-id", "root")
        .send()
        .await;
    let by_cookie = get(listen, "/admin/x?full=1&b=2")
        .header("cookie", &format!("theme=dark; __Host-gw_session={token}"))
        .header("x-user-id", "root")
        .send()
        .await;
    for ok in [by_bearer, by_cookie] {
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert!(
            !ok.body.contains(&token),
            "the session token reached the upstream: {}",
            ok.body
        );
        assert_eq!(ok.echoed("authorization"), None);
        assert_eq!(ok.echoed("cookie").as_deref(), Some("theme=dark"));
        assert_eq!(ok.echoed("x-user-id").as_deref(), Some(id.as_str()));
        assert_eq!(ok.echoed("x-user-roles").as_deref(), Some("admin"));
        assert_eq!(ok.echoed("x-user-email-verified").as_deref(), Some("true"));
        assert_eq!(
            ok.echoed("host"),
            Some(up.to_string()),
            "the backend's own Host"
        );
        assert_eq!(
            ok.echoed("x-forwarded-host"),
            Some(listen.to_string()),
            "the client's Host"
        );
        let seen = received(&ok).unwrap();
        assert_eq!(seen["query"], "full=1&b=2");
        assert_signed_for_the_backend("through nginx", &ok, &seen);
    }

    let forbidden = get(listen, "/admin/x").bearer(&plain).send().await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.error_code(), "forbidden");
    let api = get(listen, "/orders/7?full=1&b=2")
        .header("accept", "application/json")
        .send()
        .await;
    assert_eq!(api.status, 401, "API clients get 401, not a redirect");
    assert_eq!(api.error_code(), "unauthenticated");
    assert_eq!(api.header("content-type"), Some("application/json"));
    let browser = get(listen, "/orders/7?full=1&b=2")
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await;
    assert_eq!(browser.status, 302);
    assert_eq!(
        browser.header("location"),
        Some("/auth/login?return_to=%2Forders%2F7%3Ffull%3D1%26b%3D2"),
        "return_to keeps the whole query"
    );
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

/// One request of the comparison, sent alike to the gateway and to nginx.
struct Case {
    label: &'static str,
    method: &'static str,
    target: &'static str,
    headers: Vec<(String, String)>,
    body: &'static str,
}

impl Case {
    fn new(label: &'static str, method: &'static str, target: &'static str) -> Case {
        Case {
            label,
            method,
            target,
            headers: vec![("host".into(), "app.example.com".into())],
            body: "",
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Case {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn bearer(self, token: &str) -> Case {
        self.header("authorization", format!("Bearer {token}"))
    }

    fn body(mut self, body: &'static str) -> Case {
        self.body = body;
        self
    }

    fn to(&self, addr: SocketAddr) -> Req {
        let mut r = req(self.method, addr, self.target).body(self.body);
        for (name, value) in &self.headers {
            r = r.header(name, value);
        }
        r
    }
}

/// The headers the backend received, minus what differs per request (the request id and the
/// signature, each checked on its own), with the documented difference made equal: nginx
/// sends no empty header, so an empty `X-User-Roles` is absent behind it.
fn comparable(seen: &serde_json::Value) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = seen["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    headers.remove("x-request-id");
    headers.remove("x-identity-signature");
    if headers.get("x-user-roles").is_some_and(String::is_empty) {
        headers.remove("x-user-roles");
    }
    headers
}

/// The example's promise, checked header by header: for the same requests, the backend gets
/// from nginx + `/auth/verify` what it gets from the gateway's own proxy (method, request
/// target, every header), and the client gets the same answer (status, error code,
/// `Location`). The only differences are the documented ones (see [`comparable`]).
#[tokio::test]
async fn nginx_gives_the_backend_what_the_gateway_gives_it() {
    let db = TestDb::new().await;
    let up = echo().await;
    let direct = signing(&db, up, false).await;
    let behind = signing(&db, up, true).await;
    let listen = free_port();
    let Some(_nginx) = Nginx::start(listen, behind.addr, up, &[]).await else {
        return;
    };
    user(&db, "ann@example.com", PASSWORD, &["admin", "billing"]).await;
    unverified_user(&db, "bob@example.com", PASSWORD, &[]).await;
    let ann = direct.login("ann@example.com", PASSWORD).await;
    let bob = direct.login("bob@example.com", PASSWORD).await;

    let mut spoofed = Case::new(
        "every gateway-owned name from the client",
        "GET",
        "/public/x",
    )
    .header("authorization", "Basic YTpi")
    .header("cookie", "theme=dark")
    .header("te", "trailers")
    .header("keep-alive", "timeout=5")
    .header("proxy-connection", "keep-alive")
    .header("proxy-authorization", "Basic YTpi")
    .header("trailer", "x-checksum")
    .header("http2-settings", "AAMAAABkAAQAAP__");
    for name in direct.gw.names.owned() {
        spoofed = spoofed
            .header(name, "spoofed")
            .header(&name.replace('-', "_"), "spoofed");
    }
    let cases = [
        Case::new("bearer, with other cookies", "GET", "/orders/7?full=1&b=2")
            .bearer(&ann)
            .header("cookie", "theme=dark; lang=en")
            .header("accept", "application/json")
            .header("user-agent", "compare/1"),
        Case::new("session cookie among others", "GET", "/orders/7?full=1&b=2").header(
            "cookie",
            format!("theme=dark; __Host-gw_session={ann}; lang=en"),
        ),
        Case::new("two Cookie headers", "GET", "/orders/8")
            .header("cookie", "a=1")
            .header("cookie", format!("__Host-gw_session={ann}; b=2")),
        Case::new("no roles, unverified address", "GET", "/x").bearer(&bob),
        spoofed,
        Case::new(
            "optional route with a session and spoofs",
            "GET",
            "/opt/o?x=1",
        )
        .bearer(&ann)
        .header("x-user-id", "root")
        .header("x-user-roles", "root")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-request-id", "chosen"),
        Case::new("optional route, anonymous", "GET", "/opt/o"),
        Case::new("POST with a body", "POST", "/admin/x")
            .bearer(&ann)
            .header("content-type", "application/json")
            .body("{\"a\":1}"),
        Case::new("strip_prefix", "GET", "/api/v1/items?x=1").bearer(&ann),
        Case::new("an encoded unreserved character", "GET", "/%61dmin/x").bearer(&ann),
        Case::new("runs of slashes", "GET", "/orders//7//x").bearer(&ann),
        Case::new("encodings kept", "GET", "/files/a%20b?q=%2F&r=%20").bearer(&ann),
        Case::new("API client without a session", "GET", "/x").header("accept", "application/json"),
        Case::new("browser without a session", "GET", "/orders/7?full=1&b=2")
            .header("accept", "text/html,application/xhtml+xml"),
        Case::new("HEAD navigation without a session", "HEAD", "/x?y=1")
            .header("accept", "text/html"),
        Case::new("form post without a session", "POST", "/x")
            .header("accept", "text/html")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=1"),
        Case::new("a bad token", "GET", "/x")
            .bearer("gw_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Case::new("a missing role", "GET", "/admin/x").bearer(&bob),
        Case::new("a method the route refuses", "DELETE", "/ro/x").bearer(&bob),
        Case::new("dot segments", "GET", "/public/../admin/x").bearer(&bob),
        Case::new("an encoded slash", "GET", "/public/..%2Fadmin").bearer(&bob),
        Case::new("the gateway's own API", "GET", "/auth/session").bearer(&ann),
        Case::new("the gateway's own API, upper case", "GET", "/AUTH/session").bearer(&ann),
        Case::new("the gateway's own page, mixed case", "GET", "/Auth/login")
            .header("accept", "text/html"),
        Case::new("/auth alone", "GET", "/auth"),
    ];
    for case in &cases {
        let label = case.label;
        let (a, b) = (
            case.to(direct.addr).send().await,
            case.to(listen).send().await,
        );
        assert_eq!(
            a.status, b.status,
            "{label}: gateway {} ({}), nginx {} ({})",
            a.status, a.body, b.status, b.body
        );
        let (seen_a, seen_b) = (received(&a), received(&b));
        assert_eq!(
            seen_a.is_some(),
            seen_b.is_some(),
            "{label}: reached the backend through one but not the other: {} / {}",
            a.body,
            b.body
        );
        if let (Some(seen_a), Some(seen_b)) = (&seen_a, &seen_b) {
            for key in ["method", "path", "query", "body_bytes"] {
                assert_eq!(seen_a[key], seen_b[key], "{label}: {key}");
            }
            assert_eq!(comparable(seen_a), comparable(seen_b), "{label}: headers");
            assert_signed_for_the_backend(label, &a, seen_a);
            assert_signed_for_the_backend(label, &b, seen_b);
            continue;
        }
        assert_eq!(
            a.header("location"),
            b.header("location"),
            "{label}: Location"
        );
        if a.status >= 400
            && case.method != "HEAD"
            && !case.target.to_ascii_lowercase().starts_with("/auth")
        {
            assert_eq!(a.error_code(), b.error_code(), "{label}: error code");
            assert_eq!(
                a.header("content-type"),
                b.header("content-type"),
                "{label}"
            );
            let all = |r: &Resp, name: &str| -> Vec<String> {
                r.headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or_default().to_string())
                    .collect()
            };
            for name in ["www-authenticate", "cache-control", "retry-after"] {
                assert_eq!(all(&a, name), all(&b, name), "{label}: {name}");
            }
            assert!(
                b.header("x-request-id").is_some(),
                "{label}: nginx's answer has no request id"
            );
        }
    }
}

/// If a spelling of the gateway's own paths ever slips past the example's `/auth` location
/// (the gateway changes what it takes as `/auth`), the check names no target and nginx sends
/// the request to the gateway, never to the backend.
#[tokio::test]
async fn paths_of_the_gateway_never_reach_the_backend_through_nginx() {
    let db = TestDb::new().await;
    let up = echo().await;
    let gw = signing(&db, up, true).await;
    let listen = free_port();
    let without_auth_location = [(
        "location ~* ^/auth(?:/|$) {",
        "location ~* ^/never(?:/|$) {",
    )];
    let Some(_nginx) = Nginx::start(listen, gw.addr, up, &without_auth_location).await else {
        return;
    };
    user(&db, "ann@example.com", PASSWORD, &[]).await;
    let token = gw.login("ann@example.com", PASSWORD).await;
    for target in ["/auth/session", "/AUTH/session", "/auth", "/auth/login"] {
        let r = get(listen, target).bearer(&token).send().await;
        assert!(
            received(&r).is_none(),
            "{target} reached the backend: {}",
            r.body
        );
    }
    let r = get(listen, "/auth/session").bearer(&token).send().await;
    assert_eq!(
        r.status, 401,
        "the gateway answered, without the session token: {}",
        r.body
    );
}

/// `server.public_url` must be nginx's own origin: a browser signing in through nginx sends
/// nginx's origin, which the gateway accepts only when it is its public URL.
#[tokio::test]
async fn public_url_must_be_the_origin_of_nginx() {
    let db = TestDb::new().await;
    let up = echo().await;
    let listen = free_port();
    let nginx_origin = format!("http://{listen}");
    let gw = TestGateway::builder(&db)
        .route("/", up, "required")
        .env("GATEWAY_SERVER__TRUSTED_PROXIES", "127.0.0.1")
        .env("GATEWAY_SERVER__PUBLIC_URL", &nginx_origin)
        .env("GATEWAY_SESSIONS__COOKIE_NAME", "gw_session")
        .start()
        .await;
    let Some(_nginx) = Nginx::start(listen, gw.addr, up, &[]).await else {
        return;
    };
    user(&db, "ann@example.com", PASSWORD, &[]).await;
    let login = |origin: String| {
        post_json(
            listen,
            "/auth/login",
            &serde_json::json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .header("origin", &origin)
    };
    let ok = login(nginx_origin.clone()).send().await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let set_cookie = ok.header("set-cookie").unwrap_or_default();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let page = get(listen, "/x").header("cookie", &cookie).send().await;
    assert_eq!(
        page.status, 200,
        "the cookie works through nginx: {}",
        page.body
    );
    let refused = login(format!("http://{}", gw.addr)).send().await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.error_code(), "cross_origin");
}
