//! What every test needs: a throwaway database ([`TestDb`]), the real binary serving
//! it on port 0 ([`spawn_app`]), a small HTTP client, the binary run as a command
//! ([`run_cli`]), and PostgreSQL servers of a test's own ([`PgServer`]).

#![allow(dead_code)] // each test module uses its own part of this file

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HOST, HeaderMap};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_task-api");

/// A superuser (or CREATEDB) URL; `make test` sets it.
pub static ADMIN_URL: LazyLock<String> = LazyLock::new(|| {
    std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL is not set: run the suite with `make test`")
});

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// `<prefix>_<pid>_<n>`: a name no other test of this run, or of another run, uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// `url` with its database name replaced.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').expect("TEST_DATABASE_URL is a postgres:// URL");
    match query {
        Some(query) => format!("{server}/{dbname}?{query}"),
        None => format!("{server}/{dbname}"),
    }
}

/// Opens a plain connection (the test server has TLS off).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect to the test database: {err}"));
    tokio::spawn(connection);
    client
}

/// A database of one test's own: `task_api_test_<pid>_<n>`. Dropped with the
/// test, unless it panicked, so a failure leaves its data to look at.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// Creates an empty database.
    pub async fn create() -> TestDb {
        let name = unique("task_api_test");
        connect(&ADMIN_URL)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        TestDb { name }
    }

    /// Its URL, with the test server's password.
    pub fn url(&self) -> String {
        with_dbname(&ADMIN_URL, &self.name)
    }

    /// A connection, to look at the table behind the API's back.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping database {} for inspection", self.name);
            return;
        }
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await; a thread with its own runtime can.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async { connect(&ADMIN_URL).await.batch_execute(&sql).await.ok() });
            Ok::<_, std::io::Error>(())
        })
        .join()
        .ok();
    }
}

/// The real binary, serving a [`TestDb`] on 127.0.0.1 and a port of its choosing.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub child: Child,
    output: Arc<Mutex<String>>,
}

/// Starts `task-api serve` on a fresh database and waits until it listens.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// As [`spawn_app`], with extra environment variables.
pub async fn spawn_app_with(env: &[(&str, &str)]) -> TestApp {
    let db = TestDb::create().await;
    let url = db.url();
    let mut all_env = vec![("DATABASE_URL", url.as_str())];
    all_env.extend_from_slice(env);
    let (child, addr, output) = spawn_server(&all_env).await;
    TestApp { addr, db, child, output }
}

/// The real binary, serving a database made before.
pub async fn spawn_app_on(db: TestDb) -> TestApp {
    let url = db.url();
    let (child, addr, output) = spawn_server(&[("DATABASE_URL", url.as_str())]).await;
    TestApp { addr, db, child, output }
}

/// Starts the binary with exactly `env` (plus HOST and PORT) and waits for its
/// "listening on" line. Its stdout and stderr keep being collected.
pub async fn spawn_server(env: &[(&str, &str)]) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    spawn_server_args(&["serve"], env).await
}

/// A server's environment: `env`, after HOST=127.0.0.1 and PORT=0 (which `env` may
/// override), so it listens on loopback, on a port of its choosing.
pub fn server_env<'a>(env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("HOST", "127.0.0.1"), ("PORT", "0")];
    all.extend_from_slice(env);
    all
}

/// As [`spawn_server`], with the command line given.
pub async fn spawn_server_args(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    let mut child = command(args, &server_env(env))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start task-api");
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    collect(child.stdout.take().expect("piped"), output.clone(), Some(tx));
    collect(child.stderr.take().expect("piped"), output.clone(), None);
    let addr = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("task-api never listened; output:\n{}", output.lock().unwrap()));
    (child, addr, output)
}

/// Keeps reading `stream` into `output`, so a full pipe never blocks the server,
/// and reports the address from the "listening on" line.
fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    output: Arc<Mutex<String>>,
    listening: Option<tokio::sync::mpsc::UnboundedSender<SocketAddr>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let (Some(tx), Some((_, rest))) =
                (&listening, line.split_once("listening on http://"))
            {
                // The address ends the text line, or a JSON string (LOG_FORMAT=json).
                let addr = rest.split(['"', ' ']).next().unwrap_or(rest);
                tx.send(addr.trim().parse().expect("a socket address")).ok();
            }
            let mut output = output.lock().unwrap();
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// The binary as a command: a clean environment (no DATABASE_URL from the
/// developer's shell), `args`, and `env`. Killed if the test drops it.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the binary to completion (at most 90 s) and returns what it did.
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = command(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start task-api");
    tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("task-api finished within 90 s")
        .expect("wait for task-api")
}

/// Runs `n` of `task-api migrate` on `url` at once (all started before any is awaited, each
/// given 60 s) and returns each one's stdout; fails the test if one fails.
pub async fn migrate_at_once(url: &str, n: usize) -> Vec<String> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            command(&["migrate"], &[("DATABASE_URL", url)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start task-api migrate")
        })
        .collect();
    let mut outputs = Vec::new();
    for child in children {
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("migrate finished within 60 s")
            .expect("wait for migrate");
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        outputs.push(stdout);
    }
    outputs
}

/// stdout and stderr of a finished run, for assertions and failure messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What a test sees of a response.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// The body's bytes, as they came (`body` is their text).
    pub raw: Bytes,
}

impl TestResponse {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    /// `{"detail": …}`'s message.
    pub fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail: {}", self.body))
            .to_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request on a fresh connection to `addr`.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> TestResponse {
    try_send(addr, method, path, headers, body)
        .await
        .expect("send the request and read the response")
}

/// As [`send`], but a connection the server refuses, drops or cuts short is an `Err`,
/// not a panic.
pub async fn try_send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<TestResponse, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header(HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into()))?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(TestResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        raw: body,
    })
}

/// Runs every request at once, each on its own connection, and returns the responses
/// in the order given.
pub async fn all_at_once<F>(requests: Vec<F>) -> Vec<TestResponse>
where
    F: Future<Output = TestResponse> + Send + 'static,
{
    let handles: Vec<_> = requests.into_iter().map(tokio::spawn).collect();
    let mut responses = Vec::with_capacity(handles.len());
    for handle in handles {
        responses.push(handle.await.expect("a request task"));
    }
    responses
}

/// `POST /tasks` with `body` to `addr`; a future that owns what it needs, for
/// [`all_at_once`] and spawned requests.
pub async fn post_task(addr: SocketAddr, body: Value) -> TestResponse {
    send(addr, Method::POST, "/tasks", &[JSON], body.to_string()).await
}

/// Writes `request` as raw bytes and reads until the server closes or `wait` passes.
pub async fn send_raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to task-api");
    stream.write_all(request).await.expect("write the request");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

const JSON: (&str, &str) = ("content-type", "application/json");

impl TestApp {
    /// `GET path`.
    pub async fn get(&self, path: &str) -> TestResponse {
        send(self.addr, Method::GET, path, &[], Bytes::new()).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &str) -> TestResponse {
        send(self.addr, Method::POST, path, &[JSON], body.to_owned()).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &str) -> TestResponse {
        send(self.addr, Method::PATCH, path, &[JSON], body.to_owned()).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> TestResponse {
        send(self.addr, Method::DELETE, path, &[], Bytes::new()).await
    }

    /// Any request.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        send(self.addr, method, path, headers, body).await
    }

    /// Creates a task through the API and returns it; fails the test on anything but 201.
    pub async fn create_task(&self, body: Value) -> Value {
        let response = self.post("/tasks", &body.to_string()).await;
        assert_eq!(response.status, 201, "{}", response.body);
        response.json()
    }

    /// How many rows the table holds, counted behind the API's back.
    pub async fn row_count(&self) -> i64 {
        let client = self.db.client().await;
        client.query_one("SELECT count(*) FROM tasks", &[]).await.unwrap().get(0)
    }

    /// Makes every statement of `event` (INSERT, UPDATE, DELETE) on `tasks` sleep `secs`.
    pub async fn slow_down(&self, event: &str, secs: f64) {
        self.db
            .client()
            .await
            .batch_execute(&format!(
                "CREATE OR REPLACE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
                     $$ BEGIN PERFORM pg_sleep({secs}); RETURN NULL; END $$;
                 CREATE TRIGGER slow_{event} BEFORE {event} ON tasks
                     FOR EACH STATEMENT EXECUTE FUNCTION slow();"
            ))
            .await
            .unwrap();
    }

    /// Everything the server has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal(&self.child, libc::SIGTERM);
    }

    /// Waits (at most `limit`) for the server to exit.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("task-api still running after {limit:?}"))
            .expect("wait for task-api")
    }
}

/// Sends `sig` to a child process.
pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id().expect("the child is running") as libc::pid_t;
    // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A PostgreSQL server of a test's own, run by `scripts/pg.sh` in a temporary
/// directory; stopped and removed on drop.
pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
}

impl PgServer {
    /// The password `scripts/pg.sh` sets (scram-sha-256 on TCP).
    pub const PASSWORD: &str = "own-server-pw";

    /// Initialises a cluster and starts it, with TLS from `ssl` (cert, key) when given.
    pub fn start(ssl: Option<(&Path, &Path)>) -> PgServer {
        let server = PgServer::not_started();
        server.start_again(ssl);
        server
    }

    /// A server that is not running yet (see [`PgServer::start_again`]).
    pub fn not_started() -> PgServer {
        PgServer { dir: std::env::temp_dir().join(unique("task-api-pg")), port: free_port() }
    }

    /// Starts (or restarts) the server on its port.
    pub fn start_again(&self, ssl: Option<(&Path, &Path)>) {
        let mut args = vec!["start".into(), self.dir.display().to_string(), self.port.to_string()];
        if let Some((cert, key)) = ssl {
            args.extend(["--ssl".into(), cert.display().to_string(), key.display().to_string()]);
        }
        args.extend(["--".into(), "-c".into(), "fsync=off".into()]);
        pg_script(&args);
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) {
        pg_script(&["stop".into(), self.dir.display().to_string()]);
    }

    /// A URL for database `postgres` on this server, with `params` as its query.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres:{}@{host}:{}/postgres?{params}", PgServer::PASSWORD, self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.dir.join("postmaster.pid").exists() {
            self.stop();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn pg_script(args: &[String]) {
    script("pg.sh", args);
}

/// Runs `scripts/<name>` with `args`; fails the test if it fails.
fn script(name: &str, args: &[String]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name);
    let output = std::process::Command::new(path)
        .args(args)
        .env("PG_PASSWORD", PgServer::PASSWORD)
        .output()
        .unwrap_or_else(|err| panic!("run scripts/{name}: {err}"));
    assert!(
        output.status.success(),
        "scripts/{name} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A PgBouncer of a test's own, in transaction mode, in front of the test server
/// (`TEST_DATABASE_URL`), run by `scripts/pgbouncer.sh`; stopped on drop.
pub struct PgBouncer {
    pub dir: PathBuf,
    pub port: u16,
}

impl PgBouncer {
    /// Starts one on a free port.
    pub fn start() -> PgBouncer {
        let (userinfo, host) = ADMIN_URL
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .expect("TEST_DATABASE_URL holds user:password@host");
        let (user, password) = userinfo.split_once(':').expect("a password");
        let pg_port = host
            .split(['/', '?'])
            .next()
            .and_then(|h| h.rsplit_once(':'))
            .map(|(_, port)| port)
            .expect("a port in TEST_DATABASE_URL");
        let bouncer = PgBouncer {
            dir: std::env::temp_dir().join(unique("task-api-pgbouncer")),
            port: free_port(),
        };
        script(
            "pgbouncer.sh",
            &[
                "start".into(),
                bouncer.dir.display().to_string(),
                bouncer.port.to_string(),
                pg_port.to_owned(),
                user.to_owned(),
                password.to_owned(),
            ],
        );
        bouncer
    }

    /// `db`'s URL, through the pooler.
    pub fn url(&self, db: &TestDb) -> String {
        let (scheme, rest) = db
            .url()
            .split_once('@')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .expect("a URL with credentials");
        let (_, path) = rest.split_once('/').expect("a database in the URL");
        format!("{scheme}@127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        script("pgbouncer.sh", &["stop".into(), self.dir.display().to_string()]);
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The passwords a test may hold: the test server's (from `TEST_DATABASE_URL`) and
/// the one of [`PgServer`]s.
pub fn passwords() -> Vec<&'static str> {
    let admin = ADMIN_URL
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|password| !password.is_empty());
    admin.into_iter().chain([PgServer::PASSWORD]).collect()
}

/// Spec §6: no password a test knows appears in `output`.
pub fn assert_no_password(output: &str) {
    for password in passwords() {
        assert!(!output.contains(password), "a password is in:\n{output}");
    }
}

/// Polls `check` every 100 ms until it returns true; false if `limit` passes first
/// (a check that hangs counts against the limit too).
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let poll = async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(limit, poll).await.is_ok()
}
