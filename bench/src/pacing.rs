//! Telegram at conversation speed: users who answer the moment the bot's reply arrives, and
//! a check, over the whole run, that the channel stayed within the rates Telegram documents.
//!
//! Ten users, each in their own private chat, and one user in a group chat, play welcome-bot
//! in lockstep: "hi" (the name question), a name (greeting, first time, a tip), then "hi"
//! over and over (greeting, "We already spoke n times!"). The reply latency is from queueing
//! the update at the fake Bot API to the turn's first and last messages arriving there; the
//! fake's own latency (a `sendMessage` round trip on loopback, no botd) is measured in the
//! same run. Then every `sendMessage` the fake received is checked against the channel's
//! token buckets: over any stretch of time `t`, a chat got at most `4 + t/1 s` messages, a
//! group `4 + t/3 s` (20 a minute), the bot `30 + t·30/s`.

use crate::fakes;
use crate::load::{percentile, Client};
use crate::procs::{botd_command, fresh_data, write, Proc};
use crate::scenario::{is_greeting, ASK_NAME, FIRST_TIME};
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const PRIVATE_USERS: i64 = 10;
const GROUP_CHAT: i64 = -4_000_000_001;
const GROUP_USER: i64 = 4_000_000_002;
/// How long one turn's messages may take before the user counts it as lost.
const TURN_LIMIT: Duration = Duration::from_secs(30);
/// Arrival times at the fake are taken after a loopback hop: two sends can look this much
/// closer than they left botd.
const JITTER: Duration = Duration::from_millis(30);
const TIP: &str = "Try saying something like \"forget my name\"!";

/// A documented rate: `burst` at once, then one per `every`.
#[derive(Debug, Clone, Copy)]
struct Rate {
    burst: u32,
    every: Duration,
}

const PER_CHAT: Rate = Rate {
    burst: 4,
    every: Duration::from_secs(1),
};
const PER_GROUP: Rate = Rate {
    burst: 4,
    every: Duration::from_secs(3),
};
const PER_BOT: Rate = Rate {
    burst: 30,
    every: Duration::from_nanos(1_000_000_000 / 30),
};

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    pub users: usize,
    pub seconds: f64,
    pub turns: usize,
    pub lost_turns: usize,
    pub messages: usize,
    /// Update queued → the turn's first / last message at the fake, µs (sorted).
    pub first_us: Vec<u32>,
    pub last_us: Vec<u32>,
    /// The same for the turns within each chat's burst (its first two turns: 4 messages).
    pub burst_last_us: Vec<u32>,
    /// A `sendMessage` round trip to the fake alone, µs (sorted).
    pub fake_us: Vec<u32>,
    /// (what, sends, worst excess over the allowed count in any window, where)
    pub checks: Vec<(String, usize, i64, String)>,
}

/// Runs the section; `seconds` of lockstep play.
pub fn telegram_pace(botd: &Path, work: &Path, seconds: Duration) -> Result<Pace, String> {
    let api = fakes::fake_telegram()?;
    let mut pace = Pace {
        fake_us: fake_latency(api.server.port)?,
        ..Pace::default()
    };
    let data = fresh_data(&work.join("telegram-pace"))?;
    let base = format!("http://127.0.0.1:{}", api.server.port);
    write(
        &data,
        "bots/welcome-bot/config/channel-telegram.json",
        &json!({"enabled": true, "botToken": "123456:bench-token", "apiBase": base, "pollTimeout": "10s",
                "parseMode": "", "typingDelay": false})
        .to_string(),
    )?;
    let botd = Proc::start(botd_command(botd, &data))?;
    let start = Instant::now();
    while api.updates.polls.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    if api.updates.polls.load(Ordering::SeqCst) == 0 {
        return Err("botd never polled the fake Bot API".into());
    }
    // The fake's own calls above went to chat 0: the check leaves them out.
    let began = Instant::now();
    let until = began + seconds;
    let mut players: Vec<(i64, i64)> = (1..=PRIVATE_USERS)
        .map(|i| (3_000_000_000 + i, 3_000_000_000 + i))
        .collect();
    players.push((GROUP_CHAT, GROUP_USER));
    pace.users = players.len();
    let results: Vec<Result<Played, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = players
            .iter()
            .map(|&(chat, from)| {
                let api = &api;
                s.spawn(move || play(api, chat, from, until))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a player panicked".into())))
            .collect()
    });
    pace.seconds = began.elapsed().as_secs_f64();
    botd.stop();
    for r in results {
        let played = r?;
        pace.turns += played.turns;
        pace.lost_turns += played.lost;
        pace.first_us.extend(played.first_us);
        pace.last_us.extend(played.last_us);
        pace.burst_last_us.extend(played.burst_last_us);
    }
    for v in [
        &mut pace.first_us,
        &mut pace.last_us,
        &mut pace.burst_last_us,
    ] {
        v.sort_unstable();
    }
    let log: Vec<(String, Instant)> = api
        .inbox
        .log()
        .into_iter()
        .filter(|(to, at)| to != "0" && *at >= began)
        .collect();
    pace.messages = log.len();
    let mut by_chat: HashMap<&str, Vec<Instant>> = HashMap::new();
    for (to, at) in &log {
        by_chat.entry(to.as_str()).or_default().push(*at);
    }
    let (mut worst_chat, mut worst_chat_at, mut chat_sends) = (i64::MIN, String::new(), 0);
    for (chat, times) in &by_chat {
        let rate = if chat.starts_with('-') {
            PER_GROUP
        } else {
            PER_CHAT
        };
        let excess = worst_excess(times, rate);
        if chat.starts_with('-') {
            pace.checks.push((
                format!(
                    "group chat ({} per {:?} after a burst of {})",
                    1, rate.every, rate.burst
                ),
                times.len(),
                excess,
                chat.to_string(),
            ));
        } else {
            chat_sends += times.len();
            if excess > worst_chat {
                worst_chat = excess;
                worst_chat_at = chat.to_string();
            }
        }
    }
    pace.checks.insert(
        0,
        (
            format!(
                "each private chat (1 per {:?} after a burst of {})",
                PER_CHAT.every, PER_CHAT.burst
            ),
            chat_sends,
            worst_chat,
            worst_chat_at,
        ),
    );
    let all: Vec<Instant> = log.iter().map(|(_, at)| *at).collect();
    pace.checks.push((
        format!("the bot (30/s after a burst of {})", PER_BOT.burst),
        all.len(),
        worst_excess(&all, PER_BOT),
        "all chats".into(),
    ));
    Ok(pace)
}

/// What one lockstep user saw.
#[derive(Default)]
struct Played {
    turns: usize,
    lost: usize,
    first_us: Vec<u32>,
    last_us: Vec<u32>,
    burst_last_us: Vec<u32>,
}

fn micros(from: Instant, to: Instant) -> u32 {
    to.saturating_duration_since(from)
        .as_micros()
        .min(u32::MAX as u128) as u32
}

/// One user answering as soon as the turn's last message arrives, until `until`.
fn play(api: &fakes::FakeTelegram, chat: i64, from: i64, until: Instant) -> Result<Played, String> {
    let mut played = Played::default();
    let name = format!("Bea{}", from % 1000);
    let to = chat.to_string();
    let mut turn = 0usize;
    while Instant::now() < until {
        turn += 1;
        let (text, expected) = match turn {
            1 => ("hi".to_string(), 1),
            2 => (name.clone(), 3),
            _ => ("hi".to_string(), 2),
        };
        let sent = Instant::now();
        api.updates.push_text_from(chat, from, &text);
        let Some(got) = api.inbox.take(&to, expected, TURN_LIMIT) else {
            played.lost += 1;
            return Ok(played);
        };
        let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        let right = match turn {
            1 => texts == [ASK_NAME],
            2 => is_greeting(texts[0], &name) && texts[1] == FIRST_TIME && texts[2] == TIP,
            _ => is_greeting(texts[0], &name) && texts[1].starts_with("We already spoke"),
        };
        if !right {
            return Err(format!(
                "chat {chat}, turn {turn}: unexpected replies {texts:?}"
            ));
        }
        played.turns += 1;
        played.first_us.push(micros(sent, got[0].1));
        let last = micros(sent, got[expected - 1].1);
        played.last_us.push(last);
        if turn <= 2 {
            played.burst_last_us.push(last);
        }
    }
    Ok(played)
}

/// The most messages in any window beyond what `rate` allows there (`burst` plus one per
/// `every` of the window, the window widened by [`JITTER`]): ≤ 0 means the rate held.
fn worst_excess(times: &[Instant], rate: Rate) -> i64 {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut worst = i64::MIN;
    for i in 0..sorted.len() {
        for j in i..sorted.len() {
            let span = sorted[j].duration_since(sorted[i]) + JITTER;
            let allowed = i64::from(rate.burst) + (span.as_nanos() / rate.every.as_nanos()) as i64;
            let count = (j - i + 1) as i64;
            worst = worst.max(count - allowed);
        }
    }
    worst
}

/// `sendMessage` round trips to the fake alone, over one keep-alive connection.
fn fake_latency(port: u16) -> Result<Vec<u32>, String> {
    let mut client = Client::new(port);
    let body = br#"{"chat_id":0,"text":"floor"}"#;
    let mut samples = Vec::new();
    for _ in 0..500 {
        let start = Instant::now();
        let answer = client.post(
            "/bot123456:bench-token/sendMessage",
            &[("Content-Type", "application/json")],
            body,
        )?;
        if answer.status != 200 {
            return Err(format!("the fake answered {}", answer.status));
        }
        samples.push(micros(start, Instant::now()));
    }
    samples.sort_unstable();
    Ok(samples)
}

fn ms(sorted: &[u32], p: f64) -> f64 {
    f64::from(percentile(sorted, p)) / 1000.0
}

/// The section of bench/RESULTS.md.
pub fn render(p: &Pace) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "## Telegram at conversation speed (lockstep users)\n");
    let _ = writeln!(
        m,
        "{} users ({} in their own private chat, 1 in a group) play welcome-bot for {:.0} s, each answering the moment the turn's last message reaches the fake Bot API: \"hi\", a name, then \"hi\" again and again. {} turns, {} messages ({:.1}/s), {} turn(s) lost.\n",
        p.users,
        p.users - 1,
        p.seconds,
        p.turns,
        p.messages,
        p.messages as f64 / p.seconds.max(1e-9),
        p.lost_turns
    );
    let _ = writeln!(m, "| latency | p50 ms | p99 ms |");
    let _ = writeln!(m, "|---|---:|---:|");
    let rows = [
        (
            "the fake Bot API alone (`sendMessage` round trip, no botd)",
            &p.fake_us,
        ),
        ("update → the turn's first message", &p.first_us),
        (
            "update → the turn's last message, a chat's first two turns (4 messages: its burst)",
            &p.burst_last_us,
        ),
        ("update → the turn's last message, every turn", &p.last_us),
    ];
    for (what, v) in rows {
        let _ = writeln!(m, "| {what} | {:.2} | {:.2} |", ms(v, 50.0), ms(v, 99.0));
    }
    let _ = writeln!(
        m,
        "\nRates at the fake Bot API over the whole run (every `sendMessage` counted; over any stretch of time t a chat may get its burst plus t/1 s, a group its burst plus t/3 s, the bot 30 plus 30·t/s; arrival times widened by {} ms of loopback jitter):\n",
        JITTER.as_millis()
    );
    let _ = writeln!(
        m,
        "| who | messages | worst window: messages beyond the allowed count | verdict |"
    );
    let _ = writeln!(m, "|---|---:|---:|---|");
    for (who, sends, excess, at) in &p.checks {
        let verdict = if *excess <= 0 {
            "within the limit".to_string()
        } else {
            format!("**over** ({at})")
        };
        let _ = writeln!(m, "| {who} | {sends} | {excess} | {verdict} |");
    }
    let _ = writeln!(
        m,
        "\nA chat's first turns go at once (its burst); after it a user who answers instantly waits for Telegram's sustained rate of about one message a second per chat (20 a minute in a group), which the channel keeps over the whole run: the every-turn latency is that rate, not botd.\n"
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_counts_the_worst_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A burst of 4, then one a second: within the limit.
        let ok = [at(0), at(1), at(2), at(3), at(1003), at(2003)];
        assert!(worst_excess(&ok, PER_CHAT) <= 0);
        // Six at once: two too many.
        let over: Vec<Instant> = (0..6).map(at).collect();
        assert_eq!(worst_excess(&over, PER_CHAT), 2);
    }
}
