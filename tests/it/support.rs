//! Shared test helpers: a seawall process on ephemeral ports, an HTTP client, and the
//! locations of the real PostgreSQL and ChromaDB started by `tests/run`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The environment that turns on circuit breakers and enhanced pooling (upstream slots, probes)
/// for every client.
pub const BREAKER_ON: [(&str, &str); 2] = [
    ("FF_ENABLE_CIRCUIT_BREAKER", "true"),
    ("FF_ENABLE_ENHANCED_POOLING", "true"),
];

/// Startup, shutdown and exit waits: generous, because CI machines are shared.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A required variable set by `tests/run`; a clear failure when the tests run without it.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through tests/run, which provides PostgreSQL, ChromaDB and promtool")
    })
}

/// A running seawall binary with its own temporary data directory.
pub struct Seawall {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: Arc<TempDir>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Seawall {
    /// Starts seawall with `config` as its TOML file in a fresh directory.
    pub fn start(config: &str) -> Seawall {
        Seawall::start_in(Arc::new(TempDir::new().unwrap()), config, &[])
    }

    /// Starts seawall in `dir` (reused across restarts) with extra environment variables.
    pub fn start_in(dir: Arc<TempDir>, config: &str, env: &[(&str, &str)]) -> Seawall {
        let config_path = dir.path().join("seawall.toml");
        std::fs::write(&config_path, config).unwrap();
        let command = seawall_command(dir.path(), &config_path, env);
        Seawall::launch(command, dir)
    }

    /// Starts seawall with its open-file limits set to `soft` and `hard` (through the shell's
    /// `ulimit`, which then `exec`s seawall, so the PID is seawall's).
    pub fn start_with_open_file_limit(config: &str, soft: u64, hard: u64) -> Seawall {
        let dir = Arc::new(TempDir::new().unwrap());
        let config_path = dir.path().join("seawall.toml");
        std::fs::write(&config_path, config).unwrap();
        let seawall = seawall_command(dir.path(), &config_path, &[]);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
            ))
            .arg(seawall.get_program())
            .args(seawall.get_args())
            .env_clear()
            .envs(seawall.get_envs().filter_map(|(k, v)| Some((k, v?))));
        Seawall::launch(command, dir)
    }

    fn launch(mut command: Command, dir: Arc<TempDir>) -> Seawall {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("seawall binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(line) => {
                    let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if event["message"] == "listening" {
                        let addr = |k: &str| event[k].as_str().unwrap().parse().unwrap();
                        return Seawall {
                            proxy: addr("proxy"),
                            admin: addr("admin"),
                            child,
                            dir,
                            logs,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    panic!(
                        "seawall did not start ({status}); output:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "seawall did not exit within {timeout:?}; output:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// (current, peak) resident memory in bytes, from /proc.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Seawall {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The seawall command with a clean environment: only what the test passes, never the
/// developer's own `FF_*` or `DATABASE_URL`.
pub fn seawall_command(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_seawall"));
    command
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SEAWALL_LISTEN", "127.0.0.1:0")
        .env("SEAWALL_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SEAWALL_DATA_DIR", dir.join("data"))
        .env("SEAWALL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SEAWALL_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// Runs the server command on `config` in `dir` (data in `dir/data`) and waits for it to exit
/// by itself, as it must when it cannot start; its exit code and stderr. Killed, and the test
/// failed, if it is still running after `PROCESS_TIMEOUT`.
pub fn run_until_exit(dir: &Path, config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = seawall_command(dir, config, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("seawall kept running with {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Sends a request with a streamed or complete body and collects the answer.
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: TestBody) -> Reply {
    try_send(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("request reaches seawall: {e}"))
}

/// [`send`] for tests that expect the server to go away: `Err` when the connection fails or
/// no answer comes within `PROCESS_TIMEOUT`.
pub async fn try_send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> Result<Reply, String> {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = tokio::time::timeout(
        PROCESS_TIMEOUT,
        client().request(builder.body(body).unwrap()),
    )
    .await
    .map_err(|_| "no answer within the test timeout".to_string())?
    .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e:?}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], full(Bytes::new())).await
}

pub async fn admin_get(seawall: &Seawall, path: &str) -> Reply {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    send(
        Method::GET,
        &seawall.admin_url(path),
        &[("authorization", &auth)],
        full(Bytes::new()),
    )
    .await
}

/// Writes `request` as it is on a new connection to `addr` and reads the answer until the
/// server closes: for requests a well-behaved client would never send. The request should ask
/// for `Connection: close` unless seawall closes on its own; the answer must not be chunked.
/// Interim answers (`100 Continue`) are skipped: the reply is the final one.
pub async fn raw_exchange(addr: SocketAddr, request: impl AsRef<[u8]>) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_ref()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PROCESS_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let mut answer = &answer[..];
    let (head, split, status) = loop {
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(answer)));
        let head = String::from_utf8(answer[..split].to_vec()).unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        if (100..200).contains(&status) && status != 101 {
            answer = &answer[split + 4..];
            continue;
        }
        break (head, split, status);
    };
    let lines = head.split("\r\n").skip(1);
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body: Bytes::copy_from_slice(&answer[split + 4..]),
    }
}

/// The member of a JSON array (a list in an admin answer) whose `name` is `name`.
pub fn named(list: &serde_json::Value, name: &str) -> serde_json::Value {
    list.as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("nothing named {name:?} in {list}"))
}

/// One breaker as `GET /admin/breakers` shows it.
pub async fn breaker_named(seawall: &Seawall, name: &str) -> serde_json::Value {
    let all = admin_get(seawall, "/admin/breakers").await.json();
    named(&all["breakers"], name)
}

/// Asserts the JSON error shape of answers seawall makes itself.
pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "body: {}", reply.text());
    let body = reply.json();
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        body["requestId"].as_str(),
        reply.header("x-request-id"),
        "{body}"
    );
}

/// A free loopback port: bound, then released for a server about to start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A ChromaDB server of this test's own (started with the wheel `tests/run` installed), so the
/// test may kill and restart it.
pub struct Chroma {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl Chroma {
    pub async fn start() -> Chroma {
        let mut chroma = Chroma {
            child: None,
            port: free_port(),
            dir: TempDir::new().unwrap(),
        };
        chroma.launch().await;
        chroma
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port with the same data.
    pub async fn launch(&mut self) {
        let config = self.dir.path().join("config.yaml");
        let data = self.dir.path().join("data");
        std::fs::write(
            &config,
            format!("listen_address: \"127.0.0.1\"\nport: {}\npersist_path: \"{}\"\nallow_reset: true\n", self.port, data.display()),
        )
        .unwrap();
        let child = Command::new(required_env("SEAWALL_TEST_CHROMA_PYTHON"))
            .args([
                "-c",
                "import sys, chromadb_rust_bindings as b; b.cli(['chroma', 'run', sys.argv[1]])",
            ])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ChromaDB starts");
        self.child = Some(child);
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let heartbeat = format!("{}/api/v2/heartbeat", self.url());
        loop {
            let probe = tokio::time::timeout(
                Duration::from_secs(2),
                client().get(heartbeat.parse().unwrap()),
            )
            .await;
            if let Ok(Ok(response)) = probe
                && response.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "ChromaDB did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Chroma {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of one sample in a Prometheus exposition, e.g. `name{label="x"}`.
pub use seawall::metrics::sample_value as metric;

/// Polls `/metrics` until `series` has `value`.
pub async fn await_metric(seawall: &Seawall, series: &str, value: f64) {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        let text = admin_get(seawall, "/metrics").await.text();
        if metric(&text, series) == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} never {value}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PostgreSQL cluster of this test's own, on a free port, that the test may stop and start.
/// PostgreSQL refuses to run as root, so its commands run as `SEAWALL_TEST_PG_USER`.
pub struct Pg {
    dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    user: String,
}

impl Pg {
    /// A fresh cluster, running, with a `seawall` database holding `setup`.
    pub fn start(setup: &str) -> Pg {
        let dir = TempDir::new().unwrap();
        let pg = Pg {
            port: free_port(),
            bin: PathBuf::from(required_env("SEAWALL_TEST_PG_BIN")),
            user: required_env("SEAWALL_TEST_PG_USER"),
            dir,
        };
        run(Command::new("chmod").arg("755").arg(pg.dir.path()));
        run(Command::new("chown").arg(&pg.user).arg(pg.dir.path()));
        run(pg
            .as_pg("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(pg.data()));
        pg.start_again();
        pg.psql("postgres", "CREATE DATABASE seawall");
        pg.psql("seawall", setup);
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_pg(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if whoami() == self.user {
            Command::new(path)
        } else {
            let mut command = Command::new("runuser");
            command.args(["-u", &self.user, "--"]).arg(path);
            command
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/seawall", self.port)
    }

    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(self
            .as_pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]));
    }

    /// A fast shutdown: clients are disconnected, the server stops.
    pub fn stop(&self) {
        run(self
            .as_pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]));
    }

    /// Stops every process of the cluster (SIGSTOP) until the guard is dropped: connections,
    /// new and established, are accepted by the kernel and then never answered, the way a
    /// black-holed network path or a frozen host behaves.
    pub fn freeze(&self) -> Frozen {
        let postmaster: Vec<String> = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .unwrap()
            .lines()
            .take(1)
            .map(str::to_string)
            .collect();
        // Children first, so the postmaster cannot start new ones in between.
        run(Command::new("pkill").args(["-STOP", "-P", &postmaster[0]]));
        run(Command::new("kill").args(["-STOP", &postmaster[0]]));
        Frozen {
            postmaster: postmaster[0].clone(),
        }
    }

    /// Runs SQL as the superuser and returns the unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

/// A frozen cluster (see [`Pg::freeze`]); dropping it lets it run again.
pub struct Frozen {
    postmaster: String,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.postmaster])
            .status();
        let _ = Command::new("pkill")
            .args(["-CONT", "-P", &self.postmaster])
            .status();
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .as_pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `command` to completion and returns its output; panics with the command and
/// everything it printed unless it exited 0.
pub fn run(command: &mut Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs one of the Python checkers in `tests/` (with the test tools' Python) on `document`,
/// given on its standard input, and panics with its report unless it exits 0.
pub fn assert_python_check(script: &str, args: &[&std::ffi::OsStr], document: &str, what: &str) {
    let (passed, report) = python_check(script, args, document);
    assert!(passed, "{what}:\n{report}");
}

/// Runs one of the Python checkers in `tests/` on `document` (its standard input): whether it
/// exited 0, and what it printed.
pub fn python_check(script: &str, args: &[&std::ffi::OsStr], document: &str) -> (bool, String) {
    use std::io::Write;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(required_env("SEAWALL_TEST_PYTHON"))
        .arg(root.join("tests").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(document.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}
