//! Shared helpers for integration tests: a temporary copy of a data directory, the real
//! `botd` binary started on 127.0.0.1 with an ephemeral port, and a small HTTP client.
#![allow(dead_code)]

pub mod fake_bot_api;
pub mod fake_graph;
pub mod fake_http;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod proxy;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "botd-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temp copy of the repository's `data/` without run-time files.
pub fn data_copy(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let repo_data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    copy_dir(&repo_data.join("bots"), &dir.path().join("bots"));
    dir
}

/// Writes `contents` to `dir/rel`, creating folders.
pub fn write(dir: &Path, rel: &str, contents: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// The real server, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `botd run --data DIR` with `PORT=0` and the given extra environment; waits until
    /// it logs its address.
    pub fn start(data: &Path, env: &[(&str, &str)]) -> Server {
        Server::spawn(botd_command(), data, env)
    }

    /// Starts botd with at most `files` open descriptors (`ulimit -n`, then exec: the pid is
    /// botd's).
    pub fn start_with_open_files(data: &Path, files: u32) -> Server {
        let cmd = botd_command();
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
            .arg(cmd.get_program())
            .args(cmd.get_args());
        Server::spawn(shell, data, &[])
    }

    fn spawn(mut cmd: Command, data: &Path, env: &[(&str, &str)]) -> Server {
        cmd.arg("run")
            .arg("--data")
            .arg(data)
            .env("PORT", "0")
            .env("RUST_LOG", "info");
        cmd.env_remove("EXTERNAL_URL").env_remove("BP_HOST");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start botd");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("");
                        let port: u16 = addr
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0);
                        let _ = tx.send(port);
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!("botd did not start: {}", log.lock().unwrap());
            }
        };
        Server { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        wait_exit(&mut self.child, Duration::from_secs(20))
    }

    /// SIGTERM, then checks that botd exits with 0 promptly (well under systemd's 30 s).
    pub fn stop_gracefully(&mut self) {
        let asked = Instant::now();
        let status = self.terminate();
        assert!(status.success(), "exit status {status:?}: {}", self.log());
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "stop took {:?}",
            asked.elapsed()
        );
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("botd did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// One HTTP/1.1 request over a fresh connection (raw, so tests control every byte).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_answer(&raw)
}

pub fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        data = &data[pos + 2 + size + 2..];
    }
    out
}

pub fn post_json(port: u16, path: &str, body: &Value) -> Answer {
    request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// POST to the public Converse route of `bot` for `user` (user is put in the path as is).
pub fn converse(port: u16, bot: &str, user: &str, text: &str) -> Answer {
    post_json(
        port,
        &format!("/api/v1/bots/{bot}/converse/{user}"),
        &serde_json::json!({"type": "text", "text": text}),
    )
}

/// The `text` of every text-like payload of a Converse answer.
pub fn texts(answer: &Value) -> Vec<String> {
    answer["responses"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|p| {
            p["text"]
                .as_str()
                .or(p["wrapped"]["text"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// The `responses` array of a Converse answer (panics when the answer is not a 200 JSON).
pub fn responses(answer: &Answer) -> Vec<Value> {
    assert_eq!(
        answer.status,
        200,
        "expected 200, got {}: {}",
        answer.status,
        answer.text()
    );
    answer.json()["responses"]
        .as_array()
        .unwrap_or_else(|| panic!("no responses: {}", answer.text()))
        .clone()
}

/// A typing payload followed by a markdown text payload, as builtin_text renders for `api`.
pub fn typed_text(text: &str) -> Vec<Value> {
    vec![
        serde_json::json!({"type": "typing", "value": true}),
        serde_json::json!({"type": "text", "markdown": true, "text": text}),
    ]
}

/// The botd binary to test: this build's, or `BOTD_BIN` (an ARM build, `make test-arm`) run
/// through `BOTD_RUNNER` (qemu-user with its arguments) when that is set.
pub fn botd_command() -> Command {
    let bin = std::env::var("BOTD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_botd").into());
    match std::env::var("BOTD_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap_or_default());
            cmd.args(words).arg(bin);
            cmd
        }
        _ => Command::new(bin),
    }
}

/// Runs `botd <args>` to completion; returns (exit code, stdout, stderr).
pub fn botd(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = botd_command();
    cmd.args(args)
        .env_remove("EXTERNAL_URL")
        .env_remove("BP_HOST")
        .env_remove("PORT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run botd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A token from `botd token --data DIR [extra args]`.
pub fn token(data: &Path, extra: &[&str]) -> String {
    let mut args = vec!["token", "--data", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, out, err) = botd(&args, &[]);
    assert_eq!(code, 0, "botd token failed: {err}");
    out.trim().to_string()
}

/// POST to the secured Converse route with `include` and a Bearer token.
pub fn secured(
    port: u16,
    bot: &str,
    user: &str,
    body: &Value,
    include: &str,
    token: &str,
) -> Answer {
    let auth = format!("Bearer {token}");
    let path = if include.is_empty() {
        format!("/api/v1/bots/{bot}/converse/{user}/secured")
    } else {
        format!("/api/v1/bots/{bot}/converse/{user}/secured?include={include}")
    };
    request(
        port,
        "POST",
        &path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        body.to_string().as_bytes(),
    )
}

/// `state` of a secured turn with `include=state`.
pub fn state_after(port: u16, bot: &str, user: &str, text: &str, token: &str) -> Value {
    let a = secured(
        port,
        bot,
        user,
        &serde_json::json!({"type": "text", "text": text}),
        "state",
        token,
    );
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["state"].clone()
}

/// Every file below `dir`, as paths relative to it.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Makes the bot at `bot` time out after 1 s idle in the middle of a flow, with a `timeout`
/// node in `main.flow.json` that says "Still there?", and the janitor of `data` run every
/// 200 ms.
pub fn add_timeout_node(data: &Path, bot: &str) {
    write(
        data,
        "global/botpress.config.json",
        &serde_json::json!({"dialog": {"janitorInterval": "200ms"}}).to_string(),
    );
    let bot = data.join("bots").join(bot);
    let config = std::fs::read_to_string(bot.join("bot.config.json"))
        .unwrap()
        .replace("\"5m\"", "\"1s\"");
    std::fs::write(bot.join("bot.config.json"), config).unwrap();
    let flow_path = bot.join("flows/main.flow.json");
    let mut flow: Value =
        serde_json::from_str(&std::fs::read_to_string(&flow_path).unwrap()).unwrap();
    flow["nodes"].as_array_mut().unwrap().push(serde_json::json!({
        "id": "tmo001", "name": "timeout", "onEnter": ["say #!builtin_text-gone"], "onReceive": null, "next": []
    }));
    std::fs::write(flow_path, flow.to_string()).unwrap();
    let texts_path = bot.join("content-elements/builtin_text.json");
    let mut texts: Value =
        serde_json::from_str(&std::fs::read_to_string(&texts_path).unwrap()).unwrap();
    texts.as_array_mut().unwrap().push(
        serde_json::json!({"id": "builtin_text-gone", "formData": {"text$en": "Still there?"}}),
    );
    std::fs::write(texts_path, texts.to_string()).unwrap();
}

/// The store's SQLite database of a data folder (the server may be running: WAL allows it).
pub fn database(data: &Path) -> rusqlite::Connection {
    let conn =
        rusqlite::Connection::open(data.join("storage/botd.sqlite")).expect("open the database");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// How many rows of `table` belong to `bot`.
pub fn rows_of(data: &Path, table: &str, bot: &str) -> i64 {
    database(data)
        .query_row(
            &format!("SELECT count(*) FROM {table} WHERE bot = ?1"),
            [bot],
            |r| r.get(0),
        )
        .unwrap()
}

/// One Converse request that may meet a killed server: the texts of a complete `200` answer,
/// or `None` when the connection failed, was cut, or the answer is not a whole `200`.
pub fn try_converse(port: u16, bot: &str, user: &str, text: &str) -> Option<Vec<String>> {
    let body = serde_json::json!({"type": "text", "text": text}).to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let head = format!(
        "POST /api/v1/bots/{bot}/converse/{user} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    if !raw.starts_with(b"HTTP/1.1 200") {
        return None;
    }
    // A body cut off by the kill does not parse: not an answer.
    let json: Value = serde_json::from_slice(&parse_answer(&raw).body).ok()?;
    Some(texts(&json))
}

/// An action computing from `args` and a system entity of botd's NLU (a number written in
/// words), writing `user` and `temp`. Run over Converse (tests/js.rs) and Telegram (tests/telegram.rs).
pub const BMI_ACTION: &str =
    "const n = event.nlu.entities.find(e => e.type === 'system' && e.name === 'numeral')\n\
     if (!n) { temp.reply = 'no number in ' + event.preview; return }\n\
     const h = Number(args.height)\n\
     user.weight = n.data.value\n\
     temp.bmi = Math.round(n.data.value / (h * h))\n\
     temp.reply = 'BMI ' + temp.bmi + ' from \"' + n.meta.source + '\" on ' + args.channel\n";
