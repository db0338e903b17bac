//! Routing: the server's own routes (`/status`, module schemas, bot media) and the routes
//! channels register (Converse, the Messenger webhook).

use super::{Admission, Handler, Head, Method, Reply, Request};
use crate::config::schemas;
use crate::engine::Engine;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// A channel's HTTP entry point.
pub trait Route: Send + Sync {
    /// `None` when the request is not this route's; otherwise how it is taken, decided from
    /// the head alone (quick: it runs on the connection's thread).
    fn admit(&self, head: &Head) -> Option<Admission>;
    /// Answers a request this route admitted.
    fn handle(&self, request: &Request) -> Reply;
}

/// A route that a live reload can replace (a restarted channel's webhook) or take away.
/// While a restart holds it, requests for it wait rather than reach a channel that stopped.
#[derive(Default)]
pub struct RouteSlot {
    route: std::sync::RwLock<Option<Arc<dyn Route>>>,
}

impl RouteSlot {
    /// Holds the slot for a restart: requests for the route wait until the guard is dropped,
    /// and what is written into the guard is the route from then on.
    pub fn hold(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<dyn Route>>> {
        self.route.write().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> Option<Arc<dyn Route>> {
        self.route.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Route for RouteSlot {
    fn admit(&self, head: &Head) -> Option<Admission> {
        self.current()?.admit(head)
    }

    /// Holds the slot while handling, so a restart waits for what the old route accepted.
    fn handle(&self, request: &Request) -> Reply {
        match &*self.route.read().unwrap_or_else(|e| e.into_inner()) {
            Some(route) => route.handle(request),
            None => not_found(&request.head),
        }
    }
}

/// What every request handler can reach.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub started: Instant,
    pub routes: Vec<Arc<dyn Route>>,
}

/// The server's own routes take no body.
const NO_BODY: Admission = Admission::Body { limit: 0 };

impl Handler for AppState {
    fn admit(&self, head: &Head) -> Admission {
        // The preflight, `/status` and the schemas cost nothing: they are answered here, on the
        // connection's thread, so a health check never queues behind turns.
        if head.method == Method::Options {
            return Admission::Answer(preflight());
        }
        match own_route(head) {
            Some(Own::Status) => return Admission::Answer(status(self)),
            Some(Own::Schema(module)) => return Admission::Answer(schema(module)),
            Some(Own::Media(..)) => return NO_BODY,
            None => {}
        }
        self.routes
            .iter()
            .find_map(|r| r.admit(head))
            .unwrap_or_else(|| Admission::Answer(not_found(head)))
    }

    fn handle(&self, request: &Request) -> Reply {
        route(self, request)
    }

    /// `*` unless `httpServer.allowedOrigins` lists origins; then the request's own origin
    /// when it is listed (nothing otherwise, so a browser refuses the answer to the page), and
    /// `Vary: Origin` always, so no cache hands one origin's answer to another.
    fn cors(&self, origin: Option<&str>) -> Vec<(String, String)> {
        let settings = self.engine.settings();
        let Some(allowed) = &settings.http.allowed_origins else {
            return vec![("Access-Control-Allow-Origin".into(), "*".into())];
        };
        let mut headers = vec![("Vary".to_string(), "Origin".to_string())];
        if let Some(origin) = origin.filter(|o| crate::config::access::origin_allowed(o, allowed)) {
            headers.push(("Access-Control-Allow-Origin".into(), origin.to_string()));
        }
        headers
    }
}

/// Answers one request (a function of its own, so `make bench`'s profile can count exactly what
/// runs inside routing).
#[inline(never)]
pub fn route(state: &AppState, request: &Request) -> Reply {
    let head = &request.head;
    if head.method == Method::Options {
        return preflight();
    }
    if let Some(own) = own_route(head) {
        return match own {
            Own::Status => status(state),
            Own::Schema(module) => schema(module),
            Own::Media(bot_id, file) => media(&state.engine, bot_id, file),
        };
    }
    for r in &state.routes {
        if r.admit(head).is_some() {
            return r.handle(request);
        }
    }
    not_found(head)
}

fn preflight() -> Reply {
    Reply::bytes(204, "text/plain", Vec::new())
        .with_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        .with_header(
            "Access-Control-Allow-Headers",
            "Content-Type, Authorization, X-BP-ExternalAuth, X-BP-Api-Key, Idempotency-Key",
        )
}

fn status(state: &AppState) -> Reply {
    Reply::json(
        200,
        &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"),
                "uptimeSeconds": state.started.elapsed().as_secs(), "bots": state.engine.bot_ids(),
                "store": state.engine.store().stats()}),
    )
}

fn schema(module: &str) -> Reply {
    match schemas::schema(module) {
        Some(schema) => Reply::json(200, &schema),
        None => Reply::not_found(&format!("no module \"{module}\"")),
    }
}

fn not_found(head: &Head) -> Reply {
    Reply::not_found(&format!("{} {}", head.method.as_str(), head.path()))
}

/// The routes the server answers itself (`HEAD` as `GET`).
enum Own<'h> {
    Status,
    Schema(&'h str),
    Media(&'h str, &'h str),
}

fn own_route(head: &Head) -> Option<Own<'_>> {
    if !matches!(head.method, Method::Get | Method::Head) {
        return None;
    }
    let path = head.path();
    if path == "/status" {
        return Some(Own::Status);
    }
    if let Some(module) = path
        .strip_prefix("/assets/modules/")
        .and_then(|r| r.strip_suffix("/config.schema.json"))
    {
        return Some(Own::Schema(module));
    }
    let mut segments = path.split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (
            Some(""),
            Some("api"),
            Some("v1"),
            Some("bots"),
            Some(bot),
            Some("media"),
            Some(file),
            None,
        ) => Some(Own::Media(bot, file)),
        _ => None,
    }
}

/// `GET /api/v1/bots/{botId}/media/{file}`: a file of `data/bots/<id>/media/`, nothing else.
fn media(engine: &Engine, bot_id: &str, file: &str) -> Reply {
    let file_name = super::percent_decode(file, false).unwrap_or_default();
    let safe = !file_name.is_empty()
        && !file_name.starts_with('.')
        && !file_name.contains(['/', '\\', '\0'])
        && crate::store::is_valid_bot_id(bot_id);
    if !safe {
        return Reply::not_found("media file");
    }
    let dir = engine
        .settings()
        .data_dir
        .join("bots")
        .join(bot_id)
        .join("media");
    let path = dir.join(&file_name);
    // Refuse symlinks that lead out of the media folder.
    let inside = match (dir.canonicalize(), path.canonicalize()) {
        (Ok(d), Ok(p)) => p.starts_with(d),
        _ => false,
    };
    if !inside {
        return Reply::not_found("media file");
    }
    // Streamed from disk by the connection: a large file never sits in memory whole.
    let opened = std::fs::File::open(&path).and_then(|f| Ok((f.metadata()?, f)));
    match opened {
        Ok((meta, file)) if meta.is_file() => Reply {
            status: 200,
            content_type: content_type(&file_name).into(),
            body: super::Body::File {
                file,
                len: meta.len(),
            },
            headers: Vec::new(),
        }
        .with_header("Cache-Control", "public, max-age=3600"),
        _ => Reply::not_found("media file"),
    }
}

fn content_type(file: &str) -> &'static str {
    let ext = file.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
