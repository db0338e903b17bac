//! Routing: the server's own routes (`/status`, module schemas, bot media) and the routes
//! channels register (Converse, the Messenger webhook).

use super::Reply;
use crate::config::schemas;
use crate::engine::Engine;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// A channel's HTTP entry point.
pub trait Route: Send + Sync {
    /// Answers the request when `path` (without the query) is this route's; `None` otherwise.
    fn handle(&self, request: &mut tiny_http::Request, path: &str) -> Option<Reply>;
}

/// What every request handler can reach.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub started: Instant,
    pub routes: Vec<Arc<dyn Route>>,
}

pub fn route(state: &AppState, request: &mut tiny_http::Request) -> Reply {
    let url = request.url().to_string();
    let path = url.split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    if method == tiny_http::Method::Options {
        return Reply::bytes(204, "text/plain", Vec::new())
            .with_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            .with_header(
                "Access-Control-Allow-Headers",
                "Content-Type, Authorization, X-BP-ExternalAuth",
            );
    }
    if method == tiny_http::Method::Get {
        if path == "/status" {
            let engine = &state.engine;
            return Reply::json(
                200,
                &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"),
                        "uptimeSeconds": state.started.elapsed().as_secs(), "bots": engine.bot_ids()}),
            );
        }
        if let Some(module) = path
            .strip_prefix("/assets/modules/")
            .and_then(|r| r.strip_suffix("/config.schema.json"))
        {
            return match schemas::schema(module) {
                Some(schema) => Reply::json(200, &schema),
                None => Reply::not_found(&format!("no module \"{module}\"")),
            };
        }
        let segments: Vec<&str> = path.split('/').collect();
        if let ["", "api", "v1", "bots", bot_id, "media", file] = segments.as_slice() {
            return media(&state.engine, bot_id, file);
        }
    }
    for r in &state.routes {
        if let Some(reply) = r.handle(request, &path) {
            return reply;
        }
    }
    Reply::not_found(&format!("{} {path}", method.as_str()))
}

/// `GET /api/v1/bots/{botId}/media/{file}`: a file of `data/bots/<id>/media/`, nothing else.
fn media(engine: &Engine, bot_id: &str, file: &str) -> Reply {
    let file = super::percent_decode(file, false).unwrap_or_default();
    let safe = !file.is_empty()
        && !file.starts_with('.')
        && !file.contains(['/', '\\', '\0'])
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
    let path = dir.join(&file);
    // Refuse symlinks that lead out of the media folder.
    let inside = match (dir.canonicalize(), path.canonicalize()) {
        (Ok(d), Ok(p)) => p.starts_with(d),
        _ => false,
    };
    match std::fs::read(&path) {
        Ok(bytes) if inside => Reply::bytes(200, content_type(&file), bytes)
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
