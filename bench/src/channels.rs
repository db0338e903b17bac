//! Messenger and Telegram pipelines through fake Graph / Bot API servers: webhook deliveries
//! (or polled updates) accepted per second, and the time from a user's message to the bot's
//! reply arriving at the fake API. A channel botd does not have yet is reported as such.
//!
//! Messenger also reports the store's own count of fsyncs per message (read from `/status`
//! before and after the 16-user run), the same run with one user, and how long a single
//! webhook call carrying 1,000 and 10,000 events takes to be acknowledged.

use crate::fakes::{self, Inbox, PAGE_ID};
use crate::load::{closed_loop, percentile, Client, LoadResult, Recorder};
use crate::procs::{
    botd_command, context_switches, cpu_seconds, fresh_data, steal_seconds_per_cpu, write, Proc,
};
use crate::scenario::{is_greeting, ASK_NAME};
use hmac::{Hmac, Mac};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const WEBHOOK: &str = "/api/v1/bots/___/mod/channel-messenger/webhook";
const APP_SECRET: &str = "bench-app-secret";
const REPLY_LIMIT: Duration = Duration::from_secs(10);
/// One new Telegram chat every 50 ms: 20 replies/s, under the channel's 30/s pacing.
pub const TELEGRAM_PACE: Duration = Duration::from_millis(50);

/// One pipeline's numbers, or why there are none.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub unavailable: Option<String>,
    /// Deliveries the channel accepted per second under a burst.
    pub accepted_per_s: f64,
    /// Burst size and how fast its replies were all sent.
    pub burst: u64,
    pub replies_per_s: f64,
    pub replies_missing: u64,
    /// Closed loop: message → reply at the fake API.
    pub e2e: LoadResult,
    /// How the end-to-end load was made.
    pub e2e_load: String,
    /// p99 of the webhook's own answer (Messenger) during the burst, ms.
    pub accept_p99_ms: f64,
    /// The same closed loop with one user (Messenger).
    pub e2e_one: Option<LoadResult>,
    /// Replies/s of each round, (1 user, all users), when the two loops were run in turns.
    pub e2e_rounds: Vec<(f64, f64)>,
    /// The store's counters over the end-to-end run: (messages, commits, fsyncs).
    pub store_per_message: Option<(u64, u64, u64)>,
    /// CPU time (user + system) per message, in microseconds, over the 1-user and the
    /// all-users runs (Messenger).
    pub cpu_per_message: Option<CpuPerMessage>,
    /// One webhook call with this many events: seconds until its `200`.
    pub batch_ack: Vec<(usize, f64)>,
}

/// CPU time per message (µs) of botd and of the bench itself (load generator and fake API),
/// over the 1-user runs and over the all-users runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuPerMessage {
    pub botd_one: f64,
    pub botd_all: f64,
    pub bench_one: f64,
    pub bench_all: f64,
    /// botd's context switches per message (its threads sleeping and being woken).
    pub switches_one: f64,
    pub switches_all: f64,
    /// The share of the cores' time the hypervisor gave to other machines (steal), over the
    /// 1-user and the all-users runs: CPU figures and ratios drift with it.
    pub steal_one: f64,
    pub steal_all: f64,
}

/// CPU seconds of botd and of this process, added up over runs, with the messages they made.
#[derive(Default)]
struct CpuTally {
    botd: f64,
    bench: f64,
    switches: u64,
    messages: u64,
    steal: f64,
    wall: f64,
}

impl CpuTally {
    /// Runs `run`, which returns how many messages it made, and adds what it cost.
    fn measure(&mut self, botd: u32, run: impl FnOnce() -> u64) {
        let me = std::process::id();
        let (botd_before, bench_before) = (cpu_seconds(botd), cpu_seconds(me));
        let switches_before = context_switches(botd);
        let (steal_before, started) = (steal_seconds_per_cpu(), Instant::now());
        self.messages += run();
        self.wall += started.elapsed().as_secs_f64();
        self.steal += steal_seconds_per_cpu() - steal_before;
        self.botd += cpu_seconds(botd) - botd_before;
        self.bench += cpu_seconds(me) - bench_before;
        self.switches += context_switches(botd).saturating_sub(switches_before);
    }

    /// botd's and the bench's CPU µs, and botd's context switches, per message.
    fn per_message(&self) -> (f64, f64, f64) {
        let n = self.messages.max(1) as f64;
        (
            self.botd * 1e6 / n,
            self.bench * 1e6 / n,
            self.switches as f64 / n,
        )
    }

    /// The share of the cores' time stolen by the hypervisor while the runs went on.
    fn steal_share(&self) -> f64 {
        self.steal / self.wall.max(1e-9)
    }
}

/// The store's counters from botd's `/status`.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct StoreCounters {
    pub commits: u64,
    pub fsyncs: u64,
}

#[derive(serde::Deserialize)]
struct Status {
    store: StoreCounters,
}

pub fn store_counters(port: u16) -> Result<StoreCounters, String> {
    let answer = Client::new(port).request("GET", "/status", &[], b"")?;
    serde_json::from_slice::<Status>(&answer.body)
        .map(|s| s.store)
        .map_err(|e| format!("/status has no store counters: {e}"))
}

pub struct Settings<'a> {
    pub botd: &'a Path,
    pub work: &'a Path,
    pub users: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub burst: Duration,
    /// Run botd on this PostgreSQL database instead of SQLite.
    pub database_url: Option<String>,
    pub telegram_burst: u64,
}

fn sign(body: &[u8]) -> (String, String) {
    let mut m1 = <Hmac<sha1::Sha1> as Mac>::new_from_slice(APP_SECRET.as_bytes()).expect("any key");
    m1.update(body);
    let mut m2 =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(APP_SECRET.as_bytes()).expect("any key");
    m2.update(body);
    (
        format!("sha1={}", hex::encode(m1.finalize().into_bytes())),
        format!("sha256={}", hex::encode(m2.finalize().into_bytes())),
    )
}

fn event(sender: &str, text: &str, seq: u64, now: i64) -> serde_json::Value {
    json!({"sender": {"id": sender}, "recipient": {"id": PAGE_ID}, "timestamp": now,
           "message": {"mid": format!("m_{sender}_{seq}"), "text": text}})
}

fn delivery(sender: &str, text: &str, seq: u64) -> Vec<u8> {
    let now = botd::engine::event::now_ms();
    json!({"object": "page", "entry": [{"id": PAGE_ID, "time": now,
           "messaging": [event(sender, text, seq, now)]}]})
    .to_string()
    .into_bytes()
}

fn post_delivery(client: &mut Client, sender: &str, text: &str, seq: u64) -> Result<u16, String> {
    post_signed(client, &delivery(sender, text, seq))
}

/// One webhook call with `count` first messages of new conversations; seconds to its `200`.
fn batch_ack(port: u16, tag: &str, count: usize) -> Result<f64, String> {
    let now = botd::engine::event::now_ms();
    let events: Vec<_> = (0..count)
        .map(|k| event(&format!("{tag}{k:09}"), "hi", 1, now))
        .collect();
    let body =
        json!({"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": events}]})
            .to_string()
            .into_bytes();
    let mut client = Client::new(port);
    let start = Instant::now();
    match post_signed(&mut client, &body)? {
        200 => Ok(start.elapsed().as_secs_f64()),
        other => Err(format!("a {count}-event webhook call answered {other}")),
    }
}

fn post_signed(client: &mut Client, body: &[u8]) -> Result<u16, String> {
    let (s1, s256) = sign(body);
    let a = client.post(
        WEBHOOK,
        &[
            ("Content-Type", "application/json"),
            ("X-Hub-Signature", &s1),
            ("X-Hub-Signature-256", &s256),
        ],
        body,
    )?;
    Ok(a.status)
}

/// Waits for `to`'s reply to "hi", then its greeting after `name`; records both latencies.
fn await_reply(
    inbox: &Inbox,
    to: &str,
    name: Option<&str>,
    sent: Instant,
    rec: &mut Recorder,
) -> Result<(), String> {
    let arrived = match name {
        None => inbox.wait_for(to, |t| t == ASK_NAME, REPLY_LIMIT),
        Some(n) => inbox.wait_for(to, |t| is_greeting(t, n), REPLY_LIMIT),
    };
    match arrived {
        Some(at) => {
            rec.sample(sent, at);
            Ok(())
        }
        None => Err(format!("{to}: no reply within {REPLY_LIMIT:?}")),
    }
}

/// How many times the 1-user and the all-users loops run, in turns.
const ROUNDS: u32 = 3;

/// The run with the median rate.
fn median_run(mut runs: Vec<LoadResult>) -> LoadResult {
    runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

pub fn messenger(s: &Settings) -> Pipeline {
    match run_messenger(s) {
        Ok(p) => p,
        Err(e) => Pipeline {
            unavailable: Some(e),
            ..Default::default()
        },
    }
}

fn run_messenger(s: &Settings) -> Result<Pipeline, String> {
    let graph = fakes::fake_graph()?;
    let data = fresh_data(&s.work.join("messenger"))?;
    let base = format!("http://127.0.0.1:{}", graph.server.port);
    write(
        &data,
        "global/config/channel-messenger.json",
        &json!({"appSecret": APP_SECRET, "verifyToken": "bench-verify", "graphApiBase": base,
                "graphApiVersion": "v23.0", "typingDelay": false, "maxBodySize": "8mb"})
        .to_string(),
    )?;
    write(
        &data,
        "bots/welcome-bot/config/channel-messenger.json",
        &json!({"enabled": true, "accessToken": "bench-page-token", "typingDelay": false})
            .to_string(),
    )?;
    let mut cmd = botd_command(s.botd, &data);
    if let Some(url) = &s.database_url {
        cmd.env("DATABASE_URL", url);
    }
    let botd = Proc::start(cmd)?;
    // The channel learns its page id from GET /me; give it a moment.
    let start = Instant::now();
    while graph.me_calls.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut probe = Client::new(botd.port);
    // 503 until the channel has read the page's answer to GET /me: asked again, bounded.
    let mut status = post_delivery(&mut probe, "9000000001", "hi", 0)?;
    while status == 503 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        status = post_delivery(&mut probe, "9000000001", "hi", 0)?;
    }
    if status == 404 {
        return Err("not available (channel not built)".into());
    }
    if status != 200 {
        return Err(format!(
            "not available (webhook answered {status}): {}",
            botd.log()
        ));
    }
    if graph
        .inbox
        .wait_for("9000000001", |t| t == ASK_NAME, REPLY_LIMIT)
        .is_none()
    {
        return Err(format!(
            "not available (no reply reached the fake Graph API within {REPLY_LIMIT:?})"
        ));
    }

    let posted = AtomicU64::new(0);
    let run = |users: usize, tag: u32| {
        closed_loop(users, s.warmup, s.measure, |i| {
            let mut client = Client::new(botd.port);
            let inbox = graph.inbox.clone();
            let posted = &posted;
            let mut n = 0u64;
            move |rec: &mut Recorder| {
                n += 1;
                let sender = format!("{tag}{i:03}{n:09}");
                posted.fetch_add(1, Ordering::SeqCst);
                let name = crate::scenario::name_for(i, n);
                let sent = Instant::now();
                match post_delivery(&mut client, &sender, "hi", 1)? {
                    200 => {}
                    other => return Err(format!("webhook answered {other}")),
                }
                await_reply(&inbox, &sender, None, sent, rec)?;
                let sent = Instant::now();
                posted.fetch_add(1, Ordering::SeqCst);
                match post_delivery(&mut client, &sender, &name, 2)? {
                    200 => {}
                    other => return Err(format!("webhook answered {other}")),
                }
                await_reply(&inbox, &sender, Some(&name), sent, rec)
            }
        })
    };
    // One user and all users in turns, ROUNDS times: the ratio of the medians does not
    // depend on which of the two ran while the machine (a shared VM) was slower.
    let (mut ones, mut alls) = (Vec::new(), Vec::new());
    let (mut messages, mut commits, mut fsyncs) = (0, 0, 0);
    let (mut cpu_one, mut cpu_all) = (CpuTally::default(), CpuTally::default());
    for round in 0..ROUNDS {
        cpu_one.measure(botd.pid(), || {
            posted.store(0, Ordering::SeqCst);
            ones.push(run(1, 30 + round));
            posted.load(Ordering::SeqCst)
        });
        // Let the last removals land, then count what the all-users run costs the store.
        std::thread::sleep(Duration::from_millis(200));
        let before_run = store_counters(botd.port)?;
        cpu_all.measure(botd.pid(), || {
            posted.store(0, Ordering::SeqCst);
            alls.push(run(s.users, 10 + round));
            std::thread::sleep(Duration::from_millis(200));
            posted.load(Ordering::SeqCst)
        });
        let after_run = store_counters(botd.port)?;
        messages += posted.load(Ordering::SeqCst);
        commits += after_run.commits - before_run.commits;
        fsyncs += after_run.fsyncs - before_run.fsyncs;
    }
    let e2e_rounds = ones
        .iter()
        .zip(&alls)
        .map(|(one, all)| (one.per_second, all.per_second))
        .collect();
    let e2e_one = median_run(ones);
    let e2e = median_run(alls);
    let store_per_message = Some((messages, commits, fsyncs));
    let ((botd_one, bench_one, switches_one), (botd_all, bench_all, switches_all)) =
        (cpu_one.per_message(), cpu_all.per_message());
    let cpu_per_message = Some(CpuPerMessage {
        botd_one,
        botd_all,
        bench_one,
        bench_all,
        switches_one,
        switches_all,
        steal_one: cpu_one.steal_share(),
        steal_all: cpu_all.steal_share(),
    });

    // Burst: every user posts new conversations' first messages as fast as they are accepted.
    graph.inbox.clear();
    let before = graph.inbox.total.load(Ordering::SeqCst);
    let accepted = AtomicU64::new(0);
    let burst_start = Instant::now();
    let mut accept_lat: Vec<u32> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..s.users)
            .map(|i| {
                let accepted = &accepted;
                sc.spawn(move || {
                    let mut client = Client::new(botd.port);
                    let mut lat = Vec::new();
                    let mut n = 0u64;
                    while burst_start.elapsed() < s.burst {
                        n += 1;
                        let t = Instant::now();
                        if let Ok(200) =
                            post_delivery(&mut client, &format!("2{i:03}{n:09}"), "hi", 1)
                        {
                            lat.push(t.elapsed().as_micros() as u32);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let burst_secs = burst_start.elapsed().as_secs_f64();
    let sent = accepted.load(Ordering::SeqCst);
    let drain_limit = Instant::now() + Duration::from_secs(60);
    while graph.inbox.total.load(Ordering::SeqCst) - before < sent && Instant::now() < drain_limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    let replied = graph.inbox.total.load(Ordering::SeqCst) - before;
    let last = graph.inbox.last().unwrap_or(burst_start);
    accept_lat.sort_unstable();
    // Large webhook calls (Facebook batches events under load): the acknowledgement only.
    let mut batches = Vec::new();
    for (tag, count) in [("4", 1_000), ("5", 10_000)] {
        batches.push((count, batch_ack(botd.port, tag, count)?));
        if count == 10_000 {
            // The last one is not drained: botd stops with it queued, as it may.
            break;
        }
        let drained = graph.inbox.total.load(Ordering::SeqCst) + count as u64;
        let limit = Instant::now() + Duration::from_secs(60);
        while graph.inbox.total.load(Ordering::SeqCst) < drained && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    botd.stop();
    Ok(Pipeline {
        unavailable: None,
        accepted_per_s: sent as f64 / burst_secs,
        burst: sent,
        replies_per_s: replied as f64 / last.duration_since(burst_start).as_secs_f64().max(1e-9),
        replies_missing: sent.saturating_sub(replied),
        e2e,
        e2e_load: format!("{} users, whole conversations", s.users),
        accept_p99_ms: percentile(&accept_lat, 99.0) as f64 / 1000.0,
        e2e_one: Some(e2e_one),
        e2e_rounds,
        store_per_message,
        cpu_per_message,
        batch_ack: batches,
    })
}

pub fn telegram(s: &Settings) -> Pipeline {
    match run_telegram(s) {
        Ok(p) => p,
        Err(e) => Pipeline {
            unavailable: Some(e),
            ..Default::default()
        },
    }
}

fn run_telegram(s: &Settings) -> Result<Pipeline, String> {
    let api = fakes::fake_telegram()?;
    let data = fresh_data(&s.work.join("telegram"))?;
    let base = format!("http://127.0.0.1:{}", api.server.port);
    write(
        &data,
        "bots/welcome-bot/config/channel-telegram.json",
        &json!({"enabled": true, "botToken": "123456:bench-token", "apiBase": base, "pollTimeout": "10s",
                "parseMode": "", "typingDelay": false})
        .to_string(),
    )?;
    let botd = Proc::start(botd_command(s.botd, &data))?;
    let start = Instant::now();
    while api.updates.polls.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    if api.updates.polls.load(Ordering::SeqCst) == 0 {
        return Err("not available (channel not built)".into());
    }
    api.updates.push_text(9_000_000_001, "hi");
    if api
        .inbox
        .wait_for("9000000001", |t| t == ASK_NAME, REPLY_LIMIT)
        .is_none()
    {
        return Err(format!(
            "not available (no reply reached the fake Bot API within {REPLY_LIMIT:?})"
        ));
    }

    // The channel paces replies as Telegram documents (30 messages/s per bot, 1/s per chat),
    // so the pipeline's own latency is measured below that pace: one new chat every 50 ms
    // says "hi" and waits for the name question.
    let e2e = closed_loop(1, s.warmup, s.measure, |_| {
        let (updates, inbox) = (api.updates.clone(), api.inbox.clone());
        let mut n = 0i64;
        move |rec: &mut Recorder| {
            n += 1;
            let chat = 1_000_000_000 + n;
            let sent = Instant::now();
            updates.push_text(chat, "hi");
            let result = await_reply(&inbox, &chat.to_string(), None, sent, rec);
            let next = sent + TELEGRAM_PACE;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            result
        }
    });

    // Burst: a backlog of new conversations' first messages, all waiting at once.
    api.inbox.clear();
    let before = api.inbox.total.load(Ordering::SeqCst);
    let burst_start = Instant::now();
    let mut last_id = 0;
    for k in 0..s.telegram_burst as i64 {
        last_id = api.updates.push_text(2_000_000_000 + k, "hi");
    }
    let limit = burst_start + Duration::from_secs(60);
    while api.updates.confirmed() < last_id && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(2));
    }
    let accepted_secs = burst_start.elapsed().as_secs_f64();
    while api.inbox.total.load(Ordering::SeqCst) - before < s.telegram_burst
        && Instant::now() < limit
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let replied = api.inbox.total.load(Ordering::SeqCst) - before;
    let last = api.inbox.last().unwrap_or(burst_start);
    botd.stop();
    Ok(Pipeline {
        unavailable: None,
        accepted_per_s: s.telegram_burst as f64 / accepted_secs,
        burst: s.telegram_burst,
        replies_per_s: replied as f64 / last.duration_since(burst_start).as_secs_f64().max(1e-9),
        replies_missing: s.telegram_burst.saturating_sub(replied),
        e2e,
        e2e_load: format!(
            "a new chat says \"hi\" every {} ms",
            TELEGRAM_PACE.as_millis()
        ),
        accept_p99_ms: 0.0,
        ..Default::default()
    })
}
