//! A private PostgreSQL cluster for the tests: `initdb` into a temporary folder as a non-root
//! user (initdb refuses root), `pg_ctl` on 127.0.0.1 with an ephemeral port, trust
//! authentication for the `botd` role, no fsync (a test cluster). Every wait is bounded.
//!
//! [`shared`] is one cluster per test binary, each test making its own database in it; a
//! watchdog shell stops that cluster when the test process ends, however it ends. A test that
//! stops and starts the server (the database going away) takes a [`Cluster::private`] one.
//! The PostgreSQL binaries are found in `PG_BINDIR`, the newest `/usr/lib/postgresql/*/bin`,
//! or `PATH`; `.ci/run` installs the `postgresql` package when they are missing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The cluster's temporary folder (also used by `make bench`, which has no `TempDir`).
pub struct Folder(PathBuf);

impl Folder {
    fn new() -> Folder {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "botd-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Folder(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Cluster {
    pub dir: Folder,
    pub port: u16,
    bin: PathBuf,
    /// The user the server runs as (`None` when the tests do not run as root).
    run_as: Option<String>,
}

/// The folder of `initdb` and `pg_ctl`.
fn bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    // On PATH (initdb and pg_ctl next to each other).
    let out = Command::new("sh")
        .arg("-c")
        .arg("command -v initdb")
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "PostgreSQL is not installed (no initdb): apt-get install postgresql, or set PG_BINDIR"
    );
    Path::new(&path).parent().unwrap().to_path_buf()
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A cluster of its own, stopped when dropped.
    pub fn private() -> Cluster {
        let bin = bindir();
        let dir = Folder::new();
        let run_as = is_root().then(|| "nobody".to_string());
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster folder");
        }
        let mut cluster = Cluster {
            dir,
            port: 0,
            bin,
            run_as,
        };
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "botd", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .arg("--no-instructions")
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A port that was free a moment ago; taken meanwhile, the start fails: try another.
        for _ in 0..3 {
            cluster.port = free_port();
            if cluster.try_start() {
                return cluster;
            }
        }
        panic!(
            "the PostgreSQL test cluster did not start: {}",
            cluster.server_log()
        );
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server (again) on its port; false when it did not come up.
    fn try_start(&self) -> bool {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='{}' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-o"])
            .arg(options)
            .arg("start")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("pg_ctl start");
        status.success()
    }

    /// Starts a stopped server again on the same port.
    pub fn start(&self) {
        assert!(self.try_start(), "pg_ctl start: {}", self.server_log());
    }

    /// Stops the server (fast: connections are closed, nothing waits).
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// A new, empty database; its URL.
    pub fn database(&self, tag: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t_{}_{}_{}",
            tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = self.client("postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://botd@127.0.0.1:{}/{db}", self.port)
    }

    /// A client on `db`, made within 10 s.
    pub fn client(&self, db: &str) -> postgres::Client {
        let start = Instant::now();
        loop {
            match postgres::Client::connect(&self.url(db), postgres::NoTls) {
                Ok(c) => return c,
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    panic!("cannot connect to the test cluster: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The cluster shared by the tests of this binary, started on first use. A watchdog shell
/// stops it (and removes its folder) once this test process is gone.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let cluster = Cluster::private();
        let pg_ctl = cluster.bin.join("pg_ctl");
        let data = cluster.dir.path().join("data");
        let stop = match &cluster.run_as {
            Some(user) => format!(
                "runuser -u {user} -- '{}' -D '{}' -m immediate -w -t 20 stop",
                pg_ctl.display(),
                data.display()
            ),
            None => format!(
                "'{}' -D '{}' -m immediate -w -t 20 stop",
                pg_ctl.display(),
                data.display()
            ),
        };
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{}'",
            std::process::id(),
            cluster.dir.path().display()
        );
        // Not waited for: it outlives this process by design, to stop the cluster after it.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the cluster's watchdog");
        cluster
    })
}
