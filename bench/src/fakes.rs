//! Fake Graph API and Bot API servers on loopback: they answer what botd's channels call and
//! note when each reply text arrives, so the bench can time a message end to end.

use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Reply texts received per recipient, with their arrival time. A text wakes only the
/// threads waiting for its recipient: with one condition for all, every reply would wake all
/// 16 users' threads, and the load generator would spend on that what it measures.
#[derive(Default)]
pub struct Inbox {
    texts: Mutex<HashMap<String, VecDeque<(String, Instant)>>>,
    waiters: Mutex<HashMap<String, Arc<Condvar>>>,
    pub total: AtomicU64,
    last: Mutex<Option<Instant>>,
    /// Every text's recipient and arrival, in order, never taken (for the rate check).
    log: Mutex<Vec<(String, Instant)>>,
}

impl Inbox {
    fn push(&self, to: &str, text: &str) {
        let now = Instant::now();
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((to.to_string(), now));
        self.texts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(to.to_string())
            .or_default()
            .push_back((text.to_string(), now));
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        self.total.fetch_add(1, Ordering::SeqCst);
        if let Some(waiter) = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(to)
        {
            waiter.notify_all();
        }
    }

    /// The condition `to`'s texts wake (made for the first thread that waits for them).
    fn waiter(&self, to: &str) -> Arc<Condvar> {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(to.to_string())
            .or_default()
            .clone()
    }

    /// Waits (at most `limit`) for a text to `to` that `wanted` accepts; drops the texts before
    /// it and returns when it arrived.
    pub fn wait_for(
        &self,
        to: &str,
        wanted: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        let waiter = self.waiter(to);
        let mut texts = self.texts.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(queue) = texts.get_mut(to) {
                while let Some((text, at)) = queue.pop_front() {
                    if wanted(&text) {
                        if queue.is_empty() {
                            texts.remove(to);
                        }
                        return Some(at);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            texts = waiter
                .wait_timeout(texts, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits (at most `limit`) until `n` texts to `to` have arrived; takes and returns them.
    pub fn take(&self, to: &str, n: usize, limit: Duration) -> Option<Vec<(String, Instant)>> {
        let deadline = Instant::now() + limit;
        let waiter = self.waiter(to);
        let mut texts = self.texts.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if texts.get(to).is_some_and(|q| q.len() >= n) {
                let queue = texts.get_mut(to)?;
                let taken: Vec<_> = queue.drain(..n).collect();
                if queue.is_empty() {
                    texts.remove(to);
                }
                return Some(taken);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            texts = waiter
                .wait_timeout(texts, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Every text's recipient and arrival so far.
    pub fn log(&self) -> Vec<(String, Instant)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clear(&self) {
        self.texts.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// When the latest text arrived.
    pub fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A server on botd's HTTP layer at 127.0.0.1 answering with `handle` on `threads` workers
/// until dropped.
pub struct FakeServer {
    pub port: u16,
    running: Option<botd::http::Running>,
}

type Handle = dyn Fn(&str, &str, &str, &[u8]) -> Value + Send + Sync;

struct Answering(Arc<Handle>);

impl botd::http::Handler for Answering {
    fn admit(&self, _head: &botd::http::Head) -> botd::http::Admission {
        botd::http::Admission::Body { limit: 1 << 20 }
    }

    fn handle(&self, request: &botd::http::Request) -> botd::http::Reply {
        let url = request.url();
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let answer = (self.0)(request.method().as_str(), path, query, &request.body);
        botd::http::Reply::bytes(200, "application/json", answer.to_string().into_bytes())
    }
}

impl FakeServer {
    fn start(threads: usize, handle: Arc<Handle>) -> Result<FakeServer, String> {
        let running = botd::http::serve(
            Arc::new(Answering(handle)),
            "127.0.0.1",
            0,
            threads,
            botd::http::Limits::default(),
        )?;
        Ok(FakeServer {
            port: running.addr.port(),
            running: Some(running),
        })
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

pub const PAGE_ID: &str = "1000000000000001";

/// The Graph API as Messenger's channel uses it: `GET /{v}/me`, `POST /{v}/me/messages`, and
/// a success answer to anything else (profile settings).
pub struct FakeGraph {
    pub server: FakeServer,
    pub inbox: Arc<Inbox>,
    pub me_calls: Arc<AtomicU64>,
}

pub fn fake_graph() -> Result<FakeGraph, String> {
    let inbox = Arc::new(Inbox::default());
    let me_calls = Arc::new(AtomicU64::new(0));
    let handle: Arc<Handle> = {
        let (inbox, me_calls) = (inbox.clone(), me_calls.clone());
        Arc::new(move |method: &str, path: &str, _query: &str, body: &[u8]| {
            if method == "GET" && path.ends_with("/me") {
                me_calls.fetch_add(1, Ordering::SeqCst);
                return json!({"id": PAGE_ID, "name": "Bench Page"});
            }
            if path.ends_with("/me/messages") {
                let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let to = v["recipient"]["id"].as_str().unwrap_or("").to_string();
                if let Some(text) = v["message"]["text"].as_str() {
                    inbox.push(&to, text);
                }
                return json!({"recipient_id": to, "message_id": "m_bench"});
            }
            json!({"result": "success", "success": true})
        })
    };
    Ok(FakeGraph {
        server: FakeServer::start(8, handle)?,
        inbox,
        me_calls,
    })
}

/// The Bot API as Telegram's channel uses it: `getUpdates` long polling over a queue the bench
/// fills, `sendMessage` into the inbox, and `ok` to anything else.
pub struct FakeTelegram {
    pub server: FakeServer,
    pub inbox: Arc<Inbox>,
    pub updates: Arc<Updates>,
}

#[derive(Default)]
pub struct Updates {
    state: Mutex<UpdateState>,
    added: Condvar,
    pub polls: AtomicU64,
}

#[derive(Default)]
struct UpdateState {
    queue: VecDeque<Value>,
    next_id: i64,
    /// The highest update id botd has confirmed (by asking for a later offset).
    confirmed: i64,
}

impl Updates {
    /// Queues a text message from `chat` and returns its update id.
    pub fn push_text(&self, chat: i64, text: &str) -> i64 {
        self.push_text_from(chat, chat, text)
    }

    /// Queues a text message from user `from` in `chat` (a group when negative).
    pub fn push_text_from(&self, chat: i64, from: i64, text: &str) -> i64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.next_id += 1;
        let id = s.next_id;
        let date = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        s.queue.push_back(json!({"update_id": id, "message": {"message_id": id,
            "from": {"id": from, "is_bot": false, "first_name": "Bench", "language_code": "en"},
            "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }, "first_name": "Bench"},
            "date": date, "text": text}}));
        drop(s);
        self.added.notify_all();
        id
    }

    pub fn confirmed(&self) -> i64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .confirmed
    }

    fn get(&self, offset: i64, limit: usize, timeout: Duration) -> Vec<Value> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + timeout.min(Duration::from_secs(30));
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if offset > 0 {
            s.confirmed = s.confirmed.max(offset - 1);
            while s
                .queue
                .front()
                .and_then(|u| u["update_id"].as_i64())
                .is_some_and(|id| id < offset)
            {
                s.queue.pop_front();
            }
        }
        loop {
            if !s.queue.is_empty() {
                return s.queue.iter().take(limit).cloned().collect();
            }
            let now = Instant::now();
            if now >= deadline {
                return Vec::new();
            }
            s = self
                .added
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Parameters of a Bot API call: JSON body, form body or query string.
fn params(query: &str, body: &[u8]) -> Value {
    if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(body) {
        return v;
    }
    let mut out = serde_json::Map::new();
    let form = String::from_utf8_lossy(body);
    for pair in query
        .split('&')
        .chain(form.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        let value = v.parse::<i64>().map_or(Value::String(v), Value::from);
        out.insert(decode(k), value);
    }
    Value::Object(out)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

pub fn fake_telegram() -> Result<FakeTelegram, String> {
    let inbox = Arc::new(Inbox::default());
    let updates = Arc::new(Updates::default());
    let handle: Arc<Handle> = {
        let (inbox, updates) = (inbox.clone(), updates.clone());
        Arc::new(move |_method: &str, path: &str, query: &str, body: &[u8]| {
            let call = path.rsplit('/').next().unwrap_or("");
            let p = params(query, body);
            match call {
                "getUpdates" => {
                    let offset = as_i64(&p["offset"]).unwrap_or(0);
                    let limit = as_i64(&p["limit"]).unwrap_or(100).clamp(1, 100) as usize;
                    let timeout =
                        Duration::from_secs(as_i64(&p["timeout"]).unwrap_or(0).max(0) as u64);
                    json!({"ok": true, "result": updates.get(offset, limit, timeout)})
                }
                "sendMessage" => {
                    let chat = as_i64(&p["chat_id"])
                        .map(|c| c.to_string())
                        .unwrap_or_default();
                    let text = p["text"].as_str().unwrap_or("");
                    inbox.push(&chat, text);
                    json!({"ok": true, "result": {"message_id": 1, "date": 0, "text": text,
                        "chat": {"id": as_i64(&p["chat_id"]).unwrap_or(0), "type": "private"}}})
                }
                "getMe" => {
                    json!({"ok": true, "result": {"id": 42, "is_bot": true, "first_name": "Bench", "username": "bench_bot"}})
                }
                _ => json!({"ok": true, "result": true}),
            }
        })
    };
    Ok(FakeTelegram {
        // Long polls hold a thread each; the rest answer sendMessage and sendChatAction.
        server: FakeServer::start(12, handle)?,
        inbox,
        updates,
    })
}
