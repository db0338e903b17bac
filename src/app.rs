//! Assembles the running server: settings, store, engine, channels, HTTP, the maintenance
//! thread (janitor, bot reloads, live reloads on SIGHUP) and the graceful stop on
//! SIGTERM/SIGINT.
//!
//! A live reload (SIGHUP, `systemctl reload botd`) reads `.env`, `botpress.config.json` and the
//! module files again. A configuration with any problem is logged (file and field) and the
//! running one stays. Otherwise it replaces the running settings at once (Converse, limits,
//! origins, secrets, dialog), bots are loaded again when their defaults changed, and a channel
//! restarts only when its own module configuration changed — Telegram only for the bots whose
//! configuration changed, the other bots' long polls go on: its queues are in the store, so a
//! stop and a start lose nothing. The reload runs on the maintenance thread, so no janitor
//! reply is queued while a channel is between its stop and its start.

use crate::channels::converse::Converse;
use crate::channels::messenger::Messenger;
use crate::channels::proactive::{self, Proactive};
use crate::channels::telegram::Telegram;
use crate::config::Settings;
use crate::engine::Engine;
use crate::http::{self, AppState, Route, RouteSlot};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
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
    // SIGHUP asks for a live reload; caught from the start, so it never ends botd.
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()) {
        log::warn!("cannot watch SIGHUP (live reload): {e}");
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
    let store = match crate::store::open(&settings.env, &data_dir.join("storage")) {
        Ok(s) => s,
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
    engine.mount_all();
    let webhook = Arc::new(RouteSlot::default());
    let telegram_webhook = Arc::new(RouteSlot::default());
    let routes: Vec<Arc<dyn Route>> = vec![
        Arc::new(Converse::new(engine.clone())),
        Arc::new(Proactive::new(engine.clone())),
        webhook.clone(),
        telegram_webhook.clone(),
    ];
    let messenger = start_messenger(&engine, &webhook);
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
        "botd {} listening on http://{} ({} workers, {}), bots: {}",
        env!("CARGO_PKG_VERSION"),
        running.addr,
        settings.http.workers,
        engine.store().describe(),
        engine.bot_ids().join(", ")
    );

    let channels = Channels {
        telegram_config: telegram_config(&engine),
        messenger_config: messenger_config(&engine),
        telegram: start_telegram(&engine, &telegram_webhook),
        messenger,
        webhook,
        telegram_webhook,
    };
    let maintenance = {
        let (engine, stop, data_dir) = (engine.clone(), stop.clone(), data_dir.to_path_buf());
        std::thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || maintain(&engine, channels, &data_dir, &stop, &reload))
    };
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    log::info!("stopping: finishing requests in flight");
    running.stop();
    match maintenance.map(|handle| handle.join()) {
        Ok(Ok(channels)) => channels.stop(),
        _ => log::error!("the maintenance thread failed; channels stop with the process"),
    }
    engine.unmount_all();
    log::info!("stopped");
    0
}

/// The running channels, and the module configuration each was started with.
struct Channels {
    telegram: Option<Telegram>,
    messenger: Option<Messenger>,
    /// Where the Messenger webhook route is, so a restarted Messenger replaces it.
    webhook: Arc<RouteSlot>,
    /// Where the Telegram webhook route is (bots in webhook mode), likewise.
    telegram_webhook: Arc<RouteSlot>,
    telegram_config: ModuleConfigs,
    messenger_config: ModuleConfigs,
}

/// A channel's merged module configuration, globally (key `""`) and per loaded bot.
type ModuleConfigs = BTreeMap<String, Map<String, Value>>;

/// How long a Telegram restart waits for long polls to end: the longest poll Telegram allows
/// (50 s) and the call's own margin (15 s).
const TELEGRAM_RESTART_GRACE: Duration = Duration::from_secs(70);

impl Channels {
    fn stop(self) {
        if let Some(m) = &self.messenger {
            m.stop();
        }
        if let Some(telegram) = self.telegram {
            telegram.stop();
        }
    }
}

fn start_messenger(engine: &Arc<Engine>, webhook: &RouteSlot) -> Option<Messenger> {
    let messenger = Messenger::start(engine.clone());
    *webhook.hold() = messenger.as_ref().and_then(Messenger::route);
    messenger
}

/// Starts Telegram with its webhook route in place: the slot is held meanwhile, so an update
/// Telegram posts as soon as its webhook is set waits for the route instead of a 404.
fn start_telegram(engine: &Arc<Engine>, webhook: &RouteSlot) -> Option<Telegram> {
    let mut slot = webhook.hold();
    let telegram = Telegram::start(engine.clone());
    *slot = telegram.as_ref().and_then(Telegram::route);
    telegram
}

fn module_configs(engine: &Engine, module: &str) -> ModuleConfigs {
    let settings = engine.settings();
    let mut configs = BTreeMap::new();
    configs.insert(String::new(), settings.module_config(module, None).0);
    for id in engine.bot_ids() {
        if let Some(bot) = engine.bot(&id) {
            configs.insert(id, settings.module_config(module, Some(&bot.dir)).0);
        }
    }
    configs
}

fn telegram_config(engine: &Engine) -> ModuleConfigs {
    module_configs(engine, "channel-telegram")
}

fn messenger_config(engine: &Engine) -> ModuleConfigs {
    module_configs(engine, "channel-messenger")
}

/// The janitor every `dialog.janitorInterval`, a session sweep every ten minutes, a check
/// for edited bot files every two seconds, and a live reload when SIGHUP came. Gives the
/// channels back when botd stops.
fn maintain(
    engine: &Arc<Engine>,
    mut channels: Channels,
    data_dir: &Path,
    stop: &AtomicBool,
    reload: &AtomicBool,
) -> Channels {
    let sweep_every = Duration::from_secs(600);
    let reload_every = Duration::from_secs(2);
    let (mut last_janitor, mut last_reload) = (Instant::now(), Instant::now());
    let mut last_sweep: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        if reload.swap(false, Ordering::SeqCst) {
            live_reload(engine, &mut channels, data_dir);
        }
        let janitor_every = engine
            .settings()
            .dialog
            .janitor_interval
            .max(Duration::from_millis(100));
        if last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
            engine.sweep_sessions();
            proactive::sweep(engine);
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
    channels
}

/// One live reload (see the module documentation).
fn live_reload(engine: &Arc<Engine>, channels: &mut Channels, data_dir: &Path) {
    log::info!(
        "SIGHUP: reloading the configuration of {}",
        data_dir.display()
    );
    let loaded = Settings::load(data_dir).and_then(|s| {
        let broken = unreadable_channel_files(engine);
        if broken.is_empty() {
            Ok(s)
        } else {
            Err(broken)
        }
    });
    let new = match loaded {
        Ok(s) => Arc::new(s),
        Err(problems) => {
            for p in &problems {
                log::error!("{p}");
            }
            log::error!(
                "reload refused ({} problem(s) above); the running configuration stays",
                problems.len()
            );
            return;
        }
    };
    let old = engine.settings();
    for field in needs_restart(&old, &new) {
        log::warn!("{field} changed: it takes effect at the next restart of botd");
    }
    let bot_defaults = |s: &Settings| {
        (
            s.dialog.clone(),
            s.module_config("nlu", None).0,
            s.module_config("qna", None).0,
        )
    };
    let reload_bots = bot_defaults(&old) != bot_defaults(&new);
    for p in engine.replace_settings(new, reload_bots) {
        log::warn!("{p}");
    }
    let messenger = messenger_config(engine);
    if messenger != channels.messenger_config {
        log::info!("reload: the Messenger configuration changed; Messenger restarts");
        let mut slot = channels.webhook.hold();
        if let Some(m) = channels.messenger.take() {
            m.stop();
        }
        let started = Messenger::start(engine.clone());
        *slot = started.as_ref().and_then(Messenger::route);
        drop(slot);
        channels.messenger = started;
        channels.messenger_config = messenger;
    }
    let telegram = telegram_config(engine);
    if telegram != channels.telegram_config {
        let bots = changed_bots(&channels.telegram_config, &telegram);
        match channels.telegram.as_mut() {
            Some(running) => {
                log::info!(
                    "reload: the Telegram configuration of {} changed; Telegram restarts for it once its long poll ends",
                    bots.join(", ")
                );
                running.restart_bots(&bots, TELEGRAM_RESTART_GRACE);
                if running.is_idle() {
                    *channels.telegram_webhook.hold() = None;
                    if let Some(t) = channels.telegram.take() {
                        t.stop();
                    }
                }
            }
            None => channels.telegram = start_telegram(engine, &channels.telegram_webhook),
        }
        channels.telegram_config = telegram;
    }
    log::info!("reload done");
}

/// The channel files of loaded bots (`bots/<id>/config/channel-*.json`) that cannot be read or
/// are not a JSON object: a reload with one of them is refused, so that a half-written file
/// never turns a bot's channel off.
fn unreadable_channel_files(engine: &Engine) -> Vec<crate::engine::Problem> {
    let mut problems = Vec::new();
    for id in engine.bot_ids() {
        let Some(bot) = engine.bot(&id) else { continue };
        for module in ["channel-messenger", "channel-telegram"] {
            let path = bot.dir.join("config").join(format!("{module}.json"));
            if !path.exists() {
                continue;
            }
            match crate::config::read_json(&path) {
                Ok(Value::Object(_)) => {}
                Ok(_) => problems.push(crate::engine::Problem::new(
                    path.display().to_string(),
                    "must be a JSON object",
                )),
                Err(p) => problems.push(p),
            }
        }
    }
    problems
}

/// The bots whose merged configuration differs between `old` and `new` (added and removed
/// bots included; a global change shows in every bot's merged configuration).
fn changed_bots(old: &ModuleConfigs, new: &ModuleConfigs) -> Vec<String> {
    let mut ids: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|id| !id.is_empty() && old.get(*id) != new.get(*id))
        .cloned()
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The settings a running HTTP server cannot change: named as in `botpress.config.json`.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let (o, n) = (&old.http, &new.http);
    let checks = [
        ("httpServer.host", o.host != n.host),
        ("httpServer.port (or PORT)", o.port != n.port),
        ("httpServer.workers", o.workers != n.workers),
        (
            "httpServer.maxConnections",
            o.limits.max_connections != n.limits.max_connections,
        ),
        (
            "httpServer.headTimeout",
            o.limits.head_timeout != n.limits.head_timeout,
        ),
        (
            "httpServer.bodyTimeout",
            o.limits.body_timeout != n.limits.body_timeout,
        ),
        (
            "httpServer.keepAliveTimeout",
            o.limits.idle_timeout != n.limits.idle_timeout,
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
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
