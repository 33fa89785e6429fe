//! Headless Chromium for the browser tests, driven over WebDriver: a chromedriver child on a
//! free loopback port (its whole process group killed on drop), a fantoccini client without
//! TLS, and a throwaway profile. [`Browser::launch`] answers `None` (after printing SKIPPED)
//! when Chromium is not installed, and panics instead under `CI`.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;

use super::smtp::free_port;

/// How long a page may take to reach an expected URL or show an element.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the browser comes from (`CHROMIUM` and `CHROMEDRIVER` override).
fn binaries() -> (PathBuf, PathBuf) {
    let pick = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    (
        pick("CHROMIUM", "/usr/bin/chromium"),
        pick("CHROMEDRIVER", "/usr/bin/chromedriver"),
    )
}

/// A chromedriver process group; killed, browsers included, on drop.
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads its own process group (see `start`), so this ends the
        // browsers it started too, even after a panic.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session.
pub struct Browser {
    pub client: Client,
    _profile: tempfile::TempDir,
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or `None` when either binary is
    /// missing outside CI.
    ///
    /// # Panics
    /// When Chromium is missing and `CI` is set, or when it does not start.
    pub async fn launch(test: &str) -> Option<Browser> {
        let (chromium, chromedriver) = binaries();
        let missing: Vec<&Path> = [chromium.as_path(), chromedriver.as_path()]
            .into_iter()
            .filter(|p| !p.exists())
            .collect();
        if !missing.is_empty() {
            let what =
                format!("{missing:?} not found (the Debian packages chromium and chromium-driver)");
            super::skip(test, &what);
            return None;
        }

        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()))
        };
        let driver = Driver { child };
        wait_for_port(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await;

        let profile = tempfile::tempdir().expect("profile dir");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1000,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("capabilities are an object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("{test}: no WebDriver session: {e}"));
        Some(Browser {
            client,
            _profile: profile,
            _driver: driver,
        })
    }

    /// Runs `scenario`, then always ends the browser session before passing on its panic.
    pub async fn run(self, scenario: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(scenario).catch_unwind().await;
        let _ = self.client.clone().close().await;
        drop(self);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

async fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the page's path (and query) is `expected`, returning the full URL.
pub async fn wait_for_path(client: &Client, expected: &str) -> url::Url {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let url = client.current_url().await.expect("current URL");
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        if path == expected {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "the browser stayed on {url}, expected {expected}; page: {}",
            client.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Types `text` into the element matching the CSS selector `css`.
pub async fn fill(client: &Client, css: &str, text: &str) {
    client
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

/// Clicks the element matching `css`.
pub async fn click(client: &Client, css: &str) {
    client
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The visible text of the page body; empty while a navigation replaces the page (the body
/// found can go stale before its text is read).
pub async fn body_text(client: &Client) -> String {
    match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Saves a PNG screenshot of the current page as `<target>/browser/<name>.png`.
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("browser");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let file = dir.join(format!("{name}.png"));
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(&file, png).expect("write screenshot");
    file
}
