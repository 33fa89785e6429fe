//! The admin listener (plain HTTP, loopback by default): `/healthz` (the process runs),
//! `/readyz` (not shutting down, the database answers within `database.pool_wait_timeout`, and
//! its schema is the expected one) and `/metrics` (Prometheus text format).

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::app::Gateway;
use crate::body::{Body, full};
use crate::health;
use crate::readiness::Readiness;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide metrics recorder once; later calls reuse it.
pub(crate) fn install_metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets(&buckets)
            .expect("static bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only this handle"
            );
        }
        handle
    })
}

/// Serves the admin endpoints until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, gw: Arc<Gateway>, readiness: Arc<Readiness>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (gw, readiness) = (gw.clone(), readiness.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(gw.clone(), readiness.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn not_ready(reason: &str) -> Response<Body> {
    let mut resp = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {reason}\n"),
        "text/plain",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

async fn respond(
    gw: Arc<Gateway>,
    readiness: Arc<Readiness>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" if readiness.is_leaving() => not_ready("shutting down"),
        "/readyz" => match health::probe(
            gw.sessions.pool(),
            gw.sessions.health(),
            gw.config.database.pool_wait_timeout,
        )
        .await
        {
            Ok(()) => text(StatusCode::OK, "ready\n".into(), "text/plain"),
            Err(e) => not_ready(&e.to_string()),
        },
        "/metrics" => {
            record_gauges(&gw).await;
            text(
                StatusCode::OK,
                install_metrics().render(),
                "text/plain; version=0.0.4",
            )
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    })
}

async fn record_gauges(gw: &Gateway) {
    let pool = gw.sessions.pool().status();
    metrics::gauge!("gateway_db_pool_connections", "state" => "in_use")
        .set((pool.size.saturating_sub(pool.available)) as f64);
    metrics::gauge!("gateway_db_pool_connections", "state" => "idle").set(pool.available as f64);
    metrics::gauge!("gateway_db_pool_waiting").set(pool.waiting as f64);
    metrics::gauge!("gateway_session_cache_entries").set(gw.sessions.cached_entries().await as f64);
    metrics::gauge!("gateway_bcrypt_queue_depth").set(gw.hasher.depth() as f64);
}
