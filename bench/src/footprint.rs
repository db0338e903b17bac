//! Footprint and scale: start to first answer, resident memory idle and after many users, and
//! Converse latency with few and with many stored conversations.

use crate::load::{closed_loop, Client, LoadResult, Recorder};
use crate::procs::{botd_command, fresh_data, Proc};
use crate::scenario::{conversation, name_for, Target, BOT, HI_BODY};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Starts botd on `data` and returns it with the time from spawn to the first answered
/// Converse request (a real turn: "hi" from a new user).
pub fn start_and_first_answer(
    bin: &Path,
    data: &Path,
    user: &str,
) -> Result<(Proc, Duration), String> {
    let proc = Proc::start(botd_command(bin, data))?;
    let mut client = Client::new(proc.port);
    let path = format!("/api/v1/bots/{BOT}/converse/{user}");
    let limit = Instant::now() + Duration::from_secs(20);
    loop {
        match client.post(&path, &[("Content-Type", "application/json")], HI_BODY) {
            Ok(a) if a.status == 200 => {
                let took = proc.spawned.elapsed();
                return Ok((proc, took));
            }
            _ if Instant::now() > limit => {
                return Err(format!("no answer within 20 s: {}", proc.log()))
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Median and maximum time from start to first answer over `runs` starts on one data folder.
pub fn start_times(bin: &Path, work: &Path, runs: usize) -> Result<(Duration, Duration), String> {
    let data = fresh_data(&work.join("start"))?;
    let mut times = Vec::new();
    for r in 0..runs {
        let (proc, d) = start_and_first_answer(bin, &data, &format!("start-{r}"))?;
        times.push(d);
        proc.stop();
    }
    times.sort();
    Ok((
        times[times.len() / 2],
        *times.last().unwrap_or(&Duration::ZERO),
    ))
}

/// Plays `count` new conversations with `threads` parallel clients (at most `limit`); returns
/// how many completed, how many failed, and the time taken.
pub fn seed(
    port: u16,
    tag: &str,
    count: usize,
    threads: usize,
    limit: Duration,
) -> (usize, u64, Duration, Option<String>) {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let errors = AtomicU64::new(0);
    let first_error = std::sync::Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for i in 0..threads {
            let (next, done, errors, first_error) = (&next, &done, &errors, &first_error);
            s.spawn(move || {
                let mut client = Client::new(port);
                // Latencies are not wanted here: a window that never opens.
                let mut rec = Recorder::discard();
                while start.elapsed() < limit {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= count {
                        break;
                    }
                    let user = format!("{tag}-{k}");
                    match conversation(
                        &mut client,
                        Target::Botd,
                        &user,
                        &name_for(i, k as u64),
                        &mut rec,
                    ) {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    (
        done.load(Ordering::SeqCst),
        errors.load(Ordering::SeqCst),
        start.elapsed(),
        first_error.into_inner().unwrap_or_else(|e| e.into_inner()),
    )
}

/// Converse latency of new conversations with `users` closed-loop users.
pub fn converse_load(
    port: u16,
    tag: &str,
    users: usize,
    warmup: Duration,
    measure: Duration,
) -> LoadResult {
    closed_loop(users, warmup, measure, |i| {
        let mut client = Client::new(port);
        let mut n = 0u64;
        move |rec: &mut Recorder| {
            n += 1;
            let user = format!("{tag}-{i}-{n}");
            conversation(&mut client, Target::Botd, &user, &name_for(i, n), rec)
        }
    })
}
