//! Operations: `/health`, `/metrics`, `/openapi.json`, fallbacks, and the middleware every route goes through
//! (metrics, panic guard, API key, concurrency limit).
use std::any::Any;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::{ApiError, Family};
use crate::state::{AppState, SlotState};

/// 200 when every model has settled and at least one serves; 503 while loading or when none could load.
pub async fn health(State(state): State<AppState>) -> Response {
    let models: Vec<Value> = state
        .slots()
        .iter()
        .map(|slot| match slot.state() {
            SlotState::Ready(_) => json!({ "name": slot.name(), "status": "ready" }),
            SlotState::Loading => json!({ "name": slot.name(), "status": "loading" }),
            SlotState::Failed(reason) => {
                json!({ "name": slot.name(), "status": "failed", "error": reason })
            }
        })
        .collect();
    let status = state.overall_status();
    let code = if matches!(status, "ok" | "degraded") { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "status": status, "models": models }))).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics().render(state.uptime_seconds()),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

pub async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {method} {}", uri.path()))
        .render(Family::of_path(uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
        .render(Family::of_path(uri.path()))
}

pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!("handler panicked: {what}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error while answering this request")
        .render(Family::Ollama)
}

/// Counts every request by route and status; a request whose client went away is counted as 499.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let mut guard = Tracked { state: state.clone(), route, t0: Instant::now(), status: 499 };
    state.metrics().in_flight.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    guard.status = resp.status().as_u16();
    resp
}

struct Tracked {
    state: AppState,
    route: String,
    t0: Instant,
    status: u16,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let m = self.state.metrics();
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
        m.record_request(&self.route, self.status, self.t0.elapsed().as_secs_f64());
    }
}

/// One access-log line per request (target `access`): method, path, status, latency.
pub async fn access_log(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        target: "access",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        ms = (t0.elapsed().as_secs_f64() * 1e5).round() / 100.0,
        "request"
    );
    resp
}

/// Paths open without an API key and outside the concurrency limit (the /docs page is static; its calls need the key).
fn is_open(method: &Method, path: &str) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    path == "/health" || (read && (path == "/" || path == "/docs" || path.starts_with("/docs/")))
}

/// API key check, the concurrency limit (429 beyond `--max-concurrent-requests`) and the in-flight body budget
/// (`--max-inflight-bytes`), both before the body is read.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let open = is_open(req.method(), &path);
    let family = Family::of_path(&path);
    if let Some(key) = &state.config().api_key {
        if !open && !authorized(req.headers(), key) {
            let mut resp =
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong API key: send `Authorization: Bearer <key>`")
                    .code("invalid_api_key")
                    .render(family);
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    if open || path == "/metrics" {
        return next.run(req).await;
    }
    let Ok(_permit) = state.limiter().clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many concurrent requests (limit {}, --max-concurrent-requests); retry shortly",
                state.config().max_concurrent_requests
            ),
        )
        .code("rate_limit_exceeded")
        .render(family);
    };
    // A body's size before it is read: its Content-Length (a larger one than --max-body-bytes is refused while
    // reading), or --max-body-bytes when it is chunked.
    let config = state.config();
    let bytes = usize::try_from(axum::body::HttpBody::size_hint(req.body()).exact().unwrap_or(u64::MAX))
        .unwrap_or(usize::MAX)
        .min(config.max_body_bytes);
    let budget = config.max_inflight_bytes;
    if budget > 0 && bytes > budget {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a request body of {bytes} bytes can never fit the in-flight budget of {budget} bytes \
                 (--max-inflight-bytes); split the request"
            ),
        )
        .code("body_too_large")
        .render(family);
    }
    let Some(_admitted) = state.admit(bytes) else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the server holds too many request bytes to take {bytes} more (limit {budget}, \
                 --max-inflight-bytes); retry shortly"
            ),
        )
        .code("rate_limit_exceeded")
        .render(family);
    };
    next.run(req).await
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer.or(x_api_key).is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
