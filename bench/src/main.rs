//! `make bench`: how fast and how small botd is, measured against the machine's own ceiling (a
//! bare server on botd's own HTTP layer answering a fixed JSON body, driven by the same load generator in
//! the same run). Writes the table to bench/RESULTS.md.
//!
//! `bench [--botd PATH] [--profile-botd PATH] [--ceiling PATH] [--out FILE] [--users N] [--work DIR] [--quick]
//! [--no-profile] [--only converse|channels|telegram-pace|postgres|engine|footprint|profile[,…]]`
//!
//! `--only telegram-pace` rewrites only its own section of the results file (between its
//! markers), so it can be run on its own without replacing the other figures.

mod channels;
mod engine;
mod fakes;
mod footprint;
mod load;
mod pacing;
#[cfg(feature = "postgres")]
mod postgres;
mod procs;
mod report;
mod scenario;

use load::{closed_loop, Client, LoadResult, Recorder};
use procs::{fresh_data, Proc};
use scenario::{conversation, name_for, Target};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Options {
    botd: PathBuf,
    /// The same botd with its symbols, for the callgrind profile.
    profile_botd: PathBuf,
    ceiling: PathBuf,
    out: PathBuf,
    users: usize,
    work: PathBuf,
    quick: bool,
    profile: bool,
    /// Run only these sections, comma-separated (converse, channels, postgres, engine,
    /// footprint, profile).
    only: Option<String>,
}

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|s| s.split(',').any(|one| one == section))
    }
}

fn options() -> Result<Options, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        botd: root.join("target/release/botd"),
        profile_botd: root.join("target/release/botd"),
        ceiling: root.join("target/release/examples/bench-ceiling"),
        out: root.join("bench/RESULTS.md"),
        users: 100_000,
        work: root.join("target/bench-work"),
        quick: false,
        profile: true,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--botd" => o.botd = PathBuf::from(value()?),
            "--profile-botd" => o.profile_botd = PathBuf::from(value()?),
            "--ceiling" => o.ceiling = PathBuf::from(value()?),
            "--out" => o.out = PathBuf::from(value()?),
            "--work" => o.work = PathBuf::from(value()?),
            "--users" => o.users = value()?.parse().map_err(|_| "--users needs a number")?,
            "--quick" => o.quick = true,
            "--no-profile" => o.profile = false,
            "--only" => o.only = Some(value()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// One Converse measurement: the load and the server's CPU time per request.
#[derive(Clone, Default)]
pub struct Measured {
    pub load: LoadResult,
    pub cpu_us_per_req: f64,
}

fn measure_converse(
    server: &Proc,
    target: Target,
    tag: &str,
    users: usize,
    warmup: Duration,
    measure: Duration,
) -> Measured {
    measure_converse_on(
        server.port,
        &[server.pid()],
        target,
        tag,
        users,
        warmup,
        measure,
    )
}

/// [`measure_converse`] on `port` (one server, or a proxy before several), the CPU summed
/// over `pids`.
fn measure_converse_on(
    port: u16,
    pids: &[u32],
    target: Target,
    tag: &str,
    users: usize,
    warmup: Duration,
    measure: Duration,
) -> Measured {
    let cpu = || pids.iter().map(|p| procs::cpu_seconds(*p)).sum::<f64>();
    let cpu_before = cpu();
    let load = closed_loop(users, warmup, measure, |i| {
        let mut client = Client::new(port);
        let mut n = 0u64;
        move |rec: &mut Recorder| {
            n += 1;
            let user = format!("{tag}-{i}-{n}");
            conversation(&mut client, target, &user, &name_for(i, n), rec)
        }
    });
    let cpu = cpu() - cpu_before;
    // CPU over the whole run (warm-up included) per request answered in it.
    let total = warmup + measure;
    let requests = load.per_second * total.as_secs_f64();
    Measured {
        cpu_us_per_req: if requests > 0.0 {
            cpu * 1e6 / requests
        } else {
            0.0
        },
        load,
    }
}

/// The results of every section, for the report.
#[derive(Default)]
pub struct Results {
    pub machine: Option<procs::Machine>,
    pub date: String,
    pub load_start: f64,
    pub load_end: f64,
    pub disk_fs: String,
    pub shm: Option<PathBuf>,
    pub warmup: Duration,
    pub measure: Duration,
    pub workers: usize,
    /// (users, ceiling, botd on disk, botd on tmpfs)
    pub converse: Vec<(usize, Measured, Measured, Option<Measured>)>,
    /// Converse at 16 users on disk and on tmpfs, requests/s, the two in turns (rounds).
    pub disk_vs_tmpfs: Vec<(f64, f64)>,
    pub messenger: channels::Pipeline,
    pub telegram: channels::Pipeline,
    pub pipeline_users: usize,
    pub engine_mem: Option<f64>,
    pub engine_disk: Option<f64>,
    pub engine_shm: Option<f64>,
    /// One-node flow turns in memory: (native setVariable, the same with a JavaScript action).
    pub flow_native_mem: Option<f64>,
    pub flow_action_mem: Option<f64>,
    pub nlu_classify_us: f64,
    pub nlu_understand_us: f64,
    pub write_disk_ms: (f64, f64),
    pub write_shm_ms: Option<(f64, f64)>,
    pub binary_bytes: u64,
    pub binary_stripped: bool,
    /// Stripped sizes of the Raspberry Pi builds `make pi` left in target/pi/ (None: not built).
    pub arm_binaries: Vec<(&'static str, Option<u64>)>,
    pub rss_idle_kb: u64,
    pub threads_idle: u64,
    pub start_median: Duration,
    pub start_max: Duration,
    pub target_users: usize,
    pub seeded: usize,
    pub seed_errors: u64,
    pub seed_secs: f64,
    pub seed_first_error: Option<String>,
    pub rss_after_kb: (u64, u64),
    /// The database (with its WAL) once the conversations were seeded.
    pub db_bytes: u64,
    pub seed_fs: String,
    pub scale: Vec<ScaleRow>,
    /// PostgreSQL rows (`None`: not run), or why they are missing.
    pub postgres: Option<Result<PgResults, String>>,
    pub restart_first_answer: Option<Duration>,
    pub restart_rss_kb: u64,
    pub profile: Option<report::Profile>,
    pub notes: Vec<String>,
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    // This section needs botd alone.
    if o.only.as_deref() == Some("telegram-pace") {
        std::process::exit(match pace_only(&o) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench: {e}");
                1
            }
        });
    }
    for bin in [&o.botd, &o.ceiling] {
        if !bin.exists() {
            eprintln!("bench: {} is missing (make bench builds it)", bin.display());
            std::process::exit(2);
        }
    }
    let started = Instant::now();
    let mut r = Results {
        machine: Some(procs::machine()),
        date: botd::engine::event::iso_time(botd::engine::event::now_ms()),
        load_start: procs::load_average(),
        warmup: Duration::from_millis(if o.quick { 300 } else { 500 }),
        measure: Duration::from_millis(if o.quick { 1000 } else { 2000 }),
        target_users: if o.quick { o.users.min(5_000) } else { o.users },
        ..Default::default()
    };
    let _ = std::fs::create_dir_all(&o.work);
    r.disk_fs = procs::fs_type(&o.work);
    let shm = Path::new("/dev/shm");
    if procs::fs_type(shm) == "tmpfs" {
        r.shm = Some(shm.join(format!("botd-bench-{}", std::process::id())));
    }
    r.workers = botd::config::WORKERS_PER_CORE * r.machine.as_ref().map_or(1, |m| m.cores);
    println!(
        "bench: data on {} ({}), tmpfs {}",
        o.work.display(),
        r.disk_fs,
        r.shm
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    );

    if o.runs("converse") {
        if let Err(e) = converse_section(&o, &mut r) {
            r.notes.push(format!("Converse section failed: {e}"));
            eprintln!("bench: {e}");
        }
    }
    if o.runs("channels") {
        channels_section(&o, &mut r);
    }
    let mut pace_section = None;
    if o.runs("telegram-pace") {
        println!("bench: telegram at conversation speed");
        match pacing::telegram_pace(&o.botd, &o.work, pace_duration(&o)) {
            Ok(p) => pace_section = Some(pacing::render(&p)),
            Err(e) => r.notes.push(format!("Telegram pace section failed: {e}")),
        }
    }
    if o.runs("postgres") {
        r.postgres = Some(postgres_section(&o, &r));
    }
    if o.runs("engine") {
        engine_section(&o, &mut r);
    }
    if o.runs("footprint") {
        if let Err(e) = footprint_section(&o, &mut r) {
            r.notes.push(format!("Footprint section failed: {e}"));
            eprintln!("bench: {e}");
        }
    }
    if o.profile && o.runs("profile") {
        match report::callgrind_profile(&o.profile_botd, &o.work, r.shm.as_deref()) {
            Ok(p) => r.profile = Some(p),
            Err(e) => {
                eprintln!("bench: no profile: {e}");
                r.notes.push(format!("No callgrind profile: {e}"));
            }
        }
    }
    r.load_end = procs::load_average();
    if let Some(dir) = &r.shm {
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(&o.work);
    r.notes.push(format!(
        "The whole run took {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    let mut text = report::render(&r);
    if let Some(section) = &pace_section {
        text = splice(&text, section);
    }
    println!("{text}");
    if let Err(e) = std::fs::write(&o.out, &text) {
        eprintln!("bench: cannot write {}: {e}", o.out.display());
        std::process::exit(1);
    }
    println!("bench: written to {}", o.out.display());
}

fn pace_duration(o: &Options) -> Duration {
    Duration::from_secs(if o.quick { 8 } else { 20 })
}

/// `--only telegram-pace`: runs that section and puts it into the results file, leaving
/// the rest of the file as it was.
fn pace_only(o: &Options) -> Result<(), String> {
    let _ = std::fs::create_dir_all(&o.work);
    println!("bench: telegram at conversation speed");
    let pace = pacing::telegram_pace(&o.botd, &o.work, pace_duration(o));
    let _ = std::fs::remove_dir_all(&o.work);
    let section = pacing::render(&pace?);
    println!("{section}");
    let before = std::fs::read_to_string(&o.out).unwrap_or_default();
    std::fs::write(&o.out, splice(&before, &section))
        .map_err(|e| format!("cannot write {}: {e}", o.out.display()))?;
    println!("bench: section written to {}", o.out.display());
    Ok(())
}

const PACE_BEGIN: &str = "<!-- telegram-pace -->";
const PACE_END: &str = "<!-- /telegram-pace -->";

/// `document` with its Telegram pace section (between the markers) replaced by `section`,
/// or with `section` added at the end when it has none.
fn splice(document: &str, section: &str) -> String {
    let marked = format!("{PACE_BEGIN}\n{section}{PACE_END}\n");
    match (document.find(PACE_BEGIN), document.find(PACE_END)) {
        (Some(a), Some(b)) if a < b => {
            let end = b + PACE_END.len();
            let rest = document[end..]
                .strip_prefix('\n')
                .unwrap_or(&document[end..]);
            format!("{}{marked}{rest}", &document[..a])
        }
        _ if document.trim().is_empty() => marked,
        _ => format!("{}\n\n{marked}", document.trim_end()),
    }
}

fn converse_section(o: &Options, r: &mut Results) -> Result<(), String> {
    println!("bench: converse vs ceiling");
    let mut cmd = Command::new(&o.ceiling);
    cmd.arg("--workers")
        .arg(r.workers.to_string())
        .arg("--seconds")
        .arg("300");
    let ceiling = Proc::start(cmd)?;
    let disk = fresh_data(&o.work.join("converse"))?;
    let botd = Proc::start(procs::botd_command(&o.botd, &disk))?;
    let botd_shm = match &r.shm {
        Some(dir) => Some(Proc::start(procs::botd_command(
            &o.botd,
            &fresh_data(&dir.join("converse"))?,
        ))?),
        None => None,
    };
    for users in [1usize, 16, 64] {
        let c = measure_converse(&ceiling, Target::Ceiling, "c", users, r.warmup, r.measure);
        let b = measure_converse(
            &botd,
            Target::Botd,
            &format!("u{users}"),
            users,
            r.warmup,
            r.measure,
        );
        let s = botd_shm.as_ref().map(|p| {
            measure_converse(
                p,
                Target::Botd,
                &format!("s{users}"),
                users,
                r.warmup,
                r.measure,
            )
        });
        println!(
            "  {users:>2} users: ceiling {:.0}/s, botd {:.0}/s p99 {:.2} ms{}",
            c.load.per_second,
            b.load.per_second,
            b.load.p99_ms(),
            s.as_ref().map_or(String::new(), |s| format!(
                ", tmpfs {:.0}/s",
                s.load.per_second
            ))
        );
        r.converse.push((users, c, b, s));
    }
    // The disk/tmpfs ratio from rounds in turns: on a shared VM the machine's speed drifts
    // between two runs far apart more than the two stores differ.
    if let Some(shm) = &botd_shm {
        for round in 0..3 {
            let run = |p: &Proc, tag: &str| {
                measure_converse(p, Target::Botd, tag, 16, r.warmup, r.measure)
                    .load
                    .per_second
            };
            let disk = run(&botd, &format!("rd{round}"));
            let tmpfs = run(shm, &format!("rs{round}"));
            r.disk_vs_tmpfs.push((disk, tmpfs));
        }
    }
    ceiling.stop();
    botd.stop();
    if let Some(p) = botd_shm {
        p.stop();
    }
    Ok(())
}

/// What the PostgreSQL section measured: one instance beside the SQLite rows of the same run
/// (Converse, Messenger), and three instances on one database behind a round-robin proxy.
#[derive(Default)]
pub struct PgResults {
    pub server: String,
    /// (users, one instance on PostgreSQL)
    pub converse: Vec<(usize, Measured)>,
    /// (users, three instances behind the proxy)
    pub three: Vec<(usize, Measured)>,
    pub messenger: channels::Pipeline,
}

#[cfg(feature = "postgres")]
fn postgres_section(o: &Options, r: &Results) -> Result<PgResults, String> {
    println!("bench: postgres");
    postgres::run(o, r)
}

#[cfg(not(feature = "postgres"))]
fn postgres_section(_o: &Options, _r: &Results) -> Result<PgResults, String> {
    Err("the bench was built without the `postgres` feature (make bench builds it)".into())
}

fn channels_settings<'a>(o: &'a Options, r: &Results) -> channels::Settings<'a> {
    channels::Settings {
        botd: &o.botd,
        work: &o.work,
        users: r.pipeline_users.max(16),
        warmup: r.warmup,
        measure: r.measure,
        burst: Duration::from_millis(if o.quick { 1000 } else { 2000 }),
        telegram_burst: if o.quick { 150 } else { 300 },
        database_url: None,
    }
}

fn channels_section(o: &Options, r: &mut Results) {
    r.pipeline_users = 16;
    let s = channels_settings(o, r);
    println!("bench: messenger");
    r.messenger = channels::messenger(&s);
    println!("bench: telegram");
    r.telegram = channels::telegram(&s);
}

fn engine_section(o: &Options, r: &mut Results) {
    println!("bench: engine alone, NLU, durable writes");
    let limit = Duration::from_millis(if o.quick { 1000 } else { 2500 });
    let run = |data: &Path, store: Arc<dyn botd::store::Store>, r: &mut Results| -> Option<f64> {
        let result = engine::engine_on(data, store)
            .and_then(|e| engine::turns_per_second(&e, "engine", limit));
        match result {
            Ok((per_s, _)) => Some(per_s),
            Err(e) => {
                r.notes.push(format!("engine run failed: {e}"));
                None
            }
        }
    };
    if let Ok(data) = fresh_data(&o.work.join("engine-mem")) {
        let store: Arc<dyn botd::store::Store> = Arc::new(engine::MemStore::default());
        if let Ok(e) = engine::engine_on(&data, store.clone()) {
            let (c, u) =
                engine::nlu_us(&e, Duration::from_millis(if o.quick { 500 } else { 1500 }));
            r.nlu_classify_us = c;
            r.nlu_understand_us = u;
        }
        r.engine_mem = run(&data, store, r);
    }
    // The flow rows on an engine of their own, after the welcome-bot row, which is thus
    // measured as before scripts existed.
    if let Ok(data) = fresh_data(&o.work.join("engine-flow")) {
        let store: Arc<dyn botd::store::Store> = Arc::new(engine::MemStore::default());
        let flows = engine::write_flow_bots(&data).and_then(|_| engine::engine_on(&data, store));
        match flows {
            Ok(e) => {
                // Alternated, so a change in the machine's load hits both rows alike.
                let mut native = Vec::new();
                let mut action = Vec::new();
                for _ in 0..3 {
                    for (bot, into) in [
                        (engine::FLOW_BOT_PLAIN, &mut native),
                        (engine::FLOW_BOT_ACTION, &mut action),
                    ] {
                        match engine::flow_turns_per_second(&e, bot, limit / 3) {
                            Ok(v) => into.push(v),
                            Err(err) => r.notes.push(format!("flow run failed: {err}")),
                        }
                    }
                }
                let best = |v: &[f64]| v.iter().copied().reduce(f64::max);
                r.flow_native_mem = best(&native);
                r.flow_action_mem = best(&action);
            }
            Err(e) => r.notes.push(format!("flow bots not loaded: {e}")),
        }
    }
    if let Ok(data) = fresh_data(&o.work.join("engine-disk")) {
        r.engine_disk = run(&data, engine::disk_store(&data), r);
    }
    if let Some(dir) = r.shm.clone() {
        if let Ok(data) = fresh_data(&dir.join("engine")) {
            r.engine_shm = run(&data, engine::disk_store(&data), r);
        }
        r.write_shm_ms = Some(engine::durable_write_ms(&dir.join("writes"), 300));
    }
    r.write_disk_ms = engine::durable_write_ms(&o.work.join("writes"), 300);
}

fn footprint_section(o: &Options, r: &mut Results) -> Result<(), String> {
    println!("bench: footprint and scale");
    r.binary_bytes = report::stripped_size(&o.botd, &o.work);
    r.binary_stripped = report::is_stripped(&o.botd);
    r.arm_binaries = report::arm_binaries();
    let (median, max) = footprint::start_times(&o.botd, &o.work, 5)?;
    r.start_median = median;
    r.start_max = max;

    // The 100 000 conversations are played over HTTP on tmpfs when there is one: on the
    // disk, fsync makes that take minutes, and where the files live does not change the
    // server's memory. The disk rows of the scale table then use a copy of that storage.
    let seed_root = r.shm.clone().unwrap_or_else(|| o.work.clone());
    r.seed_fs = procs::fs_type(&seed_root);
    let data = fresh_data(&seed_root.join("footprint"))?;
    let botd = Proc::start(procs::botd_command(&o.botd, &data))?;
    std::thread::sleep(Duration::from_millis(500));
    r.rss_idle_kb = botd.rss_kb().0;
    r.threads_idle = botd.threads();

    let small = 1_000.min(r.target_users);
    let limit = Duration::from_secs(if o.quick { 60 } else { 150 });
    let scale_measure = Duration::from_millis(if o.quick { 800 } else { 2000 });
    let t0 = Instant::now();
    let (done, errors, _, first) = footprint::seed(botd.port, "seed", small, 32, limit);
    let mut seeded = done;
    r.seed_errors += errors;
    r.seed_first_error = r.seed_first_error.take().or(first);
    let seed_fs = r.seed_fs.clone();
    r.scale.push(scale_row(
        &botd,
        &seed_fs,
        seeded,
        "a",
        r.warmup,
        scale_measure,
    ));
    let rest = limit.saturating_sub(t0.elapsed());
    let (done, errors, _, first) = footprint::seed(
        botd.port,
        "seedb",
        r.target_users.saturating_sub(small),
        32,
        rest,
    );
    seeded += done;
    r.seed_errors += errors;
    r.seed_first_error = r.seed_first_error.take().or(first);
    r.seed_secs = t0.elapsed().as_secs_f64();
    r.seeded = seeded;
    r.rss_after_kb = botd.rss_kb();
    r.db_bytes = ["botd.sqlite", "botd.sqlite-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join("storage").join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "  seeded {seeded} in {:.0} s on {seed_fs}, RSS {} kB, database {} kB",
        r.seed_secs,
        r.rss_after_kb.0,
        r.db_bytes / 1024
    );
    r.scale.push(scale_row(
        &botd,
        &seed_fs,
        seeded,
        "b",
        r.warmup,
        scale_measure,
    ));
    botd.stop();

    let disk_fs = r.disk_fs.clone();
    let large = if r.shm.is_some() {
        // The same scale on the disk: 1 000 conversations on a fresh folder, and a copy of
        // the 100 000.
        let fresh = fresh_data(&o.work.join("scale-small"))?;
        let botd = Proc::start(procs::botd_command(&o.botd, &fresh))?;
        let (done, _, _, _) =
            footprint::seed(botd.port, "seed", small, 32, Duration::from_secs(60));
        r.scale.push(scale_row(
            &botd,
            &disk_fs,
            done,
            "c",
            r.warmup,
            scale_measure,
        ));
        botd.stop();
        let copy = o.work.join("scale-large");
        let _ = std::fs::remove_dir_all(&copy);
        procs::copy_dir(&data, &copy).map_err(|e| format!("cannot copy the seeded data: {e}"))?;
        // Let the copy reach the disk before measuring on it (at most 10 s: `sync -f` flushes
        // the whole file system, which other work on the machine may share).
        if let Ok(mut child) = Command::new("sync").arg("-f").arg(&copy).spawn() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) && matches!(child.try_wait(), Ok(None))
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&data);
        copy
    } else {
        data
    };
    // A restart with everything stored (on the disk): the start sweep reads every session.
    let (botd, took) = footprint::start_and_first_answer(&o.botd, &large, "restart")?;
    r.restart_first_answer = Some(took);
    std::thread::sleep(Duration::from_secs(2));
    r.restart_rss_kb = botd.rss_kb().0;
    // The start sweep reads every stored session; measure once it is done (the process idles).
    procs::wait_idle(&botd, Duration::from_secs(30));
    r.scale.push(scale_row(
        &botd,
        &disk_fs,
        seeded,
        "d",
        r.warmup,
        scale_measure,
    ));
    botd.stop();
    Ok(())
}

/// Converse with 1 and with 16 users on a server holding `stored` conversations.
fn scale_row(
    botd: &Proc,
    fs: &str,
    stored: usize,
    tag: &str,
    warmup: Duration,
    measure: Duration,
) -> ScaleRow {
    let one = footprint::converse_load(botd.port, &format!("scale1{tag}"), 1, warmup / 2, measure);
    let sixteen =
        footprint::converse_load(botd.port, &format!("scale16{tag}"), 16, warmup / 2, measure);
    ScaleRow {
        fs: fs.to_string(),
        stored,
        one,
        sixteen,
    }
}

pub struct ScaleRow {
    pub fs: String,
    pub stored: usize,
    pub one: LoadResult,
    pub sixteen: LoadResult,
}
