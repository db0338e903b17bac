//! Assembles the running server: settings, store, engine, channels, HTTP, the maintenance
//! thread (janitor, bot reloads) and the graceful stop on SIGTERM/SIGINT.

use crate::channels::converse::Converse;
use crate::channels::messenger::Messenger;
use crate::channels::telegram::Telegram;
use crate::config::Settings;
use crate::engine::Engine;
use crate::http::{self, AppState, Route};
use crate::store::SqliteStore;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs botd on `data_dir` until SIGTERM or SIGINT. Returns the process exit code.
pub fn run(data_dir: &Path) -> i32 {
    // Watch for SIGTERM/SIGINT first, so a stop during start-up is graceful too.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            log::warn!("cannot watch signal {signal}: {e}");
        }
    }
    let settings = match Settings::load(data_dir) {
        Ok(s) => Arc::new(s),
        Err(problems) => {
            init_logging(None);
            for p in problems {
                log::error!("{p}");
            }
            return 1;
        }
    };
    init_logging(settings.env.get("RUST_LOG"));
    let started = Instant::now();
    let store = match SqliteStore::open(&data_dir.join("storage")) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    crate::channels::render::register_all();
    let (engine, problems) = Engine::new(settings.clone(), store);
    for p in &problems {
        log::warn!("{p}");
    }
    let engine = Arc::new(engine);
    if engine.bot_ids().is_empty() {
        log::warn!("no bot loaded from {}/bots", data_dir.display());
    }
    let mut routes: Vec<Arc<dyn Route>> = vec![Arc::new(Converse::new(engine.clone()))];
    let messenger = Messenger::start(engine.clone());
    if let Some(m) = &messenger {
        routes.extend(m.route());
        engine.set_proactive_sink("messenger", m.proactive_sink());
    }
    let state = Arc::new(AppState {
        engine: engine.clone(),
        started,
        routes,
    });
    let running = match http::serve(
        state,
        &settings.http.host,
        settings.http.port,
        settings.http.workers,
        settings.http.limits.clone(),
    ) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    log::info!(
        "botd {} listening on http://{} ({} workers), bots: {}",
        env!("CARGO_PKG_VERSION"),
        running.addr,
        settings.http.workers,
        engine.bot_ids().join(", ")
    );

    let telegram = Telegram::start(engine.clone());

    let maintenance = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || maintain(&engine, &stop))
    };
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    log::info!("stopping: finishing requests in flight");
    running.stop();
    if let Some(m) = &messenger {
        m.stop();
    }
    if let Some(telegram) = telegram {
        telegram.stop();
    }
    if let Ok(handle) = maintenance {
        let _ = handle.join();
    }
    log::info!("stopped");
    0
}

/// The janitor every `dialog.janitorInterval`, a session sweep every ten minutes, and a check
/// for edited bot files every two seconds.
fn maintain(engine: &Engine, stop: &AtomicBool) {
    let janitor_every = engine
        .settings()
        .dialog
        .janitor_interval
        .max(Duration::from_millis(100));
    let sweep_every = Duration::from_secs(600);
    let reload_every = Duration::from_secs(2);
    let (mut last_janitor, mut last_reload) = (Instant::now(), Instant::now());
    let mut last_sweep: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        if last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
            engine.sweep_sessions();
            last_sweep = Some(Instant::now());
        }
        if last_janitor.elapsed() >= janitor_every {
            engine.janitor_tick();
            last_janitor = Instant::now();
        }
        if last_reload.elapsed() >= reload_every {
            for p in engine.reload_changed() {
                log::warn!("{p}");
            }
            last_reload = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Logging to stderr; `RUST_LOG` (process environment or data/.env) chooses the level.
pub fn init_logging(filter: Option<&str>) {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        // ureq logs every request URL at debug level, and Graph and Bot API URLs carry
        // access tokens: its debug lines never show, whatever RUST_LOG says.
        .filter_module("ureq", log::LevelFilter::Info)
        .format_timestamp_millis()
        .try_init();
}
