//! The `botd` command: `run` (the server), `check`, `chat` and `token`.

use botd::config::{units, Settings};
use botd::engine::{bot, Engine, Event};
use botd::http::jwt;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

const USAGE: &str = "usage:
  botd [run] [--data DIR]                 serve the bots of DIR (default $BOTD_DATA or ./data)
  botd check [--data DIR]                 load every bot and print each problem
  botd backup FILE [--data DIR]           copy the database to FILE (safe while botd runs)
  botd chat <botId> [--data DIR] [--user ID]   talk to a bot in the terminal
  botd token [--data DIR] [--email E] [--ttl 6h]   print a token for the secured Converse route
NLU evaluation and benchmark: `cargo run --release --example nlu -- help` (make bench-nlu)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None | Some("run") | Some("--data") => with_options(&args, |o| botd::app::run(&o.data)),
        Some("check") => with_options(&args[1..], check),
        Some("backup") => with_options(&args[1..], backup),
        Some("chat") => with_options(&args[1..], chat),
        Some("token") => with_options(&args[1..], token),
        Some(old @ ("nlu-eval" | "nlu-bench" | "nlu-dev")) => {
            // These left the server binary; say where they went.
            let sub = old.trim_start_matches("nlu-");
            eprintln!("botd: `{old}` moved to `cargo run --release --example nlu -- {sub}`");
            2
        }
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            0
        }
        Some("-V") | Some("--version") => {
            println!("botd {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some(other) => {
            eprintln!("botd: unknown command \"{other}\"\n{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

struct Options {
    data: PathBuf,
    positional: Vec<String>,
    email: String,
    ttl: Option<String>,
    user: String,
}

fn with_options(args: &[String], f: impl FnOnce(&Options) -> i32) -> i32 {
    let mut o = Options {
        data: std::env::var("BOTD_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("./data")),
        positional: Vec::new(),
        email: "admin@botd.local".into(),
        ttl: None,
        user: "terminal".into(),
    };
    let mut it = args.iter().skip_while(|a| *a == "run");
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("botd: {name} needs a value"))
        };
        let result = match arg.as_str() {
            "--data" => value("--data").map(|v| o.data = PathBuf::from(v)),
            "--email" => value("--email").map(|v| o.email = v),
            "--ttl" => value("--ttl").map(|v| o.ttl = Some(v)),
            "--user" => value("--user").map(|v| o.user = v),
            flag if flag.starts_with("--") => Err(format!("botd: unknown option {flag}\n{USAGE}")),
            other => {
                o.positional.push(other.to_string());
                Ok(())
            }
        };
        if let Err(e) = result {
            eprintln!("{e}");
            return 2;
        }
    }
    f(&o)
}

/// `botd backup FILE`: a consistent copy of the database, taken while botd may be serving.
fn backup(o: &Options) -> i32 {
    let [file] = o.positional.as_slice() else {
        eprintln!("botd: backup needs exactly one FILE\n{USAGE}");
        return 2;
    };
    let Some(settings) = load_settings(o) else {
        return 1;
    };
    match botd::store::database_url(&settings.env) {
        Ok(None) => {}
        Ok(Some(_)) => {
            eprintln!("botd: backup copies the SQLite database; this botd uses PostgreSQL (DATABASE_URL): back it up with pg_dump");
            return 1;
        }
        Err(e) => {
            eprintln!("botd: {e}");
            return 1;
        }
    }
    match botd::store::backup_database(&o.data.join("storage"), std::path::Path::new(file)) {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(e) => {
            eprintln!("botd: {e}");
            1
        }
    }
}

fn load_settings(o: &Options) -> Option<Settings> {
    match Settings::load(&o.data) {
        Ok(s) => Some(s),
        Err(problems) => {
            for p in problems {
                println!("{p}");
            }
            None
        }
    }
}

/// `botd check`: every problem of every bot as `path: error: what is wrong` or
/// `path: warning: what is wrong`, then the database's integrity check, quarantined records and
/// dead letters; non-zero when a bot cannot load or the database is not sound.
fn check(o: &Options) -> i32 {
    let Some(settings) = load_settings(o) else {
        return 1;
    };
    let ids = bot::list_bot_dirs(&o.data);
    if ids.is_empty() {
        println!(
            "{}: no bot folder with a bot.config.json",
            o.data.join("bots").display()
        );
        return 1;
    }
    let mut failed = 0;
    for id in &ids {
        let outcome = bot::load_bot(&settings, id);
        // Errors keep the bot from loading; warnings name what will fail when a flow gets there.
        for p in &outcome.errors {
            println!("{}: error: {}", p.path, p.message);
        }
        for p in &outcome.warnings {
            println!("{}: warning: {}", p.path, p.message);
        }
        if outcome.disabled {
            eprintln!("{id}: disabled");
        } else if outcome.bot.is_some() {
            eprintln!(
                "{id}: ok{}",
                if outcome.warnings.is_empty() {
                    String::new()
                } else {
                    format!(" ({} warnings)", outcome.warnings.len())
                }
            );
        } else {
            eprintln!("{id}: cannot load");
            failed += 1;
        }
    }
    // data/global/actions and data/global/hooks, shared by every bot: reported once.
    let global = o.data.join("global");
    let shown = global.display().to_string();
    let roots = botd::engine::js::Roots::global(&o.data);
    for p in botd::engine::js::check_scripts(&global, &shown, &roots) {
        println!("{}: warning: {}", p.path, p.message);
    }
    let report = botd::store::check(&settings.env, &o.data.join("storage"));
    for line in &report.lines {
        println!("{line}");
    }
    if !report.summary.is_empty() {
        eprintln!("{}", report.summary);
    }
    if !report.sound {
        failed += 1;
    }
    i32::from(failed > 0)
}

/// `botd chat <botId>`: one line in, the bot's `api` payloads out as readable text.
fn chat(o: &Options) -> i32 {
    let Some(bot_id) = o.positional.first() else {
        eprintln!("botd chat needs a bot id\n{USAGE}");
        return 2;
    };
    let Some(settings) = load_settings(o) else {
        return 1;
    };
    botd::app::init_logging(Some("warn"));
    let store = match botd::store::open(&settings.env, &o.data.join("storage")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("botd: {e}");
            return 1;
        }
    };
    botd::channels::render::register_all();
    let (engine, problems) = Engine::new(Arc::new(settings), store);
    for p in problems {
        eprintln!("{p}");
    }
    if engine.bot(bot_id).is_none() {
        eprintln!("botd: bot \"{bot_id}\" is not loaded (see `botd check`)");
        return 1;
    }
    engine.mount_all();
    eprintln!("Talking to {bot_id} as \"{}\". Ctrl-D to quit.", o.user);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        let _ = write!(out, "you> ");
        let _ = out.flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let event = Event::new(
            bot_id,
            "api",
            "text",
            &o.user,
            serde_json::json!({"type": "text", "text": text}),
        );
        match engine.turn(event, None) {
            Ok(turn) => {
                for payload in &turn.responses {
                    for line in describe(payload) {
                        let _ = writeln!(out, "bot> {line}");
                    }
                }
            }
            Err(e) => eprintln!("botd: {e}"),
        }
    }
    engine.unmount_all();
    0
}

/// A payload as the lines a person reads.
fn describe(p: &Value) -> Vec<String> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    match p["type"].as_str() {
        Some("typing") => Vec::new(),
        Some("text") => vec![s(&p["text"])],
        Some("image") => vec![format!("[image] {}", s(&p["url"]))],
        // builtin_image renders as a `file` with a url; Botpress 12's builtin_file as `file`.
        Some("file") if p.get("url").is_some() => vec![format!("[image] {}", s(&p["url"]))],
        Some("file") => vec![format!("[file] {} {}", s(&p["title"]), s(&p["file"]))],
        Some("custom") if p["component"] == "QuickReplies" => {
            let mut lines = describe(&p["wrapped"]);
            for (i, r) in p["quick_replies"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                lines.push(format!("  [{}] {}", i + 1, s(&r["title"])));
            }
            lines
        }
        Some("carousel") => p["elements"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| {
                let mut lines = vec![format!("[card] {} — {}", s(&c["title"]), s(&c["subtitle"]))];
                for b in c["buttons"].as_array().into_iter().flatten() {
                    lines.push(format!("  ({}) {}", s(&b["type"]), s(&b["title"])));
                }
                lines
            })
            .collect(),
        // Botpress 12.22's universal payloads.
        Some("single-choice") => {
            let mut lines = vec![s(&p["text"])];
            for (i, c) in p["choices"].as_array().into_iter().flatten().enumerate() {
                lines.push(format!("  [{}] {}", i + 1, s(&c["title"])));
            }
            lines
        }
        Some("card") => vec![format!("[card] {} — {}", s(&p["title"]), s(&p["subtitle"]))],
        Some("custom") if p["component"] == "Dropdown" => {
            let mut lines = vec![s(&p["message"])];
            for o in p["options"].as_array().into_iter().flatten() {
                lines.push(format!("  [v] {}", s(&o["label"])));
            }
            lines
        }
        Some(kind @ ("video" | "audio")) => {
            vec![format!("[{kind}] {} {}", s(&p["title"]), s(&p[kind]))]
        }
        Some("location") => vec![format!(
            "[location] {} {} ({}, {})",
            s(&p["title"]),
            s(&p["address"]),
            p["latitude"],
            p["longitude"]
        )],
        _ => vec![p.to_string()],
    }
}

/// `botd token`: a JWT for the secured Converse route, signed with the data dir's appSecret.
fn token(o: &Options) -> i32 {
    let Some(settings) = load_settings(o) else {
        return 1;
    };
    let ttl = match &o.ttl {
        Some(t) => match units::parse_duration(t) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("botd: --ttl {e}");
                return 2;
            }
        },
        None => settings.jwt_duration,
    };
    let now = botd::engine::event::now_ms() / 1000;
    println!(
        "{}",
        jwt::sign(&settings.app_secret, &o.email, now, ttl.as_secs() as i64)
    );
    0
}
