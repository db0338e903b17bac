//! The engine without HTTP: turns per second on one thread, NLU time per utterance, and the
//! cost of one durable write.

use crate::scenario::{is_greeting, ASK_NAME, BOT};
use botd::config::Settings;
use botd::engine::{Engine, Event};
use botd::store::{
    Batch, Committed, Namespace, Op, Queue, QueuedItem, SqliteStore, Store, StoreError, StoreStats,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A store in memory, to see the engine's own cost. Queues are not kept (the engine bench
/// plays turns only).
#[derive(Default)]
pub struct MemStore {
    map: Mutex<HashMap<(Namespace, String, String), Value>>,
}

impl Store for MemStore {
    fn get(&self, ns: Namespace, bot: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(&(ns, bot.to_string(), key.to_string())).cloned())
    }
    fn scan(
        &self,
        ns: Namespace,
        bot: &str,
        visit: &mut dyn FnMut(&str, Value),
    ) -> Result<(), StoreError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for ((n, b, k), v) in map.iter() {
            if *n == ns && b == bot {
                visit(k, v.clone());
            }
        }
        Ok(())
    }
    fn commit(&self, batch: Batch) -> Result<Committed, StoreError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids = Vec::with_capacity(batch.ops.len());
        for op in batch.ops {
            match op {
                Op::Put {
                    ns,
                    bot,
                    key,
                    value,
                } => {
                    map.insert((ns, bot, key), value);
                }
                Op::Delete { ns, bot, key } | Op::Quarantine { ns, bot, key, .. } => {
                    map.remove(&(ns, bot, key));
                }
                _ => {}
            }
            ids.push(None);
        }
        Ok(Committed::new(ids))
    }
    fn pending(&self, _queue: Queue) -> Result<Vec<QueuedItem>, StoreError> {
        Ok(Vec::new())
    }
    fn stats(&self) -> StoreStats {
        // Nothing here is durable: no commit, no fsync.
        StoreStats::default()
    }
    fn describe(&self) -> String {
        "memory (the engine bench)".into()
    }
}

pub fn engine_on(data: &Path, store: Arc<dyn Store>) -> Result<Engine, String> {
    let settings = Settings::load(data).map_err(|p| format!("{p:?}"))?;
    botd::channels::render::register_all();
    let (engine, _problems) = Engine::new(Arc::new(settings), store);
    if engine.bot(BOT).is_none() {
        return Err(format!("{BOT} did not load"));
    }
    Ok(engine)
}

/// The real store of `data` (SQLite under `data/storage/`).
pub fn disk_store(data: &Path) -> Arc<dyn Store> {
    match SqliteStore::open(&data.join("storage")) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("bench: {e}; measuring on memory instead");
            Arc::new(MemStore::default())
        }
    }
}

fn texts(responses: &[Value]) -> Vec<&str> {
    responses
        .iter()
        .filter(|p| p["type"] == "text")
        .filter_map(|p| p["text"].as_str())
        .collect()
}

/// Whole welcome-bot conversations (two turns each) on this thread for `limit`; turns/s.
pub fn turns_per_second(engine: &Engine, tag: &str, limit: Duration) -> Result<(f64, u64), String> {
    let start = Instant::now();
    let mut turns = 0u64;
    let mut n = 0u64;
    while start.elapsed() < limit {
        n += 1;
        let user = format!("{tag}-{n}");
        let name = format!("Eve{n}");
        let hi = Event::new(
            BOT,
            "api",
            "text",
            &user,
            json!({"type": "text", "text": "hi"}),
        );
        let out = engine.turn(hi, None).map_err(|e| e.to_string())?;
        if !texts(&out.responses).contains(&ASK_NAME) {
            return Err(format!("engine: \"hi\" answered {:?}", out.responses));
        }
        let named = Event::new(
            BOT,
            "api",
            "text",
            &user,
            json!({"type": "text", "text": name}),
        );
        let out = engine.turn(named, None).map_err(|e| e.to_string())?;
        if !texts(&out.responses)
            .first()
            .is_some_and(|g| is_greeting(g, &name))
        {
            return Err(format!("engine: \"{name}\" answered {:?}", out.responses));
        }
        turns += 2;
    }
    Ok((turns as f64 / start.elapsed().as_secs_f64(), turns))
}

/// Median µs of intent classification and of the whole `understand`, over varied utterances.
pub fn nlu_us(engine: &Engine, limit: Duration) -> (f64, f64) {
    let Some(bot) = engine.bot(BOT) else {
        return (0.0, 0.0);
    };
    let utterances = [
        "hi",
        "hello there",
        "forget my name",
        "Ann",
        "good morning bot",
        "please forget who I am",
        "what is the weather like tomorrow in Paris",
        "my name is Jean-Pierre and I live at 12 rue de la Paix",
        "hey robot",
        "can you remind me to call mum at 5pm on Friday",
    ];
    let contexts = vec!["global".to_string()];
    let mut classify = Vec::new();
    let mut understand = Vec::new();
    let start = Instant::now();
    let half = limit / 2;
    while start.elapsed() < half {
        for u in &utterances {
            let t = Instant::now();
            let r = bot.nlu.predict_intents(u, &contexts);
            classify.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(r);
        }
    }
    while start.elapsed() < limit {
        for u in &utterances {
            let t = Instant::now();
            let r = bot.nlu.understand(u, &contexts, 0);
            understand.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(r);
        }
    }
    (median(&mut classify), median(&mut understand))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median and p99 ms of one durable SQLite commit of a session-sized record in a fresh
/// store under `dir`, the way a turn commits when it finishes alone (no group to share with).
pub fn durable_write_ms(dir: &Path, count: usize) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let Ok(store) = SqliteStore::open(dir) else {
        return (0.0, 0.0);
    };
    let record = json!({"context": {}, "temp": {}, "session": {"lastMessages": []}});
    let mut times = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..count {
        if Instant::now() > deadline {
            break;
        }
        let mut batch = Batch::new();
        batch.put(
            Namespace::Sessions,
            BOT,
            &format!("api::bench{}", i % 50),
            record.clone(),
        );
        let t = Instant::now();
        if store.commit(batch).is_err() {
            break;
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    let p99 = {
        let mut s = times.clone();
        s.sort_by(f64::total_cmp);
        s.get(((s.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    (median(&mut times), p99)
}

/// The bot of the flow rows: one node that computes `temp.n` from the message and says it,
/// with the native `builtin/setVariable` or with a small JavaScript action.
pub const FLOW_BOT_PLAIN: &str = "bench-flow-native";
pub const FLOW_BOT_ACTION: &str = "bench-flow-action";

/// Writes both flow bots into `data/bots/`.
pub fn write_flow_bots(data: &Path) -> Result<(), String> {
    let compute = [
        (
            FLOW_BOT_PLAIN,
            r#"builtin/setVariable {"type": "temp", "name": "n", "value": "{{event.payload.text}}"}"#,
        ),
        (FLOW_BOT_ACTION, r#"double {"n": "{{event.payload.text}}"}"#),
    ];
    for (id, call) in compute {
        let dir = format!("bots/{id}");
        let config = json!({"id": id, "name": id, "version": "1.0.0", "defaultLanguage": "en",
            "languages": ["en"]});
        crate::procs::write(data, &format!("{dir}/bot.config.json"), &config.to_string())?;
        let flow = json!({"version": "0.0.1", "flow": "main.flow.json", "startNode": "entry",
            "catchAll": {"onReceive": [], "next": []},
            "nodes": [{"id": "node-entry", "name": "entry",
                "onEnter": [call, "say #builtin_text {\"text\": \"n = {{temp.n}}\"}"],
                "onReceive": null, "next": [{"condition": "true", "node": "END"}]}]});
        crate::procs::write(
            data,
            &format!("{dir}/flows/main.flow.json"),
            &flow.to_string(),
        )?;
        crate::procs::write(
            data,
            &format!("{dir}/flows/main.ui.json"),
            r#"{"nodes":[]}"#,
        )?;
    }
    crate::procs::write(
        data,
        &format!("bots/{FLOW_BOT_ACTION}/actions/double.js"),
        "temp.n = Number(args.n) * 2\n",
    )
}

/// One-turn conversations with flow bot `bot` on this thread for `limit`; turns/s. Each
/// turn's answer is checked (the action doubles the number, setVariable keeps it).
pub fn flow_turns_per_second(engine: &Engine, bot: &str, limit: Duration) -> Result<f64, String> {
    let start = Instant::now();
    let mut turns = 0u64;
    while start.elapsed() < limit {
        turns += 1;
        let n = turns % 1000;
        let event = Event::new(
            bot,
            "api",
            "text",
            &format!("flow-{}", turns % 64),
            json!({"type": "text", "text": n.to_string()}),
        );
        let out = engine.turn(event, None).map_err(|e| e.to_string())?;
        let expected = if bot == FLOW_BOT_ACTION { n * 2 } else { n };
        if texts(&out.responses) != [format!("n = {expected}")] {
            return Err(format!("engine: {bot} answered {:?}", out.responses));
        }
    }
    Ok(turns as f64 / start.elapsed().as_secs_f64())
}
