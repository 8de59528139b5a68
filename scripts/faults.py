#!/usr/bin/env python3
"""`make test-faults`: task-api against a slow, stalled, failing or hostile world.

Each scenario starts its own task-api servers (the release binary, HOST=127.0.0.1, a free
port) against its own database on a throwaway PostgreSQL on loopback (its own cluster where
it stops PostgreSQL), does one harmful thing (slow readers, a slow or frozen database,
stalled uploads, forged log fields, kill -9, SIGTERM, ...), and measures one figure against
the target of issue 11. Prints one line per scenario as it ends, then the markdown table of
the README's "Reliability" section, and exits 1 when any scenario failed. The cheap
scenarios run at the same time; the heavy and timing-sensitive ones one after the other.
A scenario that crashes is a FAIL with the reason; everything started is stopped on exit,
also on Ctrl-C or SIGTERM. Needs PostgreSQL (scripts/pg.sh installs it as root), psql and
prlimit; Python's standard library only.

Environment: FAULTS_BINARY (the musl release binary), FAULTS_ONLY (comma-separated
scenario names, for development), FAULTS_KEEP=1 (keep the work directory with every log).
"""

import asyncio
import collections
import itertools
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(os.environ.get("FAULTS_BINARY", ROOT / "target/x86_64-unknown-linux-musl/release/task-api"))
ONLY = [name for name in os.environ.get("FAULTS_ONLY", "").split(",") if name]
KEEP = os.environ.get("FAULTS_KEEP") == "1"
PASSWORD = "faults-pw"
# The cluster most scenarios share; outage gets one of its own, as it stops it.
PG_OPTIONS = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
              "-c", "max_connections=300"]
# task-api's migration lock (src/migrate.rs): "taskapi" in ASCII.
LOCK_KEY = 0x0074_6173_6b61_7069
# Sessions of ours, told apart from the server's in pg_stat_activity.
OUR_APPS = ("faults", "lock-holder")
BUDGET = 5.0  # a request that needs the database answers within this (seconds)
SLACK = 0.5
PRINT = threading.Lock()
STARTED = []  # everything to stop on exit: processes, clusters, sockets (each has .close())


def free_port(family=socket.AF_INET):
    with socket.socket(family) as s:
        s.bind(("::" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


def say(text):
    with PRINT:
        print(text, flush=True)


def escaped(text):
    """A log excerpt made safe for a terminal: control and separator characters escaped."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", lambda m: f"\\u{ord(m[0]):04x}", text)


# --- processes ------------------------------------------------------------------------------

class Process:
    """A child process that is killed on exit if it still runs."""

    def __init__(self, argv, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=None):
        self.popen = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, stdin=stdin)
        STARTED.append(self)

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.popen.poll() is None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.close()
        return self.popen.wait()

    def close(self):
        if self.running():
            self.popen.kill()
            self.popen.wait()


def run_binary(ctx, args, env, timeout):
    """Runs task-api to its end, its output in a log of `ctx`: (exit code or None when killed
    at `timeout`, output, seconds)."""
    full = {"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "info", **env}
    log_path = ctx.log_path(args[0])
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = Process([str(BINARY), *args], full, stdout=log, stderr=log)
        try:
            code = proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.close()
            code = None
    took = time.monotonic() - started
    return code, log_path.read_bytes().decode(errors="backslashreplace"), took


def parallel(*functions):
    """Runs each function in a thread of its own; their results, in order (an exception is re-raised)."""
    results = [None] * len(functions)

    def run(i, fn):
        try:
            results[i] = (True, fn())
        except Exception as err:  # noqa: BLE001 - handed to the caller
            results[i] = (False, err)

    threads = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(functions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ok, value in results:
        if not ok:
            raise value
    return [value for _, value in results]


class Proc:
    """Memory and descriptors of a running process, from /proc."""

    def __init__(self, pid):
        self.pid = pid

    def kib(self, key):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def nofile_soft(self):
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return line.split()[3]
        return "?"


def held_peers(port):
    """The client ports of connections to local `port` that the server still holds open, or
    that wait in its accept queue (ESTABLISHED or CLOSE_WAIT on its side)."""
    peers = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                peers.add(int(remote.rsplit(":", 1)[1], 16))
    return peers


# --- PostgreSQL -----------------------------------------------------------------------------

def pg_bindir():
    return subprocess.run([ROOT / "scripts/pg.sh", "bindir"], check=True, capture_output=True,
                          text=True).stdout.strip()


class Cluster:
    """A throwaway PostgreSQL on 127.0.0.1, run by scripts/pg.sh."""

    def __init__(self, work, name, options):
        self.dir = work / name
        self.port = free_port()
        self.options = options
        self.psql_bin = str(Path(pg_bindir()) / "psql")
        STARTED.append(self)

    def start(self):
        subprocess.run([ROOT / "scripts/pg.sh", "start", self.dir, str(self.port), "--", *self.options],
                       check=True, env=dict(os.environ, PG_PASSWORD=PASSWORD), stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run([ROOT / "scripts/pg.sh", "stop", self.dir], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    close = stop

    def url(self, db, user="postgres", password=PASSWORD, port=None):
        return f"postgres://{user}:{password}@127.0.0.1:{port or self.port}/{db}?sslmode=disable"

    def env(self, app="faults"):
        return dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="5", PGAPPNAME=app)

    def psql(self, sql, db="postgres", timeout=30):
        """Runs `sql`; its output (unaligned, tuples only), stripped."""
        out = subprocess.run(
            [self.psql_bin, "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", db, "-c", sql],
            env=self.env(), capture_output=True, text=True, timeout=timeout)
        if out.returncode:
            raise RuntimeError(f"psql: {out.stderr.strip()}")
        return out.stdout.strip()

    def createdb(self, name):
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_until(self, db, condition, limit):
        """Polls the SQL boolean `condition` until true; whether it became true within `limit` s."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.psql(f"SELECT {condition}", db) == "t":
                return True
            time.sleep(0.1)
        return False

    def server_statements(self, db):
        """How many statements task-api sessions are running (or waiting in) on `db`."""
        return int(self.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid() "
            f"AND application_name NOT IN {OUR_APPS}", db))

    def holder(self, db, sql):
        """A psql session (application_name lock-holder) that runs `sql` and stays open."""
        proc = Process([self.psql_bin, "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-d", db], self.env("lock-holder"), stdin=subprocess.PIPE)
        proc.popen.stdin.write(sql.encode() + b"\n")
        proc.popen.stdin.flush()
        return proc

    def holder_pid(self, db, lock_condition, limit=10):
        """The pid of the lock-holder on `db` once it holds a lock matching `lock_condition`."""
        found = self.wait_until(db, (
            "EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            f"WHERE a.application_name = 'lock-holder' AND a.datname = current_database() "
            f"AND l.granted AND {lock_condition})"), limit)
        if not found:
            raise RuntimeError("the lock-holder session never got its lock")
        return int(self.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'lock-holder' "
                             "AND datname = current_database()", db))


def release(holder):
    """Ends a holder session: end of input, psql quits, its transaction and locks go."""
    holder.popen.stdin.close()
    try:
        holder.popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        holder.close()


# --- task-api -------------------------------------------------------------------------------

class Server:
    """One `task-api serve`, its stdout and stderr in files of the work directory."""

    def __init__(self, ctx, url, env=None, host="127.0.0.1", prefix=()):
        self.port = free_port(socket.AF_INET6 if host is None else socket.AF_INET)
        self.log_path = ctx.log_path("serve")
        full = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url, "PORT": str(self.port),
                "LOG_LEVEL": "info", "DATABASE_STARTUP_TIMEOUT": "10"}
        if host:
            full["HOST"] = host
        full.update(env or {})
        with open(self.log_path, "ab") as log:
            self.process = Process([*prefix, str(BINARY), "serve"], full, stdout=log, stderr=log)
        self.proc = Proc(self.process.pid)
        ctx.servers.append(self)

    def wait_healthy(self, limit=20):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self.process.running():
                raise RuntimeError(f"server exited with {self.process.popen.returncode} before /health")
            if request(self.port, "GET", "/health", timeout=1).status == 200:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not answer /health within {limit} s")

    def output(self):
        return self.log_path.read_bytes().decode(errors="backslashreplace")

    def metrics(self):
        return request(self.port, "GET", "/metrics", timeout=3).body.decode(errors="replace")


def metric(text, name, **labels):
    """The sum of the series `name` whose labels include `labels`; 0 when there is none."""
    total = 0.0
    for m in re.finditer(r"^(\w+)(?:\{([^}]*)\})? (\S+)", text, re.M):
        if m[1] == name and all(f'{k}="{v}"' in (m[2] or "") for k, v in labels.items()):
            total += float(m[3])
    return total


# --- HTTP -----------------------------------------------------------------------------------

@dataclass
class Call:
    """One request on a fresh connection, and what became of it."""
    method: str
    started: float
    status: int | None = None  # None: no answer; `error` says why
    error: str = ""
    sent: float | None = None  # when the request was written
    took: float = 0.0
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    @property
    def end(self):
        return self.started + self.took

    def json(self):
        return json.loads(self.body)

    def outcome(self):
        return str(self.status) if self.status else self.error


def request_bytes(method, path, body=None, headers=None):
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def read_response(reader, method="GET"):
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
    if status in (204, 304) or method == "HEAD":
        body = b""
    elif "chunked" in headers.get("transfer-encoding", ""):
        body = bytearray()
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        while (await reader.readline()).strip():
            pass
        body = bytes(body)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return status, headers, body


def why(err):
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, asyncio.IncompleteReadError):
        return "closed without answer"
    names = {ConnectionRefusedError: "refused", ConnectionResetError: "reset"}
    return names.get(type(err), type(err).__name__)


async def call(port, method, path, body=None, headers=None, timeout=10.0, host="127.0.0.1", raw=None):
    """One request with a time limit, on a fresh connection; never raises."""
    c = Call(method, time.monotonic())
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            writer.write(raw or request_bytes(method, path, body, headers))
            await writer.drain()
            c.sent = time.monotonic()
            c.status, c.headers, c.body = await read_response(reader, method)
    except (OSError, TimeoutError, EOFError, ValueError, asyncio.LimitOverrunError) as err:
        c.error = why(err)
    finally:
        if writer:
            writer.close()
    c.took = time.monotonic() - c.started
    return c


def request(port, method, path, body=None, headers=None, timeout=10.0, host="127.0.0.1"):
    return asyncio.run(call(port, method, path, body, headers, timeout, host))


async def gather(*coroutines):
    return await asyncio.gather(*coroutines)


async def probe_health(port, stop, every=0.5):
    """GET /health from a fresh connection every `every` s until `stop`; the calls."""
    calls = []
    while not stop.is_set():
        calls.append(await call(port, "GET", "/health", timeout=2))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
    return calls


def health_failures(calls):
    return sum(c.status != 200 for c in calls)


def statuses(calls):
    return dict(collections.Counter(c.outcome() for c in calls))


# --- scenarios ------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    what: str
    target: str
    run: object
    heavy: bool  # run alone: heavy, or its figure is a timing
    needs_db: bool


SCENARIOS = []


def scenario(name, what, target, heavy=False, needs_db=True):
    def register(fn):
        SCENARIOS.append(Scenario(name, what, target, fn, heavy, needs_db))
        return fn
    return register


class Context:
    """What one scenario started: its servers, and the logs of each task-api it ran (their
    tails are shown when it fails)."""

    def __init__(self, name, work, cluster):
        self.name, self.work, self.cluster = name, work, cluster
        self.servers = []
        self.logs = []
        self.numbers = itertools.count()

    def log_path(self, command):
        path = self.work / f"{self.name}-{next(self.numbers)}-{command}.log"
        self.logs.append(path)
        return path

    def database(self, suffix=""):
        name = self.name.replace("-", "_") + suffix
        self.cluster.createdb(name)
        return name

    def server(self, url, wait=True, **options):
        server = Server(self, url, **options)
        return server.wait_healthy() if wait else server

    def close(self):
        for server in self.servers:
            server.process.stop()


@scenario("memory", heavy=True,
          what="1,000 rows of control characters (31 MB as JSON); 100 clients GET /tasks?limit=1000, "
               "50 read 1 KB/s, 50 never read, for 15 s",
          target="peak RSS ≤ 64 MiB; every non-reader let go ≤ 15 s; a normal client gets all 1,000; "
                 "/health always")
def memory(ctx):
    db = ctx.database()
    server = ctx.server(ctx.cluster.url(db))
    ctx.cluster.psql("INSERT INTO tasks (title, description) "
                     "SELECT repeat(chr(1), 200), repeat(chr(1), 5000) FROM generate_series(1, 1000)", db)
    idle_mib = server.proc.kib("VmRSS") / 1024
    r = asyncio.run(memory_attack(server.port))
    peak = server.proc.kib("VmHWM") / 1024
    cut = r["cut"]
    slowest = max(cut.values(), default=0)
    figure = (f"peak RSS {peak:.1f} MiB (idle {idle_mib:.1f}); non-readers let go {len(cut)}/50"
              f"{f' (slowest {slowest:.1f} s)' if cut else ''}; slow readers got {r['readers']}; "
              f"normal client: {r['normal']}; "
              f"/health {health_failures(r['health'])} failures of {len(r['health'])}")
    ok = (peak <= 64 and len(cut) == 50 and slowest <= 15 and r["normal"] == "1000 items"
          and health_failures(r["health"]) == 0)
    return figure, ok


async def memory_attack(port, clients=100, seconds=15):
    socks = [socket.socket() for _ in range(clients)]
    try:
        return await attack(port, socks, seconds)
    finally:
        for s in socks:
            s.close()


async def attack(port, socks, seconds):
    """Half of `socks` read 1 KB/s, half never read, for `seconds`; a normal client and /health
    probes meanwhile."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with asyncio.timeout(10):
        for s in socks:
            # A small receive buffer, no autotuning: the server's writes block soon.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", port))
            await loop.sock_sendall(s, request_bytes("GET", "/tasks?limit=1000"))
    sent = time.monotonic()
    readers, idle = socks[: len(socks) // 2], socks[len(socks) // 2:]

    async def trickle(s):  # 1 KB/s until the server closes; the status it answered
        status = "no answer"
        while not stop.is_set():
            await asyncio.sleep(1)
            try:
                data = s.recv(1024)
            except BlockingIOError:
                continue
            except OSError:
                break
            if status == "no answer" and data.startswith(b"HTTP/"):
                status = data.split()[1].decode()
            if not data:
                break
        return status

    async def watch_cuts():  # when the server let go of each non-reader (absent twice in a row)
        cut, absent, ports = {}, {}, {s.getsockname()[1] for s in idle}
        while not stop.is_set():
            held = held_peers(port)
            for client in ports - cut.keys():
                if client in held:
                    absent.pop(client, None)
                elif client in absent:
                    cut[client] = absent[client] - sent
                else:
                    absent[client] = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        return cut

    async def normal():
        await asyncio.sleep(2)
        c = await call(port, "GET", "/tasks?limit=1000", timeout=60)
        if c.status != 200:
            return f"got {c.outcome()}"
        items = c.json()
        good = sum(t["title"] == "\x01" * 200 and t["description"] == "\x01" * 5000 for t in items)
        return f"{good} items" if good == len(items) else f"{len(items)} items, {len(items) - good} wrong"

    async def end():
        await asyncio.sleep(seconds)
        stop.set()

    tasks = [asyncio.create_task(trickle(s)) for s in readers]
    cut, health, normal_result, _ = await asyncio.gather(
        watch_cuts(), probe_health(port, stop), normal(), end())
    answers = collections.Counter(await asyncio.gather(*tasks))
    return {"cut": cut, "health": health, "normal": normal_result, "readers": dict(answers)}


@scenario("slow-db", heavy=True,
          what="insert trigger sleeping 3 s per statement, 30 concurrent POSTs; update/delete triggers "
               "sleeping 6 s, a PATCH and a DELETE",
          target="no error answer stored; every 201 stored; errors ≤ 5.5 s; PATCH and DELETE 503, "
                 "row unchanged")
def slow_db(ctx):
    c = ctx.cluster
    db = ctx.database()
    server = ctx.server(c.url(db))
    c.psql("CREATE FUNCTION faults_sleep() RETURNS trigger LANGUAGE plpgsql AS "
           "$$ BEGIN PERFORM pg_sleep(TG_ARGV[0]::float8); RETURN NULL; END $$", db)
    c.psql("CREATE TRIGGER slow_insert BEFORE INSERT ON tasks FOR EACH STATEMENT "
           "EXECUTE FUNCTION faults_sleep('3')", db)
    tag = uuid.uuid4().hex[:8]
    titles = [f"slow-{tag}-{i}" for i in range(30)]
    calls = asyncio.run(gather(*(call(server.port, "POST", "/tasks", {"title": t}, timeout=30)
                                 for t in titles)))
    c.wait_until(db, "NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                     "AND state = 'active' AND pid <> pg_backend_pid() "
                     f"AND application_name NOT IN {OUR_APPS})", 20)
    stored = set(c.psql(f"SELECT title FROM tasks WHERE title LIKE 'slow-{tag}-%'", db).splitlines())
    errors = [(t, k) for t, k in zip(titles, calls) if k.status != 201]
    stored_errors = sum(t in stored for t, _ in errors)
    lost = sum(k.status == 201 and t not in stored for t, k in zip(titles, calls))
    slow_errors = max((k.took for _, k in errors), default=0)
    slow_201 = max((k.took for k in calls if k.status == 201), default=0)

    c.psql("DROP TRIGGER slow_insert ON tasks", db)
    patch_id, delete_id = c.psql(f"INSERT INTO tasks (title) VALUES ('patch-{tag}'), ('delete-{tag}') "
                                 "RETURNING id", db).split()
    for event in ("UPDATE", "DELETE"):
        c.psql(f"CREATE TRIGGER slow_{event.lower()} BEFORE {event} ON tasks FOR EACH STATEMENT "
               "EXECUTE FUNCTION faults_sleep('6')", db)
    sent = time.monotonic()
    patch, delete = asyncio.run(gather(
        call(server.port, "PATCH", f"/tasks/{patch_id}", {"title": f"patched-{tag}"}, timeout=15),
        call(server.port, "DELETE", f"/tasks/{delete_id}", timeout=15)))
    time.sleep(max(0.0, sent + 8 - time.monotonic()))  # a statement left running would be done by now
    title = c.psql(f"SELECT title FROM tasks WHERE id = {patch_id}", db)
    kept = c.psql(f"SELECT count(*) FROM tasks WHERE id = {delete_id}", db) == "1"
    unchanged = title == f"patch-{tag}"

    figure = (f"POST: {len(errors)} errors {statuses([k for _, k in errors])}, {stored_errors} of them "
              f"stored (target 0), {len(calls) - len(errors)} 201s, {lost} not stored; slowest error "
              f"{slow_errors:.1f} s, slowest 201 {slow_201:.1f} s; PATCH {patch.outcome()} in "
              f"{patch.took:.1f} s, row {'unchanged' if unchanged else 'CHANGED'}; DELETE {delete.outcome()} "
              f"in {delete.took:.1f} s, row {'kept' if kept else 'DELETED'}")
    ok = (stored_errors == 0 and lost == 0 and slow_errors <= BUDGET + SLACK
          and patch.status == 503 and patch.took <= BUDGET + SLACK and unchanged
          and delete.status == 503 and delete.took <= BUDGET + SLACK and kept)
    return figure, ok


@scenario("stalled", heavy=True,
          what="2,000 connections send POST headers (content-length 65536) and 1 byte of body, then stall",
          target="all closed ≤ 15 s; fds back to baseline; /health always; body_timeout counted")
def stalled(ctx, clients=2000, limit=15):
    server = ctx.server(ctx.cluster.url(ctx.database()))
    before_metrics = server.metrics()
    baseline = server.proc.fds()
    r = asyncio.run(stall(server.port, server.proc, clients, limit))
    deadline = time.monotonic() + 5
    while server.proc.fds() > baseline + 16 and time.monotonic() < deadline:
        time.sleep(0.2)
    after = server.proc.fds()
    moved = (metric(server.metrics(), "task_api_http_connections_closed_total", reason="body_timeout")
             - metric(before_metrics, "task_api_http_connections_closed_total", reason="body_timeout"))
    closed = [t for t in r["closed"] if t is not None and t <= limit]
    fails = health_failures(r["health"])
    figure = (f"closed {len(closed)}/{clients} within {limit} s"
              f"{f' (slowest {max(closed):.1f} s)' if closed else ''}; {r['refused']} not even connected; "
              f"server fds {baseline} → peak {r['peak']} → {after}; /health {fails} failures of "
              f"{len(r['health'])}; body_timeout +{moved:.0f}")
    ok = len(closed) == clients and after <= baseline + 16 and fails == 0 and moved > 0
    return figure, ok


async def stall(port, proc, clients, limit):
    head = (b"POST /tasks HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 65536\r\n\r\n{")
    stop = asyncio.Event()
    peak = [proc.fds()]

    async def open_one():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(head)
            await writer.drain()
            return reader, writer, time.monotonic()
        except (OSError, TimeoutError):
            return None

    async def watch(reader, opened, until):  # seconds until the server closed, or None
        try:
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                while await reader.read(4096):
                    pass
        except TimeoutError:
            return None
        except OSError:
            pass
        return time.monotonic() - opened

    async def sample_fds():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.fds())
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass

    sampler = asyncio.create_task(sample_fds())
    health = asyncio.create_task(probe_health(port, stop))
    conns = []
    for start in range(0, clients, 200):
        conns += await asyncio.gather(*(open_one() for _ in range(start, min(clients, start + 200))))
    opened = [c for c in conns if c]
    until = max((c[2] for c in opened), default=time.monotonic()) + limit
    closed = await asyncio.gather(*(watch(r, t, t + limit) for r, _, t in opened))
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    stop.set()
    health_calls = await health
    await sampler
    for _, writer, _ in opened:
        writer.close()
    return {"closed": closed, "refused": clients - len(opened), "peak": peak[0], "health": health_calls}


@scenario("fd-limit", heavy=True,
          what="server started with soft nofile 256 (hard unchanged); 1,000 idle connections, "
               "then GET /health on each",
          target="1,000 of 1,000 answered")
def fd_limit(ctx, clients=1000):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    server = ctx.server(ctx.cluster.url(ctx.database()),
                        prefix=("prlimit", f"--nofile=256:{hard_text}", "--"))
    soft = server.proc.nofile_soft()
    answered, connected = asyncio.run(idle_then_health(server.port, clients))
    figure = (f"{answered}/{clients} answered ({connected} connected); the server's soft nofile "
              f"is {soft} (started at 256)")
    return figure, answered == clients


async def idle_then_health(port, clients):
    async def open_one():
        try:
            return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            return None

    async def ask(reader, writer):
        try:
            writer.write(request_bytes("GET", "/health"))
            await writer.drain()
            status, _, _ = await asyncio.wait_for(read_response(reader), 10)
            return status == 200
        except (OSError, TimeoutError, EOFError, ValueError):
            return False
        finally:
            writer.close()

    conns = []
    for start in range(0, clients, 250):
        conns += await asyncio.gather(*(open_one() for _ in range(start, min(clients, start + 250))))
    opened = [c for c in conns if c]
    await asyncio.sleep(1)
    answers = await asyncio.gather(*(ask(r, w) for r, w in opened))
    return sum(answers), len(opened)


@scenario("sslmode",
          what="PostgreSQL without TLS; `migrate` with postgresql://u:a?b@…?sslmode=require "
               "(a '?' in the password), then the same URL with sslmode=disable",
          target="require: exit 1, no plaintext login, nothing created; disable: exit 0")
def sslmode(ctx):
    c = ctx.cluster
    c.psql("CREATE ROLE qmark LOGIN SUPERUSER PASSWORD 'a?b'")
    c.psql("CREATE DATABASE sslmode OWNER qmark")
    base = f"postgresql://qmark:a?b@127.0.0.1:{c.port}/sslmode"
    log = c.dir / "server.log"
    mark = log.stat().st_size
    code, out, took = run_binary(ctx, ["migrate"], {"DATABASE_URL": base + "?sslmode=require",
                                                   "DATABASE_STARTUP_TIMEOUT": "3"}, timeout=15)
    with open(log, "rb") as f:
        f.seek(mark)
        logins = f.read().decode(errors="replace").count("connection authorized: user=qmark")
    created = c.psql("SELECT to_regclass('public.tasks') IS NOT NULL", "sslmode") == "t"
    says_tls = bool(re.search(r"TLS|SSL", out, re.I))
    code2, out2, _ = run_binary(ctx, ["migrate"], {"DATABASE_URL": base + "?sslmode=disable",
                                                  "DATABASE_STARTUP_TIMEOUT": "5"}, timeout=15)
    figure = (f"require: exit {code} in {took:.1f} s{'' if says_tls else ' (no word of TLS)'}, "
              f"{logins} plaintext logins, tasks table {'CREATED' if created else 'absent'}; "
              f"disable: exit {code2}")
    if code2 != 0:
        figure += f" ({(out2.strip().splitlines() or ['no output'])[-1]})"
    ok = code == 1 and says_tls and logins == 0 and not created and code2 == 0
    return figure, ok


@scenario("verify-ca", needs_db=False,
          what="`migrate` with sslmode=verify-ca and no sslrootcert; verify-ca and require with "
               "sslrootcert=system",
          target="exit 2 naming sslrootcert, 3 of 3")
def verify_ca(ctx):
    cases = ["sslmode=verify-ca", "sslmode=verify-ca&sslrootcert=system",
             "sslmode=require&sslrootcert=system"]
    results = parallel(*(lambda q=q: run_binary(
        ctx, ["migrate"], {"DATABASE_URL": f"postgresql://u:p@127.0.0.1:1/d?{q}",
                           "DATABASE_STARTUP_TIMEOUT": "1"}, timeout=10) for q in cases))
    good = [code == 2 and "sslrootcert" in out for code, out, _ in results]
    figure = f"{sum(good)}/3 exit 2 naming sslrootcert" + "".join(
        f"; {q}: exit {code}" for q, (code, _, _), g in zip(cases, results, good) if not g)
    return figure, all(good)


@scenario("startup-hang",
          what="DATABASE_STARTUP_TIMEOUT=3 against a host that accepts TCP and says nothing (plain, and "
               "sslmode=require); `migrate` while a session holds the migration lock, or locks the "
               "schema table",
          target="exit 1 within 5 s (silent host) / 6 s (locks), the holder named by pid and "
                 "application_name")
def startup_hang(ctx):
    silent = Silent()
    c = ctx.cluster
    env = {"DATABASE_STARTUP_TIMEOUT": "3", "HOST": "127.0.0.1"}

    def silent_host(mode):
        url = f"postgres://u:p@127.0.0.1:{silent.port}/d?sslmode={mode}"
        return run_binary(ctx, ["serve"], {**env, "PORT": str(free_port()), "DATABASE_URL": url}, timeout=12)

    def locked(suffix, prepare, sql, lock_condition):
        db = ctx.database(suffix)
        url = c.url(db)
        if prepare:
            code, out, _ = run_binary(ctx, ["migrate"], {"DATABASE_URL": url}, timeout=20)
            if code != 0:
                raise RuntimeError(f"first migrate: exit {code}: {out.strip()[-200:]}")
        holder = c.holder(db, sql)
        try:
            pid = c.holder_pid(db, lock_condition)
            code, out, took = run_binary(ctx, ["migrate"], {**env, "DATABASE_URL": url}, timeout=12)
            return code, out, took, pid
        finally:
            release(holder)

    try:
        plain, tls, advisory, table = parallel(
            lambda: silent_host("disable"), lambda: silent_host("require"),
            lambda: locked("_lock", False, f"SELECT pg_advisory_lock({LOCK_KEY});",
                           "l.locktype = 'advisory'"),
            lambda: locked("_table", True,
                           "BEGIN; LOCK TABLE refinery_schema_history IN ACCESS EXCLUSIVE MODE;",
                           "l.mode = 'AccessExclusiveLock' "
                           "AND l.relation = 'refinery_schema_history'::regclass"))
    finally:
        silent.close()

    def exited(code, took):
        if code is None:
            return f"still running after {took:.0f} s (killed)"
        return f"exit {code} in {took:.1f} s"

    def names(out, pid):
        return "lock-holder" in out and re.search(rf"\bpid\W{{0,3}}{pid}\b", out) is not None

    figure = (f"silent host: {exited(plain[0], plain[2])}; silent host, TLS: {exited(tls[0], tls[2])}; "
              f"migration lock: {exited(advisory[0], advisory[2])}"
              f"{', holder named' if names(advisory[1], advisory[3]) else ', holder NOT named'}; "
              f"schema table lock: {exited(table[0], table[2])}"
              f"{', holder named' if names(table[1], table[3]) else ', holder NOT named'}")
    ok = (all(r[0] == 1 and r[2] <= 5 for r in (plain, tls))
          and all(r[0] == 1 and r[2] <= 6 and names(r[1], r[3]) for r in (advisory, table)))
    return figure, ok


class Silent:
    """A TCP listener that accepts connections and never sends a byte."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        STARTED.append(self)

    def _accept(self):
        while not self.closed:
            try:
                self.conns.append(self.sock.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self):
        self.closed = True
        self.sock.close()
        for conn in self.conns:
            conn.close()


@scenario("debug-log",
          what="LOG_LEVEL=debug, then RUST_LOG=debug: POST, GET and PATCH a task whose title and "
               "description hold a unique marker",
          target="0 markers in stdout and stderr")
def debug_log(ctx):
    parts, ok = [], True
    for i, env in enumerate(({"LOG_LEVEL": "debug"}, {"RUST_LOG": "debug"})):
        server = ctx.server(ctx.cluster.url(ctx.database(f"_{i}")), env=env)
        marker, marker2 = uuid.uuid4().hex, uuid.uuid4().hex
        created = request(server.port, "POST", "/tasks",
                          {"title": f"t-{marker}", "description": f"d-{marker}"})
        task_id = created.json()["id"] if created.status == 201 else 0
        fetched = request(server.port, "GET", f"/tasks/{task_id}")
        patched = request(server.port, "PATCH", f"/tasks/{task_id}",
                          {"title": f"t-{marker2}", "description": f"d-{marker2}"})
        server.process.stop()
        text = server.output()
        found = text.count(marker) + text.count(marker2)
        debug_lines = text.count(" DEBUG ")
        answers = f"{created.outcome()}/{fetched.outcome()}/{patched.outcome()}"
        var = next(iter(env))
        parts.append(f"{var}=debug: {found} markers in {text.count(chr(10))} lines "
                     f"({debug_lines} at debug; answers {answers})")
        ok = ok and found == 0 and answers == "201/200/200"
    return "; ".join(parts), ok


@scenario("abandoned", heavy=True,
          what="10 GETs left after 0.5 s while a session locks tasks; then 50 GETs in a row; then a proxy "
               "to PostgreSQL that freezes (forwards nothing, keeps sockets open) for 8 s",
          target="0 statements left 6 s after the clients left; 50 × 200 < 200 ms; frozen: 503 ≤ 5.5 s, "
                 "/ready 503 ≤ 1.5 s; recovery ≤ 15 s")
def abandoned(ctx):
    c = ctx.cluster
    db = ctx.database()
    server = ctx.server(c.url(db))
    c.psql("INSERT INTO tasks (title) SELECT 'abandoned ' || g FROM generate_series(1, 20) g", db)
    holder = c.holder(db, "BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE;")
    try:
        c.holder_pid(db, "l.mode = 'AccessExclusiveLock' AND l.relation = 'tasks'::regclass")
        paths = ["/tasks?limit=5", "/tasks/1"] * 5
        waiting_at_leave = asyncio.run(abandon(server.port, paths, lambda: c.server_statements(db)))
        left = time.monotonic()
        cleared, remaining = None, waiting_at_leave
        while time.monotonic() < left + 6:
            remaining = c.server_statements(db)
            if remaining == 0:
                cleared = time.monotonic() - left
                break
            time.sleep(0.25)
    finally:
        release(holder)
    in_row = [request(server.port, "GET", "/tasks?limit=5", timeout=5) for _ in range(50)]
    fast = sum(k.status == 200 and k.took < 0.2 for k in in_row)
    frozen = silent_peer(ctx)
    figure = (f"abandoned: {waiting_at_leave} statements waiting when the clients left, "
              + (f"0 after {cleared:.1f} s" if cleared is not None else f"{remaining} still there after 6 s")
              + f"; then {fast}/50 fast 200s (slowest {max(k.took for k in in_row) * 1000:.0f} ms); "
              + frozen["figure"])
    ok = waiting_at_leave > 0 and cleared is not None and fast == 50 and frozen["ok"]
    return figure, ok


async def abandon(port, paths, count_waiting):
    """Sends each GET, waits 0.5 s, hangs up; how many statements the server had waiting then."""
    conns = [await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5) for _ in paths]
    for (_, writer), path in zip(conns, paths):
        writer.write(request_bytes("GET", path))
    await asyncio.gather(*(w.drain() for _, w in conns))
    await asyncio.sleep(0.5)
    waiting = await asyncio.to_thread(count_waiting)
    for _, writer in conns:
        writer.transport.abort()
    return waiting


def silent_peer(ctx, frozen_for=8):
    """Part (d) of abandoned: task-api → Proxy → PostgreSQL, the proxy frozen `frozen_for` s."""
    c = ctx.cluster
    db = ctx.database("_silent")
    proxy = Proxy(c.port)
    try:
        server = ctx.server(c.url(db, port=proxy.port))
        c.psql("INSERT INTO tasks (title) SELECT 'silent ' || g FROM generate_series(1, 5) g", db)
        warm = asyncio.run(gather(*(call(server.port, "GET", f"/tasks/{i % 5 + 1}") for i in range(16))))
        frozen_at = proxy.freeze()
        gets = asyncio.run(gather(
            *(call(server.port, "GET", p, timeout=15) for p in ("/tasks/1", "/tasks?limit=5", "/tasks/2",
                                                               "/tasks?status=pending")),
            call(server.port, "GET", "/ready", timeout=5)))
        ready = gets.pop()
        time.sleep(max(0.0, frozen_at + frozen_for - time.monotonic()))
        held = proxy.reset()
        back = time.monotonic()
        recovered = None
        while time.monotonic() < back + 15:
            if request(server.port, "GET", "/tasks?limit=1", timeout=6).status == 200:
                recovered = time.monotonic() - back
                break
            time.sleep(0.2)
    finally:
        proxy.close()
    dropped = [t for t in held if t is not None]
    kept = len(held) - len(dropped)
    figure = (f"frozen database: warm-up {statuses(warm)}, GETs {statuses(gets)} (slowest "
              f"{max(k.took for k in gets):.1f} s), /ready {ready.outcome()} in {ready.took:.1f} s; "
              f"the server dropped {len(dropped)} of {len(held)} frozen connections"
              f"{f' (last after {max(dropped):.1f} s)' if dropped else ''}"
              f"{f', held {kept} all {frozen_for} s' if kept else ''}; "
              + (f"recovered {recovered:.2f} s after the proxy was replaced" if recovered is not None
                 else "NOT recovered within 15 s"))
    ok = (all(k.status == 503 and k.took <= BUDGET + SLACK for k in gets)
          and ready.status == 503 and ready.took <= 1.5 and recovered is not None)
    return {"figure": figure, "ok": ok}


@dataclass
class Link:
    """One connection through the Proxy: the server's side and the database's."""
    down: socket.socket
    up: socket.socket
    dropped: float | None = None  # seconds into the freeze when the server hung up
    ended: float | None = None  # when it ended, for whatever reason

    def end(self, reset=False):
        if self.ended is None:
            self.ended = time.monotonic()
            for s in (self.down, self.up):
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()


class Proxy:
    """A TCP proxy to PostgreSQL that can freeze: forward nothing, keep every socket open.

    While frozen it watches the server's side of each connection for a hang-up (POLLRDHUP)
    without reading it. reset() ends the freeze the way a replaced peer would: every old
    connection is reset, new ones are forwarded again."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.frozen = threading.Event()
        self.frozen_at = 0.0
        self.links = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        STARTED.append(self)

    def _accept(self):
        while not self.closed:
            try:
                down = self.sock.accept()[0]
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except TimeoutError:
                continue
            except OSError:
                if self.closed:
                    return
                continue
            link = Link(down, up)
            self.links.append(link)
            threading.Thread(target=self._pump, args=(link,), daemon=True).start()

    def _pump(self, link):
        watcher = select.poll()
        watcher.register(link.down, select.POLLRDHUP)
        try:
            while link.ended is None and not self.closed:
                if self.frozen.is_set():
                    if watcher.poll(100):
                        link.dropped = time.monotonic() - self.frozen_at
                        break
                    continue
                for s in select.select([link.down, link.up], [], [], 0.1)[0]:
                    data = s.recv(65536)
                    if not data:
                        return
                    (link.up if s is link.down else link.down).sendall(data)
        except OSError:
            pass
        finally:
            link.end()

    def freeze(self):
        self.frozen_at = time.monotonic()
        self.frozen.set()
        return self.frozen_at

    def reset(self):
        """Resets every connection; for each one open during the freeze, when the server
        dropped it (None: it held it to the end)."""
        frozen = [link for link in list(self.links) if link.ended is None or link.ended >= self.frozen_at]
        for link in frozen:
            link.end(reset=True)
        self.frozen.clear()
        return [link.dropped for link in frozen]

    def close(self):
        self.closed = True
        self.sock.close()
        self.reset()


@scenario("fallback",
          what="the server's role may not INSERT (42501): 64 concurrent POSTs; then a CHECK refusing "
               "titles 'refused…': 100 concurrent POSTs, 20 refused",
          target="64 × 500/503 and 0 'one by one' fallbacks; then 20 × 422 and 80 × 201")
def fallback(ctx):
    c = ctx.cluster
    db = ctx.database()
    code, out, _ = run_binary(ctx, ["migrate"], {"DATABASE_URL": c.url(db)}, timeout=20)
    if code != 0:
        raise RuntimeError(f"migrate as superuser: exit {code}: {out.strip()[-200:]}")
    c.psql("CREATE ROLE app LOGIN PASSWORD 'app-pw'")
    for grant in ("USAGE, CREATE ON SCHEMA public", "SELECT, UPDATE, DELETE ON tasks",
                  "SELECT ON refinery_schema_history"):
        c.psql(f"GRANT {grant} TO app", db)
    server = ctx.server(c.url(db, user="app", password="app-pw"))
    denied = asyncio.run(gather(*(call(server.port, "POST", "/tasks", {"title": f"denied {i}"})
                                  for i in range(64))))
    fallbacks = server.output().count("one by one")
    c.psql("GRANT INSERT ON tasks TO app", db)
    c.psql("ALTER TABLE tasks DROP CONSTRAINT tasks_title_check, ADD CONSTRAINT tasks_title_check CHECK "
           "(char_length(title) BETWEEN 1 AND 200 AND title ~ '[^[:space:]]' "
           "AND title NOT LIKE 'refused%')", db)
    titles = [f"refused {i}" if i % 5 == 0 else f"fine {i}" for i in range(100)]
    mixed = asyncio.run(gather(*(call(server.port, "POST", "/tasks", {"title": t}) for t in titles)))
    refused = [k for t, k in zip(titles, mixed) if t.startswith("refused")]
    fine = [k for t, k in zip(titles, mixed) if not t.startswith("refused")]
    figure = (f"no INSERT right: 64 POSTs → {statuses(denied)}, {fallbacks} 'one by one' fallbacks "
              "(target 0); "
              f"CHECK: refused → {statuses(refused)}, others → {statuses(fine)}")
    ok = (all(k.status in (500, 503) for k in denied) and fallbacks == 0
          and all(k.status == 422 for k in refused) and all(k.status == 201 for k in fine))
    return figure, ok


# Requests whose path, request id or method a naive logger would write raw.
HOSTILE = [
    b"GET /tasks/\xe2\x80\xa8status=500 HTTP/1.1",  # U+2028, raw
    b"GET /tasks/\xc2\x85status=500 HTTP/1.1",  # U+0085, raw
    b"GET /tasks/\x85\x9b\x9d HTTP/1.1",  # C1 bytes, not even UTF-8
    b"GET /tasks/%E2%80%A8x%C2%85y HTTP/1.1",
    b"GET /tasks/x%0D%0AINFO%20access:%20GET%20/%20200 HTTP/1.1",
    b'GET /tasks/a"b%22 HTTP/1.1',
    b'GET /tasks/x"%20status=500%20user="admin HTTP/1.1',
    b"GET /tasks/a\rb HTTP/1.1",
    b"GET /tasks/a b status=500 HTTP/1.1",
    b'GET /tasks/x" status=500 user="admin HTTP/1.1',
    b"GET /health\x0bstatus=500 HTTP/1.1",
    b'G"ET /health HTTP/1.1',
]
HOSTILE_IDS = ["1 status=500 user=admin", '" user=admin status=500 "', "x\\\" status=500"]


@scenario("log-forging",
          what="raw paths with U+2028, U+0085, C1 bytes, CR, quotes and spaces; "
               "x-request-id: 1 status=500 user=admin",
          target="every access line is 5 logfmt fields; 0 forged status=/user= fields; "
                 "0 raw control characters")
def log_forging(ctx):
    server = ctx.server(ctx.cluster.url(ctx.database()))
    raws = [line + b"\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n" for line in HOSTILE]
    raws += [request_bytes("GET", "/health", headers={"x-request-id": rid}) for rid in HOSTILE_IDS]
    calls = asyncio.run(gather(*(call(server.port, "GET", "/", raw=raw, timeout=5) for raw in raws)))
    server.process.stop()
    lines, forged, raw_chars = access_lines(server.log_path.read_bytes())
    answered = sum(k.status is not None for k in calls)
    figure = (f"{len(raws)} hostile requests ({answered} answered: {statuses(calls)}); {lines} access lines, "
              f"{forged} forged or malformed, {raw_chars} raw control or separator characters (target 0)")
    return figure, forged == 0 and raw_chars == 0 and lines > 0


def access_lines(log):
    """(access lines, lines with forged or malformed fields, raw control characters) in a log."""
    text = log.decode("utf-8", errors="surrogateescape")
    raw_chars = len(re.findall(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]", text))
    lines = forged = 0
    for line in text.split("\n"):
        if " access: " not in line:
            continue
        lines += 1
        try:
            tokens = logfmt_tokens(line.split(" access: ", 1)[1])
        except ValueError:
            forged += 1
            continue
        well_formed = (len(tokens) == 5 and tokens[2].isdigit() and re.fullmatch(r"[\d.]+ms", tokens[3])
                       and tokens[4].startswith("request_id="))
        bare_fields = [t for t in tokens if '"' not in t and re.match(r"(status|user)=", t)]
        forged += not well_formed or bool(bare_fields)
    return lines, forged, raw_chars


def logfmt_tokens(text):
    """Splits logfmt: bare tokens, and `"…"` or `key="…"` with backslash escapes. ValueError on a
    quote inside a bare token, an unterminated quote, or text glued to a closing quote."""
    tokens, i = [], 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        j = i
        while j < len(text) and text[j] not in ' "':
            j += 1
        if j < len(text) and text[j] == '"':
            if j > i and text[j - 1] != "=":
                raise ValueError("quote inside a bare value")
            j += 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise ValueError("unterminated quote")
            j += 1
            if j < len(text) and text[j] != " ":
                raise ValueError("text after a closing quote")
        tokens.append(text[i:j])
        i = j
    return tokens


# Malformed DATABASE_URLs, each with the password fragments no message may show.
LEAKY_URLS = [
    ("host=127.0.0.1 port=1 user=u password=se cret99 dbname=d", ["se cret", "secret99", "cret99"]),
    ("postgresql://u:pa%zzss77@127.0.0.1:1/d", ["pa%zz", "zzss77", "ss77"]),
    ("host=127.0.0.1 port=1 user=u password=hunter2x9 bogus=1 dbname=d", ["hunter2x9"]),
    ("host=127.0.0.1 port=1 user=u password='sw0rdfish22 dbname=d", ["sw0rdfish"]),
    ("postgresql://u:pw7secret7@127.0.0.1:1/d?bogus=1", ["pw7secret7"]),
]


@scenario("password-leak", needs_db=False,
          what="`migrate` with 5 broken DATABASE_URLs: an unquoted space in a key=value password, bad "
               "percent-encoding, an unknown key or parameter after it, an unterminated quote",
          target="exit 2 with one line, 0 password fragments, 5 of 5")
def password_leak(ctx):
    results = parallel(*(lambda url=url: run_binary(
        ctx, ["migrate"], {"DATABASE_URL": url, "DATABASE_STARTUP_TIMEOUT": "1"}, timeout=10)
        for url, _ in LEAKY_URLS))
    leaks, wrong = 0, []
    for (url, secrets), (code, out, _) in zip(LEAKY_URLS, results):
        leaked = [s for s in secrets if s in out]
        leaks += bool(leaked)
        if code != 2 or leaked or len(out.strip().splitlines()) != 1:
            wrong.append(f"{url!r}: exit {code}{', shows ' + '/'.join(leaked) if leaked else ''}")
    figure = f"{len(LEAKY_URLS) - len(wrong)}/{len(LEAKY_URLS)} exit 2 in one line; {leaks} leak"
    figure += "".join(f"; {w}" for w in wrong)
    return figure, not wrong


@scenario("ipv6", what="HOST unset: GET /health on 127.0.0.1 and on [::1]",
          target="200 on both")
def ipv6(ctx):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return "skipped: this machine has no ::1", True
    server = ctx.server(ctx.cluster.url(ctx.database()), host=None, wait=False)
    deadline = time.monotonic() + 20
    while "listening on" not in server.output() and server.process.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    answers = {h: request(server.port, "GET", "/health", timeout=2, host=h) for h in ("127.0.0.1", "::1")}
    figure = "; ".join(f"{h}: {k.outcome()}" for h, k in answers.items())
    return figure, all(k.status == 200 for k in answers.values())


@scenario("kill9", heavy=True,
          what="32 clients create tasks for 4 s; SIGKILL the server at 2 s; restart it",
          target="every acknowledged create stored: 0 missing")
def kill9(ctx):
    c = ctx.cluster
    db = ctx.database()
    url = c.url(db)
    server = ctx.server(url)
    acked, failed = asyncio.run(create_and_kill(server))
    started = time.monotonic()
    ctx.server(url)
    restart = time.monotonic() - started
    rows = dict(line.split("|", 1) for line in c.psql("SELECT id, title FROM tasks", db).splitlines())
    missing = sum(rows.get(str(task_id)) != title for task_id, title in acked)
    figure = (f"acknowledged {len(acked)}, missing {missing} (target 0); {failed} requests without a 201; "
              f"restarted in {restart:.2f} s")
    return figure, missing == 0 and len(acked) > 0


async def create_and_kill(server, clients=32, seconds=4, kill_at=2):
    acked, failed = [], 0
    until = time.monotonic() + seconds

    async def client(i):
        nonlocal failed
        n = 0
        while time.monotonic() < until:
            title = f"k9-{i}-{n}"
            n += 1
            k = await call(server.port, "POST", "/tasks", {"title": title}, timeout=3)
            if k.status == 201:
                acked.append((k.json()["id"], title))
            else:
                failed += 1
                await asyncio.sleep(0.05)

    async def killer():
        await asyncio.sleep(kill_at)
        server.process.popen.kill()

    await asyncio.gather(killer(), *(client(i) for i in range(clients)))
    server.process.popen.wait()
    return acked, failed


@scenario("outage", heavy=True,
          what="16 clients GET and POST in a loop; PostgreSQL restarted (fast), later stopped for 6 s",
          target="only 2xx and 503; none slower than 5.5 s; first success < 1 s after the database is back")
def outage(ctx):
    cluster = Cluster(ctx.work, "pg-outage", PG_OPTIONS)
    try:
        cluster.start()
        db = "outage"
        url = cluster.createdb(db)
        server = ctx.server(url)
        cluster.psql("INSERT INTO tasks (title) SELECT 'outage ' || g FROM generate_series(1, 100) g", db)
        r = asyncio.run(outage_load(server.port, cluster))
    finally:
        cluster.stop()
    calls = r["calls"]
    stops = r["stops"]  # [(stop began, stop done, back)]

    def mid_write(k):  # a POST in flight while PostgreSQL went away: its outcome is truly unknown
        return k.status is None and k.method == "POST" and any(
            k.started <= done and k.end >= began for began, done, _ in stops)

    def answered_right(k):
        return k.status is not None and (200 <= k.status < 300 or k.status == 503)

    bad = [k for k in calls if not answered_right(k) and not mid_write(k)]
    unknown = sum(mid_write(k) for k in calls)
    slow = [k for k in calls if k.took > BUDGET + SLACK]
    firsts = []
    for began, _, back in stops:
        after = [k.end - back for k in calls if k.status and 200 <= k.status < 300 and k.started >= began
                 and k.end >= back]
        firsts.append(min(after) if after else None)

    def first(t):
        return f"{t * 1000:.0f} ms" if t is not None else "none"

    ok2xx = sum(bool(k.status and 200 <= k.status < 300) for k in calls)
    figure = (f"{len(calls)} requests: {ok2xx} 2xx, {sum(k.status == 503 for k in calls)} 503, "
              f"{len(bad)} other{f' {statuses(bad)}' if bad else ''}, {unknown} closed mid-write; "
              f"slowest {max(k.took for k in calls):.1f} s; first success after the restart "
              f"{first(firsts[0])}, after the 6 s outage {first(firsts[1])}")
    ok = not bad and not slow and all(t is not None and t < 1 for t in firsts)
    return figure, ok


async def outage_load(port, cluster, clients=16):
    calls, stops = [], []
    stop = asyncio.Event()

    async def client(i):
        n = 0
        while not stop.is_set():
            n += 1
            if n % 2:
                k = await call(port, "GET", f"/tasks/{(i * 7 + n) % 100 + 1}", timeout=10)
            else:
                k = await call(port, "POST", "/tasks", {"title": f"outage {i}-{n}"}, timeout=10)
            calls.append(k)
            if k.status != 200 and k.status != 201:
                await asyncio.sleep(0.02)

    async def faults():
        await asyncio.sleep(1.5)
        for down in (0, 6):
            began = time.monotonic()
            await asyncio.to_thread(cluster.stop)
            done = time.monotonic()
            await asyncio.sleep(down)
            await asyncio.to_thread(cluster.start)
            stops.append((began, done, time.monotonic()))
            await asyncio.sleep(3)
        stop.set()

    await asyncio.gather(faults(), *(client(i) for i in range(clients)))
    return {"calls": calls, "stops": stops}


@scenario("sigterm", heavy=True,
          what="32 clients GET and POST in a loop; SIGTERM the server after 2 s",
          target="0 failures among requests sent ≥ 100 ms before the signal; exit 0 within 10 s")
def sigterm(ctx):
    server = ctx.server(ctx.cluster.url(ctx.database()))
    calls, signalled, exited = asyncio.run(term_load(server))
    code = server.process.popen.returncode
    before = [k for k in calls if k.sent is not None and k.sent <= signalled - 0.1]
    failed = [k for k in before if not (k.status and 200 <= k.status < 300)]
    late = [k for k in calls if k.sent is not None and k.sent > signalled - 0.1]
    took = f"{exited - signalled:.2f} s" if exited else "more than 12 s"
    figure = (f"{len(before)} requests sent ≥ 100 ms before SIGTERM, {len(failed)} failed"
              f"{f' {statuses(failed)}' if failed else ''} (target 0); {len(late)} sent later; "
              f"exit {code} after {took}")
    return figure, not failed and code == 0 and exited is not None and exited - signalled <= 10


async def term_load(server, clients=32):
    calls = []
    stop = asyncio.Event()

    async def client(i):
        n = 0
        while not stop.is_set():
            n += 1
            if n % 2:
                k = await call(server.port, "GET", "/tasks?limit=10", timeout=12)
            else:
                k = await call(server.port, "POST", "/tasks", {"title": f"sigterm {i}-{n}"}, timeout=12)
            calls.append(k)
            if k.status is None:
                await asyncio.sleep(0.02)

    async def terminate():
        await asyncio.sleep(2)
        signalled = time.monotonic()
        server.process.popen.send_signal(signal.SIGTERM)
        exited = None
        while time.monotonic() < signalled + 12:
            if server.process.popen.poll() is not None:
                exited = time.monotonic()
                break
            await asyncio.sleep(0.02)
        stop.set()
        return signalled, exited

    (signalled, exited), *_ = await asyncio.gather(terminate(), *(client(i) for i in range(clients)))
    return calls, signalled, exited


@scenario("replicas",
          what="8 `task-api serve` started at once on an empty database",
          target="one refinery_schema_history row and one 'applied migration' line per migration")
def replicas(ctx, count=8):
    db = ctx.database()
    url = ctx.cluster.url(db)
    servers = [ctx.server(url, wait=False) for _ in range(count)]
    healthy = 0
    for server in servers:
        try:
            server.wait_healthy(30)
            healthy += 1
        except RuntimeError:
            pass
    migrations = len(list((ROOT / "sql").glob("V*__*.sql")))
    rows, versions = ctx.cluster.psql("SELECT count(*), count(DISTINCT version) FROM refinery_schema_history",
                                      db).split("|")
    applied = sum(s.output().count("applied migration") for s in servers)
    figure = (f"{healthy}/{count} healthy; {rows} history rows ({versions} versions), {applied} "
              f"'applied migration' lines for {migrations} migrations")
    return figure, healthy == count and int(rows) == int(versions) == migrations and applied == migrations


# --- the run --------------------------------------------------------------------------------

def run_one(s, work, cluster, results):
    ctx = Context(s.name, work, cluster)
    started = time.monotonic()
    try:
        figure, ok = s.run(ctx)
    except Exception as err:  # noqa: BLE001 - a crashed scenario is a FAIL, the suite goes on
        figure, ok = f"crashed: {type(err).__name__}: {err}", False
    finally:
        try:
            ctx.close()
        except Exception as err:  # noqa: BLE001
            figure, ok = f"{figure}; stopping its servers: {err}", False
    results[s.name] = (figure, ok)
    lines = [f"{s.name:<14} {'PASS' if ok else 'FAIL'}  {figure}  ({time.monotonic() - started:.1f} s)"]
    if not ok:
        for path in ctx.logs[-4:]:
            tail = path.read_bytes().decode(errors="backslashreplace").splitlines()[-30:]
            lines += [f"    | {path.name}:"] + [f"    | {escaped(line)}" for line in tail]
    say("\n".join(lines))


def report(selected, results, seconds):
    print(f"\n`make test-faults` on {os.cpu_count()} cores in {seconds:.0f} s; PostgreSQL, task-api and the "
          "clients share the machine.\n")
    print("| scenario | what was done | figure | target | result |")
    print("|---|---|---|---|---|")
    for s in selected:
        figure, ok = results.get(s.name, ("did not run", False))
        print(f"| {s.name} | {s.what} | {escaped(figure).replace('|', '/')} | {s.target} | "
              f"{'PASS' if ok else '**FAIL**'} |")


def main():
    # Stopped from outside (SIGTERM): unwind, so the finally below still stops everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    unknown = set(ONLY) - {s.name for s in SCENARIOS}
    if unknown:
        sys.exit(f"faults: unknown scenario {', '.join(sorted(unknown))}; "
                 f"known: {', '.join(s.name for s in SCENARIOS)}")
    if not BINARY.exists():
        sys.exit(f"faults: {BINARY} is missing; run `make build` first")
    if not shutil.which("prlimit"):
        sys.exit("faults: prlimit is missing (util-linux)")
    selected = [s for s in SCENARIOS if not ONLY or s.name in ONLY]
    (ROOT / "target").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="task-api-faults-", dir=ROOT / "target"))
    work.chmod(0o755)  # as root, the clusters inside run as `postgres`
    started = time.monotonic()
    results = {}
    try:
        cluster = None
        if any(s.needs_db for s in selected):
            cluster = Cluster(work, "pg", PG_OPTIONS + ["-c", "log_connections=on"])
            cluster.start()
        cheap = [threading.Thread(target=run_one, args=(s, work, cluster, results), daemon=True)
                 for s in selected if not s.heavy]
        for t in cheap:
            t.start()
        for t in cheap:
            t.join()
        for s in selected:
            if s.heavy:
                run_one(s, work, cluster, results)
        report(selected, results, time.monotonic() - started)
    finally:
        for thing in reversed(STARTED):
            try:
                thing.close()
            except Exception as err:  # noqa: BLE001 - stop the rest regardless
                print(f"faults: cleanup: {err}", file=sys.stderr)
        if KEEP:
            print(f"faults: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if all(ok for _, ok in results.values()) and len(results) == len(selected) else 1)


if __name__ == "__main__":
    main()
