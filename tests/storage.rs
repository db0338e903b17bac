//! The SQLite store seen from outside: the real `botd` on loopback over a temporary data
//! folder, and the database file opened by the test with rusqlite to damage rows, add a
//! failing trigger, or read what was saved. Expected answers come from welcome-bot's flow:
//! `hi` → "May I know your name please?"; a name → a greeting, "This is the first time we
//! speak 🤖" and a hint; later messages → a greeting and "We already spoke N times!".

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const ASK_NAME: &str = "May I know your name please?";
const FIRST_TIME: &str = "This is the first time we speak 🤖";
const BOT: &str = "welcome-bot";

fn say(port: u16, user: &str, text: &str) -> Vec<String> {
    texts(&json!({"responses": responses(&converse(port, BOT, user, text))}))
}

fn greets(text: &str, name: &str) -> bool {
    [
        format!("👋, {name}!"),
        format!("Hello, {name}!"),
        format!("Welcome to Botpress, {name}!"),
    ]
    .contains(&text.to_string())
}

/// Every (table, key, value) row of the state tables, to compare before and after.
fn state_rows(data: &Path) -> Vec<(String, String, String)> {
    let db = database(data);
    let mut rows = Vec::new();
    for table in ["sessions", "users", "kv"] {
        let mut stmt = db
            .prepare(&format!("SELECT key, value FROM {table} ORDER BY key"))
            .unwrap();
        let found = stmt
            .query_map([], |r| Ok((table.to_string(), r.get(0)?, r.get(1)?)))
            .unwrap();
        rows.extend(found.map(Result::unwrap));
    }
    rows
}

/// (kind, key) of every quarantined record.
fn quarantined(data: &Path) -> Vec<(String, String)> {
    let db = database(data);
    let mut stmt = db
        .prepare("SELECT kind, key FROM quarantine ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

#[test]
fn damaged_records_are_quarantined_and_the_conversation_goes_on() {
    let data = data_copy("quarantine");
    let server = Server::start(data.path(), &[]);
    let p = server.port;

    // A session cut in the middle: the user was asked their name; the next message starts
    // over from a fresh session, so it is asked again instead of being taken as the name.
    assert_eq!(say(p, "s-user", "hi"), [ASK_NAME]);
    database(data.path())
        .execute(
            "UPDATE sessions SET value = '{\"context\": {\"currentFlow\": \"main.fl' WHERE key = 'api::s-user'",
            [],
        )
        .unwrap();
    assert_eq!(say(p, "s-user", "Alice"), [ASK_NAME]);

    // A damaged user record: the nickname is gone, so the bot asks for it again.
    assert_eq!(say(p, "u-user", "hi"), [ASK_NAME]);
    let t = say(p, "u-user", "Bob");
    assert!(greets(&t[0], "Bob") && t[1] == FIRST_TIME, "{t:?}");
    database(data.path())
        .execute(
            "UPDATE users SET value = '{\"nickname\": \"Bo' WHERE key = 'api::u-user'",
            [],
        )
        .unwrap();
    assert_eq!(say(p, "u-user", "again"), [ASK_NAME]);

    // A user record of the wrong shape (valid JSON, not an object) is quarantined too.
    assert_eq!(say(p, "w-user", "hi"), [ASK_NAME]);
    let t = say(p, "w-user", "Carol");
    assert!(greets(&t[0], "Carol"), "{t:?}");
    database(data.path())
        .execute(
            "UPDATE users SET value = '[1, 2]' WHERE key = 'api::w-user'",
            [],
        )
        .unwrap();
    assert_eq!(say(p, "w-user", "again"), [ASK_NAME]);

    // The bot-wide KV `global`, read on every turn of every user: damaged, every user still
    // gets a normal answer.
    database(data.path())
        .execute(
            "INSERT INTO kv (bot, key, value, updated_ms) VALUES (?1, 'global', '{\"x\": tru', 0)",
            [BOT],
        )
        .unwrap();
    assert_eq!(say(p, "g-user", "hi"), [ASK_NAME]);
    assert_eq!(say(p, "g-user-2", "hi"), [ASK_NAME]);

    assert_eq!(
        quarantined(data.path()),
        [
            ("session".to_string(), "api::s-user".to_string()),
            ("user".to_string(), "api::u-user".to_string()),
            ("user".to_string(), "api::w-user".to_string()),
            ("bot KV entry".to_string(), "global".to_string()),
        ]
    );
    // One error line per record, naming it.
    let log = server.log();
    for key in ["api::s-user", "api::u-user", "api::w-user", "\"global\""] {
        assert_eq!(
            log.lines()
                .filter(|l| l.contains("ERROR") && l.contains(key) && l.contains("quarantine #"))
                .count(),
            1,
            "{key}: {log}"
        );
    }
    // The conversations go on normally afterwards.
    let t = say(p, "s-user", "Dave");
    assert!(greets(&t[0], "Dave") && t[1] == FIRST_TIME, "{t:?}");

    // `botd check` lists them and runs the integrity check.
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("quarantine #").count(), 4, "{out}");
    assert!(
        out.contains("api::s-user") && out.contains("bot KV entry"),
        "{out}"
    );
    assert!(
        !out.contains("integrity check"),
        "the database is sound: {out}"
    );
}

#[test]
fn a_turn_whose_commit_fails_leaves_no_partial_state() {
    let data = data_copy("atomic-turn");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    assert_eq!(say(p, "t-user", "hi"), [ASK_NAME]);
    let before = state_rows(data.path());
    // The name turn writes the user (nickname), the bot KV (conversation counter) and then
    // the session. Make the session write, the last one, fail for real inside SQLite: the
    // user and KV writes before it must not survive.
    database(data.path())
        .execute_batch(
            "CREATE TRIGGER full_i BEFORE INSERT ON sessions BEGIN SELECT RAISE(ABORT, 'no room left'); END;
             CREATE TRIGGER full_u BEFORE UPDATE ON sessions BEGIN SELECT RAISE(ABORT, 'no room left'); END;",
        )
        .unwrap();
    let failed = converse(p, BOT, "t-user", "Eve");
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert_eq!(failed.json()["type"], "StorageError", "{}", failed.text());
    assert_eq!(
        state_rows(data.path()),
        before,
        "the user and KV writes of the failed turn were rolled back with the session's"
    );
    database(data.path())
        .execute_batch("DROP TRIGGER full_i; DROP TRIGGER full_u;")
        .unwrap();
    // The conversation is where it was: still waiting for the name, counter never bumped.
    let t = say(p, "t-user", "Frank");
    assert!(greets(&t[0], "Frank") && t[1] == FIRST_TIME, "{t:?}");
    let t = say(p, "t-user", "again");
    assert_eq!(t[1], "We already spoke 1 times!", "{t:?}");
}

#[test]
fn secrets_and_conversations_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let data = data_copy("modes");
    let server = Server::start(data.path(), &[]);
    assert_eq!(say(server.port, "m-user", "hi"), [ASK_NAME]);
    let mode = |rel: &str| {
        std::fs::metadata(data.path().join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    for dir in ["storage", "global", "global/config"] {
        assert_eq!(mode(dir), 0o700, "{dir}");
    }
    for file in [
        "storage/botd.sqlite",
        "storage/botd.sqlite-wal",
        "storage/botd.sqlite-shm",
        "global/botpress.config.json",
        "global/config/basic-skills.json",
        "global/config/channel-messenger.json",
        "global/config/channel-telegram.json",
        "global/config/nlu.json",
        "global/config/qna.json",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    // Files an older release left world-readable are made private at the next start.
    drop(server);
    let set = |rel: &str, m: u32| {
        std::fs::set_permissions(data.path().join(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    set("storage", 0o755);
    set("storage/botd.sqlite", 0o644);
    set("global/botpress.config.json", 0o644);
    set("global/config/channel-messenger.json", 0o644);
    let server = Server::start(data.path(), &[]);
    assert_eq!(say(server.port, "m-user", "Mallory")[1], FIRST_TIME);
    assert_eq!(mode("storage"), 0o700);
    for file in [
        "storage/botd.sqlite",
        "global/botpress.config.json",
        "global/config/channel-messenger.json",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
}

/// The previous release's record file for `key`: `bots/<bot>/<ns>/<h[..2]>/<h>.json` with
/// `h` the hex SHA-256 of the key, holding `{"key", "value"}`.
fn old_record(storage: &Path, ns: &str, key: &str, value: &Value) {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(key.as_bytes()));
    write(
        storage,
        &format!("bots/{BOT}/{ns}/{}/{h}.json", &h[..2]),
        &json!({"key": key, "value": value}).to_string(),
    );
}

#[test]
fn the_previous_file_store_is_imported_once_at_first_start() {
    // Conversations as botd saved them: played here, then written out in the old layout.
    let played = data_copy("import-src");
    let server = Server::start(played.path(), &[]);
    assert_eq!(say(server.port, "mid-flow", "hi"), [ASK_NAME]);
    assert_eq!(say(server.port, "known", "hi"), [ASK_NAME]);
    let t = say(server.port, "known", "Grace");
    assert!(greets(&t[0], "Grace"), "{t:?}");
    drop(server);
    let rows = state_rows(played.path());
    assert!(rows.len() >= 4, "{rows:?}");

    let data = data_copy("import");
    let storage = data.path().join("storage");
    for (table, key, value) in &rows {
        let value: Value = serde_json::from_str(value).unwrap();
        old_record(&storage, table, key, &value);
    }
    // A file the old store had left truncated.
    write(
        &storage,
        &format!("bots/{BOT}/users/ab/{}.json", "ab".repeat(32)),
        "{\"key\": \"api::cut\", \"value\": {\"nick",
    );

    let server = Server::start(data.path(), &[]);
    let p = server.port;
    // Both conversations continue where they were.
    let t = say(p, "mid-flow", "Heidi");
    assert!(greets(&t[0], "Heidi") && t[1] == FIRST_TIME, "{t:?}");
    let t = say(p, "known", "again");
    assert!(greets(&t[0], "Grace"), "{t:?}");
    assert_eq!(t[1], "We already spoke 1 times!", "{t:?}");
    // The old files are moved aside, the damaged one quarantined with a line naming it.
    assert!(storage.join("imported-files/bots").join(BOT).is_dir());
    assert!(!storage.join("bots").exists());
    assert_eq!(
        quarantined(data.path()),
        [(
            "imported file".to_string(),
            format!("bots/{BOT}/users/ab/{}.json", "ab".repeat(32))
        )]
    );
    assert!(server
        .log()
        .contains("damaged file of the previous release"));
    drop(server);
    // A second start imports nothing again and the state is as the turns left it.
    let before = state_rows(data.path());
    let server = Server::start(data.path(), &[]);
    assert_eq!(state_rows(data.path()), before);
    assert!(!server.log().contains("imported the previous release"));
}

/// Runs `botd run` on `data` and returns its exit code and log, or panics if it serves.
fn run_until_exit(data: &Path) -> (i32, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_botd"))
        .args(["run", "--data", data.to_str().unwrap()])
        .env("PORT", "0")
        .env_remove("EXTERNAL_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut log)
                .unwrap();
            return (status.code().unwrap_or(-1), log);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("botd kept running on a database it should refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn schema_versions_are_migrated_or_refused() {
    // A database set up before any migration (version 0) is brought to the current one.
    let data = data_copy("schema-old");
    std::fs::create_dir_all(data.path().join("storage")).unwrap();
    database(data.path())
        .execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        .unwrap();
    let server = Server::start(data.path(), &[]);
    assert_eq!(say(server.port, "v-user", "hi"), [ASK_NAME]);
    drop(server);
    let version: i64 = database(data.path())
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, botd::store::SCHEMA_VERSION);

    // A database from a newer botd: refused with a clear message, nothing touched.
    database(data.path())
        .execute("UPDATE schema_version SET version = version + 1", [])
        .unwrap();
    let newer = botd::store::SCHEMA_VERSION + 1;
    let (code, log) = run_until_exit(data.path());
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!("schema version {newer}, newer than this botd")),
        "{log}"
    );
    let (code, out, _) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("newer than this botd knows"), "{out}");
    let still: i64 = database(data.path())
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, newer);
}

/// `make install` into a staging folder (DESTDIR), with the binary this test run built: the
/// data folder is created 0700, and the unit sets the umask and the open-file limit.
#[test]
fn make_install_keeps_the_data_folder_private() {
    use std::os::unix::fs::PermissionsExt;
    let stage = TempDir::new("install");
    let out = std::process::Command::new("make")
        .arg("install")
        .arg(format!("DESTDIR={}", stage.path().display()))
        .arg("PREFIX=/usr")
        .arg("DATA_DIR=/var/lib/botd")
        // The binary is already built: no release build here.
        .arg("CARGO=true")
        .arg(format!("BIN={}", env!("CARGO_BIN_EXE_botd")))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let data = stage.path().join("var/lib/botd");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(data
        .join("bots")
        .join(BOT)
        .join("bot.config.json")
        .is_file());
    let unit =
        std::fs::read_to_string(stage.path().join("etc/systemd/system/botd.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    assert!(lines.contains(&"UMask=0077"), "{unit}");
    assert!(lines.contains(&"LimitNOFILE=4096"), "{unit}");
}

/// `botd backup` while Converse load runs: each copy is a consistent database that a fresh
/// botd serves from, with the conversations finished before it was taken; an existing file
/// is never overwritten.
#[test]
fn backup_while_serving() {
    let data = data_copy("backup");
    let server = Server::start(data.path(), &[]);
    // Conversations finished before the backup: their counter must be in the copy.
    for u in 0..3 {
        let user = format!("early-{u}");
        assert_eq!(say(server.port, &user, "hi"), [ASK_NAME]);
        assert!(say(server.port, &user, "Ann").contains(&FIRST_TIME.to_string()));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = server.port;
    let loaders: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut played = 0;
                // Bounded: at most 300 conversations per thread.
                while played < 300 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let user = format!("load-{t}-{played}");
                    assert_eq!(say(port, &user, "hi"), [ASK_NAME]);
                    say(port, &user, "Bob");
                    played += 1;
                }
                played
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let backups = TempDir::new("backup-files");
    let mut copies = Vec::new();
    for i in 0..2 {
        let file = backups.path().join(format!("botd-{i}.sqlite"));
        let (code, out, err) = botd(
            &[
                "backup",
                file.to_str().unwrap(),
                "--data",
                data.path().to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("integrity ok"), "{out}");
        copies.push(file);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let played: usize = loaders.into_iter().map(|l| l.join().unwrap()).sum();
    assert!(played > 0);
    // Never over an existing file.
    let (code, _, err) = botd(
        &[
            "backup",
            copies[0].to_str().unwrap(),
            "--data",
            data.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    drop(server);

    for copy in &copies {
        let restored = data_copy("backup-restored");
        std::fs::create_dir_all(restored.path().join("storage")).unwrap();
        std::fs::copy(copy, restored.path().join("storage/botd.sqlite")).unwrap();
        let (code, out, _) = botd(&["check", "--data", restored.path().to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{out}");
        let server = Server::start(restored.path(), &[]);
        for u in 0..3 {
            let said = say(server.port, &format!("early-{u}"), "hello");
            assert!(
                said.contains(&"We already spoke 1 times!".to_string()),
                "{said:?}"
            );
        }
    }
}

/// A database at schema version 1 (the first SQLite release: no `channel_state`) with
/// conversations and queued items in it: botd migrates it in place and keeps every row.
#[test]
fn a_version_1_database_is_migrated_with_its_data() {
    let data = data_copy("schema-v1");
    let server = Server::start(data.path(), &[]);
    for u in 0..5 {
        let user = format!("v1-{u}");
        assert_eq!(say(server.port, &user, "hi"), [ASK_NAME]);
        say(server.port, &user, "Eve");
    }
    drop(server);
    // Back to version 1, with items on queues no channel of this data folder drains.
    let db = database(data.path());
    db.execute_batch(
        "DROP TABLE channel_state;
         UPDATE schema_version SET version = 1;
         INSERT INTO queue_items (queue, key, item, created_ms) VALUES
           ('telegram-out', 'echo-bot/1', '{\"bot\":\"echo-bot\",\"chat\":\"1\"}', 1),
           ('messenger-in', 'welcome-bot/U1', '{\"bot\":\"welcome-bot\",\"psid\":\"U1\",\"kind\":\"message\",\"payload\":{\"text\":\"hi\"}}', 2);",
    )
    .unwrap();
    drop(db);
    let queued = |data: &Path| -> Vec<(i64, String, String, String)> {
        let db = database(data);
        let mut stmt = db
            .prepare("SELECT id, queue, key, item FROM queue_items ORDER BY id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    let (state_before, queued_before) = (state_rows(data.path()), queued(data.path()));
    assert_eq!(queued_before.len(), 2);
    let (code, out, _) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");

    let server = Server::start(data.path(), &[]);
    assert!(
        server.log().contains("database schema at version 2"),
        "{}",
        server.log()
    );
    let version: i64 = database(data.path())
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, botd::store::SCHEMA_VERSION);
    assert_eq!(state_rows(data.path()), state_before);
    assert_eq!(queued(data.path()), queued_before);
    // And the migrated conversations go on where they were.
    let said = say(server.port, "v1-0", "hello");
    assert!(
        said.contains(&"We already spoke 1 times!".to_string()),
        "{said:?}"
    );
}

/// SIGKILL at random instants during Converse load, three rounds. Converse acknowledges a
/// turn by answering it, so after each restart: the flow's counter ("We already spoke N
/// times!") continues from the last answered turn — never lower (an answered turn lost),
/// never the same (a turn played twice) — and moves by at most one more for the one request
/// the kill cut off (committed, but its answer never sent).
#[test]
fn sigkill_during_converse_load_loses_no_answered_turn() {
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    use std::sync::Arc;
    let data = data_copy("converse-kill");
    let mut server = Server::start(data.path(), &[]);
    let port = Arc::new(AtomicU16::new(server.port));
    let answered = Arc::new(AtomicUsize::new(0));
    let (users, turns) = (6, 40);
    let count_of = |said: &[String]| -> Option<u64> {
        said.iter().find_map(|t| {
            t.strip_prefix("We already spoke ")
                .and_then(|r| r.strip_suffix(" times!"))
                .and_then(|n| n.parse().ok())
        })
    };
    let threads: Vec<_> = (0..users)
        .map(|u| {
            let (port, answered) = (port.clone(), answered.clone());
            std::thread::spawn(move || {
                let user = format!("killed-{u}");
                let deadline = Instant::now() + Duration::from_secs(60);
                // The name first, until answered (a cut-off "hi" just asks again).
                loop {
                    assert!(Instant::now() < deadline, "{user}: never got through");
                    let p = port.load(Ordering::SeqCst);
                    let said = common::try_converse(p, BOT, &user, "hi");
                    if said
                        .as_deref()
                        .is_some_and(|s| s.contains(&ASK_NAME.to_string()))
                    {
                        let named = common::try_converse(p, BOT, &user, "Zed");
                        if named
                            .as_deref()
                            .is_some_and(|s| s.contains(&FIRST_TIME.to_string()))
                        {
                            break;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let mut last = 0u64;
                let mut cut_off = false;
                let mut done = 0;
                while done < turns {
                    assert!(Instant::now() < deadline, "{user}: load did not finish");
                    let p = port.load(Ordering::SeqCst);
                    match common::try_converse(p, BOT, &user, "hello again") {
                        Some(said) => {
                            let n = count_of(&said)
                                .unwrap_or_else(|| panic!("{user}: no counter in {said:?}"));
                            let most = last + 1 + u64::from(cut_off);
                            assert!(
                                n > last && n <= most,
                                "{user}: counter {n} after {last} (a request cut off: {cut_off})"
                            );
                            last = n;
                            cut_off = false;
                            done += 1;
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        None => {
                            cut_off = true;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        })
        .collect();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill instants seed: {seed}");
    let mut at_kills = Vec::new();
    for _ in 0..3 {
        let before = answered.load(Ordering::SeqCst);
        wait_until(Duration::from_secs(10), || {
            answered.load(Ordering::SeqCst) > before + 10
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 200));
        server.kill();
        at_kills.push(answered.load(Ordering::SeqCst));
        server = Server::start(data.path(), &[]);
        port.store(server.port, Ordering::SeqCst);
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        at_kills[0] < users * turns,
        "the first kill came after the load: {at_kills:?}"
    );
}
