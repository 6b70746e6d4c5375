//! The run page: a web page the process holding the learner serves while it trains, with
//! live curves, the latest recorded episodes played back step by step with what was paid,
//! and the label bank as a table. Its HTML, script and style are compiled into the binary
//! (no build step, nothing fetched from elsewhere); its data comes as JSON from `/api/…`.
//! With a `[transport]` token every request must carry it (`Authorization: Bearer`, or
//! `?token=` in the address the browser opens, which the page passes on).

pub mod bench;
pub mod data;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use data::{MetCounts, ModelCache, Order};
use oni_annotator::{Core, LabelBank};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `[page]`: the run page, served by the process that holds the learner (`oni run`, `oni
/// learner`). It shows the run's curves, its recorded episodes and its label bank. With
/// `transport.token` set it answers only requests that carry the token (open it with
/// `?token=<token>`). It is plain HTTP: keep it on loopback, or reach it through an SSH
/// tunnel or a TLS proxy.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PageConfig {
    /// Whether the process that holds the learner serves the page.
    pub mode: oni_proto::Switch,
    /// Address the page listens on (`host:port`; port 0 picks a free one). With `mode =
    /// "auto"`, a port already in use gives way to a free one on the same host, and the
    /// address is printed either way.
    pub listen: String,
}

impl Default for PageConfig {
    fn default() -> Self {
        PageConfig { mode: oni_proto::Switch::Auto, listen: "127.0.0.1:8070".into() }
    }
}

/// Where the page reads what it shows.
pub struct Sources {
    pub name: String,
    pub env: String,
    pub run_dir: PathBuf,
    /// The recordings' directory, where this process records.
    pub recordings: Option<PathBuf>,
    /// The label bank and reward model of the annotator in this process, or why the page
    /// has none.
    pub labels: Result<LabelSource, String>,
    /// Captions met and paid over the run (filled as `metrics.jsonl` rows are written).
    pub met: Arc<MetCounts>,
    pub token: Option<String>,
}

impl Sources {
    /// What a run's page shows: its name, env, run directory and token from the config, with
    /// what this process holds of recordings and labels.
    pub fn of_run(
        p: &crate::roles::Prepared,
        recordings: Option<PathBuf>,
        labels: Result<LabelSource, String>,
        met: Arc<MetCounts>,
    ) -> Self {
        Sources {
            name: p.cfg.name.clone(),
            env: p.cfg.env.name.clone(),
            run_dir: p.run_dir.clone(),
            recordings,
            labels,
            met,
            token: p.cfg.transport.token().map(str::to_string),
        }
    }
}

/// The served reward model's version and snapshot bytes, once there is one.
pub type Served = Box<dyn Fn() -> Option<(u64, Arc<Vec<u8>>)> + Send + Sync>;

/// The label table's data: a bank and the reward model being served.
pub struct LabelSource {
    pub bank: Arc<dyn LabelBank>,
    pub served: Served,
}

impl LabelSource {
    pub fn of(core: Arc<Core>) -> Self {
        LabelSource {
            bank: core.bank().clone(),
            served: Box::new(move || core.reward_model_since(0).map(|p| (p.version, p.bytes))),
        }
    }
}

struct Page {
    src: Sources,
    models: ModelCache,
    /// The cookie that carries the token for the page's own requests (its script and
    /// style), named per port so runs on one host do not overwrite each other's.
    cookie: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("config key `page.listen`: {0:?} is not a host:port address")]
    BadAddress(String),
    #[error("config key `page.listen`: cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// Binds the page's address: with `give_way`, a port in use gives way to a free one.
pub async fn bind(cfg: &PageConfig, give_way: bool) -> Result<tokio::net::TcpListener, PageError> {
    let addr: SocketAddr = tokio::net::lookup_host(&cfg.listen)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| PageError::BadAddress(cfg.listen.clone()))?;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if give_way && e.kind() == std::io::ErrorKind::AddrInUse => {
            let free = SocketAddr::new(addr.ip(), 0);
            tracing::warn!("page.listen {addr} is in use; the run page takes a free port instead");
            tokio::net::TcpListener::bind(free)
                .await
                .map_err(|source| PageError::Bind { addr: free.to_string(), source })
        }
        Err(source) => Err(PageError::Bind { addr: addr.to_string(), source }),
    }
}

/// Serves the page on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, src: Sources, stop: CancellationToken) -> std::io::Result<()> {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let page = Arc::new(Page { src, models: ModelCache::default(), cookie: format!("oni_page_token_{port}") });
    let app = router(page);
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

fn router(page: Arc<Page>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/page.js", get(|| async { asset("text/javascript; charset=utf-8", include_str!("assets/page.js")) }))
        .route("/page.css", get(|| async { asset("text/css; charset=utf-8", include_str!("assets/page.css")) }))
        .route("/api/run", get(run))
        .route("/api/metrics", get(metrics))
        .route("/api/recordings", get(recordings))
        .route("/api/recordings/{name}", get(episode))
        .route("/api/labels", get(labels))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such page: the run page is at /") })
        .layer(axum::middleware::from_fn_with_state(page.clone(), authorise))
        .with_state(page)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", include_str!("assets/index.html"))
}

/// A refusal as plain text a user can act on.
fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], why.into()).into_response()
}

fn query_token(query: Option<&str>) -> Option<String> {
    let q = query?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok()?.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v)
}

fn cookie_token(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// With a token set, a request without it is refused. It may come as `Authorization:
/// Bearer`, as `?token=` (the address a user opens; the answer then sets a cookie so the
/// page's script and style load too), or as that cookie.
async fn authorise(State(page): State<Arc<Page>>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let Some(expected) = page.src.token.as_deref().filter(|t| !t.is_empty()) else { return next.run(req).await };
    let from_query = query_token(req.uri().query());
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| from_query.clone())
        .or_else(|| cookie_token(&headers, &page.cookie));
    match presented {
        Some(t) if oni_proto::transport::secret_eq(t.as_bytes(), expected.as_bytes()) => {
            let mut res = next.run(req).await;
            // only a token the user typed in the address is put in the cookie: it is
            // URL-safe there, and a header's token stays with the client that sent it
            if let Some(q) = from_query.filter(|q| q.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',')) {
                let cookie = format!("{}={q}; Path=/; HttpOnly; SameSite=Strict", page.cookie);
                if let Ok(v) = header::HeaderValue::from_str(&cookie) {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            res
        }
        Some(_) => refuse(StatusCode::UNAUTHORIZED, "wrong token: open the page with ?token=<the run's transport.token>"),
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "this run page needs the run's token: open it with ?token=<transport.token> (or send Authorization: Bearer)",
        ),
    }
}

#[derive(Serialize)]
struct RunInfo<'a> {
    name: &'a str,
    env: &'a str,
    run_dir: String,
    recording: bool,
    annotator: bool,
}

async fn run(State(page): State<Arc<Page>>) -> Json<serde_json::Value> {
    let s = &page.src;
    Json(
        serde_json::to_value(RunInfo {
            name: &s.name,
            env: &s.env,
            run_dir: s.run_dir.display().to_string(),
            recording: s.recordings.is_some(),
            annotator: s.labels.is_ok(),
        })
        .expect("plain data"),
    )
}

#[derive(Deserialize)]
struct Offset {
    #[serde(default)]
    from: u64,
}

async fn metrics(State(page): State<Arc<Page>>, Query(q): Query<Offset>) -> Response {
    let path = page.src.run_dir.join("metrics.jsonl");
    match tokio::task::spawn_blocking(move || data::metrics_rows(&path, q.from)).await {
        Ok(Ok((rows, next))) => Json(serde_json::json!({ "rows": rows, "next": next })).into_response(),
        Ok(Err(e)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("metrics.jsonl: {e}")),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn recordings(State(page): State<Arc<Page>>) -> Response {
    let Some(dir) = page.src.recordings.clone() else {
        return Json(serde_json::json!({ "recordings": [], "skipped": [], "note": "this process records no episodes (record.mode)" }))
            .into_response();
    };
    let (listed, skipped) = tokio::task::spawn_blocking(move || data::recordings(&dir)).await.unwrap_or_default();
    Json(serde_json::json!({ "recordings": listed, "skipped": skipped })).into_response()
}

#[derive(Deserialize)]
struct Frames {
    #[serde(default)]
    from: usize,
    #[serde(default = "default_frames")]
    count: usize,
}

fn default_frames() -> usize {
    500
}

/// Most frames one request returns.
const MAX_FRAMES: usize = 2000;

async fn episode(State(page): State<Arc<Page>>, UrlPath(name): UrlPath<String>, Query(q): Query<Frames>) -> Response {
    let Some(dir) = page.src.recordings.clone() else {
        return refuse(StatusCode::NOT_FOUND, "this process records no episodes (record.mode)");
    };
    let count = q.count.min(MAX_FRAMES);
    match tokio::task::spawn_blocking(move || data::episode(&dir, &name, q.from, count)).await {
        Ok(Ok(e)) => Json(e).into_response(),
        Ok(Err(e @ data::EpisodeError::NotFound(_))) => refuse(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct LabelQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    q: String,
    #[serde(default)]
    order: Order,
}

fn default_limit() -> usize {
    50
}

/// Most rows of the label table one request returns.
const MAX_ROWS: usize = 500;

async fn labels(State(page): State<Arc<Page>>, Query(q): Query<LabelQuery>) -> Response {
    if let Err(why) = &page.src.labels {
        return Json(
            serde_json::json!({ "total": 0, "matched": 0, "offset": 0, "rows": [], "rm_version": 0, "note": why }),
        )
        .into_response();
    }
    let page2 = page.clone();
    let done = tokio::task::spawn_blocking(move || {
        let src = page2.src.labels.as_ref().expect("checked above");
        let all = src.bank.all()?;
        let model = page2.models.get((src.served)());
        Ok::<_, oni_annotator::BankError>(data::label_page(
            all,
            &page2.src.met,
            model.as_deref(),
            &q.q,
            q.order,
            q.offset,
            q.limit.clamp(1, MAX_ROWS),
        ))
    })
    .await;
    match done {
        Ok(Ok(p)) => Json(p).into_response(),
        Ok(Err(e)) => refuse(StatusCode::SERVICE_UNAVAILABLE, format!("the label bank cannot be read: {e}")),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
