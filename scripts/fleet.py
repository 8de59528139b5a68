#!/usr/bin/env python3
"""`make test-fleet`: task-api run as many, behind HAProxy, on a PostgreSQL that fails over.

Starts everything itself on loopback: a PostgreSQL primary and a streaming standby made with
`pg_basebackup -R`, with synchronous replication (an acknowledged commit exists on both);
3 task-api replicas whose DATABASE_URL names both hosts with target_session_attrs=read-write,
and SHUTDOWN_DELAY=2; HAProxy in front (roundrobin, health checks on /ready, retries with
redispatch). Then, under 64 keep-alive connections of gets and creates through HAProxy:

  a) rolling restart: each replica in turn SIGTERMed, waited for, started again on its port,
     waited for until /ready is 200 and HAProxy has it UP;
  b) failover: the primary's postmaster SIGKILLed, the standby promoted a second later;
  c) 8 replicas started at once against an empty database.

Prints one line per scenario as it ends, then the markdown table of the README's "Running
many" section, and exits 1 when any scenario failed. A scenario that crashes is a FAIL with the
reason; everything started is stopped on exit, also on Ctrl-C or SIGTERM. Needs PostgreSQL
(scripts/pg.sh installs it as root) and HAProxy (installed from the distribution as root when
missing); Python's standard library only.

Environment: FLEET_BINARY (the musl release binary), FLEET_ONLY (comma-separated scenario
names: a, b, c), FLEET_KEEP=1 (keep the work directory with every log).
"""

import asyncio
import collections
import json
import os
import random
import re
import resource
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
BINARY = Path(os.environ.get("FLEET_BINARY", ROOT / "target/x86_64-unknown-linux-musl/release/task-api"))
ONLY = [name for name in os.environ.get("FLEET_ONLY", "").split(",") if name]
KEEP = os.environ.get("FLEET_KEEP") == "1"
PASSWORD = "fleet-pw"
DATABASE = "tasks"
REPLICAS = 3
CLIENTS = 64
SHUTDOWN_DELAY = 2.0
SHUTDOWN_TIMEOUT = 8.0
BUDGET = 5.0  # a request that needs the database answers within this (seconds)
SLACK = 0.5
# HAProxy's health checks: every INTER s; down after FALL failures, up after RISE successes.
INTER, FALL, RISE = 0.5, 1, 2
# Both clusters: streaming replication, synchronous (synchronous_standby_names is set with
# ALTER SYSTEM once the standby streams, so the base backup does not carry it). fsync is
# off: the faults here kill processes, not the machine, and the page cache outlives them.
PG_OPTIONS = ["-c", "wal_level=replica", "-c", "max_wal_senders=10", "-c", "hot_standby=on",
              "-c", "synchronous_commit=on", "-c", "max_connections=300", "-c", "fsync=off",
              "-c", "wal_sender_timeout=5s", "-c", "wal_receiver_status_interval=1s"]
# In every process title of the clusters (cluster_name), and the standby's application_name.
TAG = f"fleet{os.getpid()}"
PRINT = threading.Lock()
STARTED = []  # everything to stop on exit: processes, HAProxy, clusters (each has .close())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(text):
    with PRINT:
        print(text, flush=True)


def escaped(text):
    """A log excerpt made safe for a terminal: control and separator characters escaped."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", lambda m: f"\\u{ord(m[0]):04x}", text)


def as_owner(argv):
    """A PostgreSQL command run as the clusters' owner: `postgres` when we are root."""
    return ["runuser", "-u", "postgres", "--", *map(str, argv)] if os.geteuid() == 0 else list(map(str, argv))


def span(values, unit=" s"):
    """`1.2–1.5 s` (or `1.2 s`) for a list of seconds; `none` when empty."""
    if not values:
        return "none"
    lo, hi = min(values), max(values)
    return f"{lo:.1f}{unit}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f}{unit}"


# --- processes ------------------------------------------------------------------------------

class Process:
    """A child process that is stopped on exit if it still runs."""

    def __init__(self, argv, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        self.popen = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        STARTED.append(self)

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.popen.poll() is None

    def terminate(self):
        if self.running():
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout):
        """The exit code, or None when it still runs after `timeout` s."""
        try:
            return self.popen.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        self.terminate()
        if self.wait(timeout) is None:
            self.close()
        return self.popen.wait()

    def close(self):
        if self.running():
            self.popen.kill()
            self.popen.wait()


def stop_all(processes, timeout=SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT + 5):
    """SIGTERM to each at once, then SIGKILL to what still runs after `timeout`; the exit codes."""
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + timeout
    codes = []
    for p in processes:
        code = p.wait(deadline - time.monotonic())
        if code is None:
            p.close()
        codes.append(code)
    return codes


# --- PostgreSQL -----------------------------------------------------------------------------

def pg_bindir():
    return Path(subprocess.run([ROOT / "scripts/pg.sh", "bindir"], check=True, capture_output=True,
                               text=True).stdout.strip())


class Cluster:
    """A PostgreSQL on 127.0.0.1 in a directory of the work directory, run by scripts/pg.sh."""

    def __init__(self, work, name, bindir):
        self.dir = work / name
        self.name = f"{TAG}{name.replace('-', '')}"  # its cluster_name
        self.port = free_port()
        self.bindir = bindir
        self.killed = False
        STARTED.append(self)

    def start(self):
        options = PG_OPTIONS + ["-c", f"cluster_name={self.name}"]
        subprocess.run([ROOT / "scripts/pg.sh", "start", self.dir, str(self.port), "--", *options],
                       check=True, env=dict(os.environ, PG_PASSWORD=PASSWORD), stdout=subprocess.DEVNULL)

    def env(self):
        return dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="5", PGAPPNAME="fleet")

    def psql(self, sql, db="postgres", timeout=30):
        """Runs `sql` (read from stdin: it may be long); its output (unaligned, tuples only), stripped."""
        out = subprocess.run(
            [self.bindir / "psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
             str(self.port), "-U", "postgres", "-d", db, "-f", "-"],
            input=sql, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if out.returncode:
            raise RuntimeError(f"psql on :{self.port}: {out.stderr.strip()}")
        return out.stdout.strip()

    def wait_until(self, condition, limit, db="postgres"):
        """Polls the SQL boolean `condition` until true; whether it became true within `limit` s."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                if self.psql(f"SELECT {condition}", db, timeout=5) == "t":
                    return True
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.1)
        return False

    def postmaster_pid(self):
        return int((self.dir / "postmaster.pid").read_text().split()[0])

    def leftovers(self):
        """The pids of this cluster's processes still alive (their titles carry cluster_name)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline.startswith(f"postgres: {self.name}:".encode()):
                    pids.append(int(entry.name))
        return pids

    def kill(self):
        """SIGKILL to the postmaster: the machine's view of a crashed primary."""
        os.kill(self.postmaster_pid(), signal.SIGKILL)
        self.killed = True

    def close(self):
        if not self.killed:
            subprocess.run([ROOT / "scripts/pg.sh", "stop", self.dir], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            return
        # Its children leave on their own once they see the postmaster gone; the stragglers go.
        deadline = time.monotonic() + 5
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Pair:
    """A primary and a streaming standby made from it with pg_basebackup, synchronous."""

    def __init__(self, work):
        bindir = pg_bindir()
        self.primary = Cluster(work, "primary", bindir)
        self.standby = Cluster(work, "standby", bindir)
        self.bindir = bindir

    def start(self):
        p, s = self.primary, self.standby
        p.start()
        hba = p.dir / "pg_hba.conf"
        rule = "host replication all 127.0.0.1/32 scram-sha-256"
        if not any(line.split() == rule.split() for line in hba.read_text().splitlines()):
            with open(hba, "a") as f:
                f.write(rule + "\n")
            p.psql("SELECT pg_reload_conf()")
        p.psql(f'CREATE DATABASE "{DATABASE}"')
        s.dir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(s.dir, "postgres", "postgres")
        # -R writes this into the standby's primary_conninfo: its application_name is the name
        # synchronous_standby_names gives.
        conninfo = f"host=127.0.0.1 port={p.port} user=postgres password={PASSWORD} application_name={s.name}"
        backup = subprocess.run(as_owner([self.bindir / "pg_basebackup", "-d", conninfo, "-D", s.dir, "-R",
                                          "-X", "stream", "-c", "fast", "-C", "-S", s.name]),
                                env=p.env(), capture_output=True, text=True, timeout=120)
        if backup.returncode:
            raise RuntimeError(f"pg_basebackup: {backup.stderr.strip()[-500:]}")
        s.start()
        p.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{s.name}'")
        p.psql("SELECT pg_reload_conf()")
        if not p.wait_until(f"EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = '{s.name}' "
                            "AND state = 'streaming' AND sync_state = 'sync')", 30):
            raise RuntimeError("the standby did not become a synchronous streaming standby within 30 s")

    def writable(self):
        """The cluster that takes writes now: the primary, or the standby once promoted."""
        return self.standby if self.primary.killed else self.primary

    def url(self, db):
        return (f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
                f"/{db}?target_session_attrs=read-write&sslmode=disable")

    def promote(self):
        subprocess.run(as_owner([self.bindir / "pg_ctl", "promote", "-D", self.standby.dir, "-w", "-t", "30"]),
                       check=True, stdout=subprocess.DEVNULL, timeout=40)


# --- task-api -------------------------------------------------------------------------------

class Replica:
    """One `task-api serve` on 127.0.0.1:`port`, its output in a log of the work directory."""

    numbers = collections.Counter()

    def __init__(self, work, name, url, port=None, env=None):
        self.name = name
        self.port = port or free_port()
        Replica.numbers[name] += 1
        self.log_path = work / f"{name}-{Replica.numbers[name]}.log"
        full = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url, "HOST": "127.0.0.1",
                "PORT": str(self.port), "LOG_LEVEL": "info", "DATABASE_STARTUP_TIMEOUT": "30",
                "SHUTDOWN_DELAY": f"{SHUTDOWN_DELAY:g}", "SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT:g}",
                **(env or {})}
        with open(self.log_path, "ab") as log:
            self.process = Process([str(BINARY), "serve"], full, stdout=log, stderr=log)

    @property
    def pid(self):
        return self.process.pid

    def wait_ready(self, limit=30):
        """Polls /ready until 200; the seconds it took. RuntimeError when it exits or runs out of time."""
        started = time.monotonic()
        deadline = started + limit
        while time.monotonic() < deadline:
            if not self.process.running():
                raise RuntimeError(f"{self.name} exited with {self.process.popen.returncode} before /ready")
            if request(self.port, "GET", "/ready", timeout=2).status == 200:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer /ready 200 within {limit} s")

    def output(self):
        return self.log_path.read_bytes().decode(errors="backslashreplace")


# --- HAProxy --------------------------------------------------------------------------------

def haproxy_binary():
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("fleet: haproxy is missing; install it (sudo apt-get install haproxy)")
    say("fleet: installing HAProxy from the distribution")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", "haproxy"], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=300)
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


class HAProxy:
    """HAProxy in the foreground, in front of `servers` ({name: port}); its stats on a socket."""

    def __init__(self, work, servers):
        self.port = free_port()
        self.cfg = work / "haproxy.cfg"
        self.socket = work / "haproxy.sock"
        if len(str(self.socket)) > 100:  # sun_path holds 108 bytes
            self.socket = Path(tempfile.mkdtemp(prefix="fleet-")) / "haproxy.sock"
        self.log_path = work / "haproxy.log"
        lines = "\n".join(f"    server {name} 127.0.0.1:{port} check" for name, port in servers.items())
        ms = int(INTER * 1000)
        self.cfg.write_text(f"""\
global
    maxconn 4096
    stats socket {self.socket} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 30s
    timeout server 10s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout check 2s
    # A connection refused or closed without an answer (a replica restarting) is retried on
    # another server. POSTs carry an Idempotency-Key, so a retried create is not stored twice.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend api
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter {ms}ms fastinter {ms}ms downinter {ms}ms fall {FALL} rise {RISE}
{lines}
""")
        binary = haproxy_binary()
        check = subprocess.run([binary, "-c", "-q", "-f", self.cfg], capture_output=True, text=True, timeout=30)
        if check.returncode:
            raise RuntimeError(f"haproxy -c: {(check.stdout + check.stderr).strip()}")
        with open(self.log_path, "ab") as log:
            self.process = Process([binary, "-f", str(self.cfg), "-db"], os.environ.copy(), stdout=log, stderr=log)
        STARTED.append(self)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if not self.process.running() or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {self.log_path.read_text()[-500:]}")
            time.sleep(0.05)

    def stats(self):
        """`show stat`: {svname: {column: value}} of the replicas backend."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "replicas":
                rows[row["svname"]] = row
        return rows

    def wait_up(self, name, limit=15):
        """Waits until HAProxy has `name` UP; the seconds it took (RuntimeError after `limit`)."""
        started = time.monotonic()
        while time.monotonic() < started + limit:
            if self.stats().get(name, {}).get("status") == "UP":
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"HAProxy did not mark {name} UP within {limit} s")

    def counters(self):
        backend = self.stats().get("BACKEND", {})
        return {k: int(backend.get(k) or 0) for k in ("wretr", "wredis")}

    def close(self):
        self.process.close()


# --- HTTP -----------------------------------------------------------------------------------

@dataclass
class Call:
    """One request, and what became of it."""
    method: str
    started: float
    title: str = ""  # of a create
    status: int | None = None  # None: no answer; `error` says why
    error: str = ""
    took: float = 0.0
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    @property
    def end(self):
        return self.started + self.took

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    def json(self):
        return json.loads(self.body)

    def outcome(self):
        if self.status == 503 and "x-request-id" not in self.headers:
            return "503 (HAProxy)"
        return str(self.status) if self.status else self.error


def request_bytes(method, path, body=None, headers=None, keep_alive=False):
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    if not keep_alive:
        lines.append("connection: close")
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


ERRORS = (OSError, TimeoutError, EOFError, ValueError, IndexError, asyncio.LimitOverrunError)


async def call(port, method, path, timeout=10.0):
    """One request on a fresh connection, with a time limit; never raises."""
    c = Call(method, time.monotonic())
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes(method, path))
            await writer.drain()
            c.status, c.headers, c.body = await read_response(reader, method)
    except ERRORS as err:
        c.error = why(err)
    finally:
        if writer:
            writer.close()
    c.took = time.monotonic() - c.started
    return c


def request(port, method, path, timeout=10.0):
    return asyncio.run(call(port, method, path, timeout))


class Connection:
    """A keep-alive client connection: opened when needed, dropped after an error or
    `connection: close`."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    def drop(self):
        if self.writer:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, method, path, body=None, headers=None, title="", timeout=10.0):
        c = Call(method, time.monotonic(), title)
        try:
            async with asyncio.timeout(timeout):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port,
                                                                             limit=1 << 20)
                self.writer.write(request_bytes(method, path, body, headers, keep_alive=True))
                await self.writer.drain()
                c.status, c.headers, c.body = await read_response(self.reader, method)
            if c.headers.get("connection", "").lower() == "close":
                self.drop()
        except ERRORS as err:
            c.error = why(err)
            self.drop()
        c.took = time.monotonic() - c.started
        return c


@dataclass
class Load:
    calls: list = field(default_factory=list)
    acked: list = field(default_factory=list)  # (id, title) of each 201
    ended: float = 0.0


async def run_load(port, stop, clients=CLIENTS, timeout=10.0):
    """`clients` keep-alive connections, each in a loop: a create, two gets of a task created
    before, a list of 10; until `stop` is set."""
    load = Load()
    run = uuid.uuid4().hex[:8]

    async def client(i):
        conn = Connection(port)
        rng = random.Random(i)
        n = 0
        while not stop.is_set():
            n += 1
            if n % 4 == 1 or not load.acked:
                title = f"fleet-{run}-{i}-{n}"
                k = await conn.send("POST", "/tasks", {"title": title}, {"idempotency-key": uuid.uuid4()},
                                    title=title, timeout=timeout)
                if k.status == 201:
                    try:
                        load.acked.append((k.json()["id"], title))
                    except (ValueError, KeyError):
                        k.status, k.error = None, "201 without a task"
            elif n % 4 == 0:
                k = await conn.send("GET", "/tasks?limit=10", timeout=timeout)
            else:
                k = await conn.send("GET", f"/tasks/{rng.choice(load.acked)[0]}", timeout=timeout)
            load.calls.append(k)
            await asyncio.sleep(0.01 if k.ok else 0.05)
        conn.drop()

    await asyncio.gather(*(client(i) for i in range(clients)))
    load.ended = time.monotonic()
    return load


def outcomes(calls):
    return dict(collections.Counter(k.outcome() for k in calls))


def missing_creates(cluster, acked):
    """How many acknowledged creates (id, title) are not in the tasks table of `cluster`."""
    rows = dict(line.split("|", 1) for line in cluster.psql("SELECT id, title FROM tasks", DATABASE,
                                                            timeout=60).splitlines())
    return sum(rows.get(str(task_id)) != title for task_id, title in acked)


def stored_titles(cluster, titles):
    if not titles:
        return 0
    values = ",".join("'" + t.replace("'", "''") + "'" for t in titles)
    return int(cluster.psql(f"SELECT count(*) FROM tasks WHERE title IN ({values})", DATABASE))


# --- the fleet ------------------------------------------------------------------------------

class Fleet:
    """The pair of clusters, the replicas and HAProxy shared by the scenarios."""

    def __init__(self, work):
        self.work = work
        self.pair = Pair(work)
        self.replicas = {}
        self.haproxy = None

    def start(self):
        self.pair.start()
        ports = {f"r{i + 1}": free_port() for i in range(REPLICAS)}
        self.replicas = {name: Replica(self.work, name, self.pair.url(DATABASE), port)
                         for name, port in ports.items()}
        for r in self.replicas.values():
            r.wait_ready(60)
        self.haproxy = HAProxy(self.work, ports)
        for name in ports:
            self.haproxy.wait_up(name)

    def heal(self):
        """Starts again any replica that is not running, and waits until HAProxy has all UP."""
        for name, r in list(self.replicas.items()):
            if not r.process.running():
                self.replicas[name] = Replica(self.work, name, self.pair.url(DATABASE), r.port)
                self.replicas[name].wait_ready(30)
        for name in self.replicas:
            self.haproxy.wait_up(name, 30)

    def logs(self):
        return [r.log_path for r in self.replicas.values()] + [self.haproxy.log_path]


# --- scenarios ------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    what: str
    target: str
    run: object


SCENARIOS = []


def scenario(name, what, target):
    def register(fn):
        SCENARIOS.append(Scenario(name, what, target, fn))
        return fn
    return register


@scenario("a", what=f"rolling restart of all {REPLICAS} replicas behind HAProxy, one after another (SIGTERM, "
                    "wait for the exit, start again on its port, wait for /ready 200 and HAProxy UP), under "
                    f"{CLIENTS} keep-alive connections of gets and creates",
          target="0 failed requests (non-2xx, connection error, timeout); 0 acknowledged creates missing; "
                 "each old replica exits 0")
def rolling_restart(fleet):
    fleet.heal()
    before = fleet.haproxy.counters()

    async def run():
        stop = asyncio.Event()
        load = asyncio.create_task(run_load(fleet.haproxy.port, stop))
        await asyncio.sleep(2)
        restarts = []
        for name in list(fleet.replicas):
            restarts.append(await asyncio.to_thread(restart, fleet, name))
        await asyncio.sleep(2)
        stop.set()
        return await load, restarts

    load, restarts = asyncio.run(run())
    after = fleet.haproxy.counters()
    failed = [k for k in load.calls if not k.ok]
    missing = missing_creates(fleet.pair.writable(), load.acked)
    creates = sum(k.method == "POST" for k in load.calls)
    codes = [r["code"] for r in restarts]
    figure = (f"{len(load.calls)} requests ({len(load.calls) - creates} gets, {creates} creates), "
              f"{len(failed)} failed{f' {outcomes(failed)}' if failed else ''} (target 0); "
              f"acknowledged {len(load.acked)}, missing {missing} (target 0); "
              f"/ready just after SIGTERM: {', '.join(r['ready'] for r in restarts)}; "
              f"exit {', '.join(str(c) for c in codes)} after {span([r['exited'] for r in restarts])}; "
              f"new one ready in {span([r['up'] for r in restarts if r['up'] is not None])}, UP in HAProxy "
              f"{span([r['balanced'] for r in restarts if r['balanced'] is not None])} later; HAProxy "
              f"retried {after['wretr'] - before['wretr']}, redispatched {after['wredis'] - before['wredis']}")
    problems = [r["problem"] for r in restarts if r["problem"]]
    figure += "".join(f"; {p}" for p in problems)
    ok = not failed and missing == 0 and load.acked and all(c == 0 for c in codes) and not problems
    return figure, ok


def restart(fleet, name):
    """SIGTERM `name`, wait for its exit, start it again on its port, wait for /ready and HAProxy."""
    old = fleet.replicas[name]
    result = {"code": None, "exited": None, "up": None, "balanced": None, "ready": "?", "problem": ""}
    signalled = time.monotonic()
    old.process.popen.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    k = request(old.port, "GET", "/ready", timeout=1)
    try:
        state = k.json()["status"] if k.status else ""
    except (ValueError, KeyError, TypeError):
        state = ""
    result["ready"] = f"{k.outcome()}{f' {state}' if state else ''}"
    result["code"] = old.process.wait(SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT + 5)
    result["exited"] = time.monotonic() - signalled
    if result["code"] is None:
        old.process.close()
        result["problem"] = f"{name} still ran {result['exited']:.0f} s after SIGTERM"
    new = fleet.replicas[name] = Replica(fleet.work, name, fleet.pair.url(DATABASE), old.port)
    try:
        result["up"] = new.wait_ready(30)
        result["balanced"] = fleet.haproxy.wait_up(name, 15)
    except RuntimeError as err:
        result["problem"] = str(err)
    return result


@scenario("b", what=f"failover under the same load: SIGKILL to the primary's postmaster, `pg_ctl promote` of the "
                    "synchronous standby 1 s later; the replicas' DATABASE_URL names both hosts, "
                    "target_session_attrs=read-write",
          target="first success ≤ 5 s after the promote, steady success before the load ends; only 2xx and "
                 "503 (a POST closed without an answer is an unknown outcome, counted apart); none slower "
                 "than 5.5 s; 0 acknowledged creates missing on the new primary; 0 creates answered with "
                 "an error stored (keyed creates ask again until the database answers); no replica restarted")
def failover(fleet):
    if fleet.pair.primary.killed:
        raise RuntimeError("the primary was already killed")
    fleet.heal()
    pids = {name: r.pid for name, r in fleet.replicas.items()}
    times = {}

    async def run():
        stop = asyncio.Event()
        load = asyncio.create_task(run_load(fleet.haproxy.port, stop))
        await asyncio.sleep(2)
        times["kill"] = time.monotonic()
        fleet.pair.primary.kill()
        await asyncio.sleep(1)
        times["promote"] = time.monotonic()
        await asyncio.to_thread(fleet.pair.promote)
        times["promoted"] = time.monotonic()
        await asyncio.sleep(8)
        stop.set()
        return await load

    load = asyncio.run(run())
    kill, promote = times["kill"], times["promote"]
    calls = load.calls

    def unknown(k):  # a create whose connection closed without an answer: it may or may not be stored
        return k.status is None and k.method == "POST" and k.error == "closed without answer"

    bad = [k for k in calls if not k.ok and k.status != 503 and not unknown(k)]
    unknowns = [k for k in calls if unknown(k)]
    slow = [k for k in calls if k.took > BUDGET + SLACK]
    after = [k for k in calls if k.started >= kill and k.end >= promote]
    first = min((k.end for k in after if k.ok), default=None)
    first_create = min((k.end for k in after if k.ok and k.method == "POST"), default=None)
    # Steady: the first success after the last failure that ended after the promote.
    last_failure = max((k.end for k in calls if not k.ok and k.end >= promote), default=promote)
    steady = min((k.end for k in calls if k.ok and k.end > last_failure), default=None)
    steady_ok = steady is not None and steady <= load.ended - 1.0
    new_primary = fleet.pair.standby
    if not new_primary.wait_until("NOT pg_is_in_recovery()", 10):
        raise RuntimeError("the standby is still in recovery 10 s after the promote")
    missing = missing_creates(new_primary, load.acked)
    refused = [k.title for k in calls if k.method == "POST" and k.status is not None and not k.ok]
    refused_stored = stored_titles(new_primary, refused)
    unknown_stored = stored_titles(new_primary, [k.title for k in unknowns])
    restarted = [name for name, r in fleet.replicas.items() if r.pid != pids[name] or not r.process.running()]
    window = [k for k in calls if not k.ok and k.end >= kill]

    def secs(t):
        return f"{t - promote:.2f} s" if t is not None else "never"

    figure = (f"{len(calls)} requests; first success {secs(first)} after the promote (first create "
              f"{secs(first_create)}), steady {secs(steady)}{'' if steady_ok else ' (NOT steady by the end)'}; "
              f"between: {outcomes(window) or 'no failure'}; {len(bad)} other than 2xx/503"
              f"{f' {outcomes(bad)}' if bad else ''}; {len(unknowns)} creates of unknown outcome "
              f"({unknown_stored} stored); {len(refused)} creates answered with an error, {refused_stored} of them "
              f"stored; "
              f"slowest {max(k.took for k in calls):.1f} s; acknowledged {len(load.acked)}, missing {missing} "
              f"on the new primary; promote took {times['promoted'] - promote:.2f} s; replicas restarted: "
              f"{', '.join(restarted) or 'none'}")
    ok = (first is not None and first - promote <= BUDGET and steady_ok and not bad and not slow
          and missing == 0 and refused_stored == 0 and not restarted)
    return figure, ok


@scenario("c", what="8 replicas started at once against an empty database (multi-host URL, on the primary "
                    "that takes writes now)",
          target="all 8 ready; one refinery_schema_history row and one 'applied migration' line per migration")
def many_at_once(fleet, count=8):
    cluster = fleet.pair.writable()
    db = "tasks_c"
    cluster.psql(f'CREATE DATABASE "{db}"')
    started = time.monotonic()
    replicas = [Replica(fleet.work, f"c{i + 1}", fleet.pair.url(db), env={"SHUTDOWN_DELAY": "0"})
                for i in range(count)]
    ready, slowest, problems = 0, 0.0, []
    for r in replicas:
        try:
            r.wait_ready(max(1.0, started + 45 - time.monotonic()))
            ready += 1
            slowest = time.monotonic() - started
        except RuntimeError as err:
            problems.append(str(err))
    migrations = len(list((ROOT / "sql").glob("V*__*.sql")))
    rows, versions = cluster.psql("SELECT count(*), count(DISTINCT version) FROM refinery_schema_history",
                                  db).split("|")
    applied = sum(r.output().count("applied migration") for r in replicas)
    codes = stop_all([r.process for r in replicas])
    figure = (f"{ready}/{count} ready (the last {slowest:.1f} s after the start); {rows} history rows "
              f"({versions} versions), {applied} 'applied migration' lines for {migrations} migrations; "
              f"stopped with exit {', '.join(map(str, sorted(set(codes), key=str)))}")
    figure += "".join(f"; {p}" for p in problems[:2])
    ok = ready == count and int(rows) == int(versions) == migrations and applied == migrations
    return figure, ok, [r.log_path for r in replicas]


# --- the run --------------------------------------------------------------------------------

def tail(path, lines=12):
    """The last lines of a log that are not access lines (those hide the warnings)."""
    text = path.read_bytes().decode(errors="backslashreplace").splitlines()
    interesting = [line for line in text if not re.search(r' INFO +access: |"target": ?"access"', line)]
    return interesting[-lines:]


def run_one(s, fleet, results):
    started = time.monotonic()
    logs = []
    try:
        if fleet is None:
            raise RuntimeError("the fleet did not start")
        figure, ok, *rest = s.run(fleet)
        logs = rest[0] if rest else fleet.logs()
    except Exception as err:  # noqa: BLE001 - a crashed scenario is a FAIL, the suite goes on
        figure, ok = f"crashed: {type(err).__name__}: {err}", False
        logs = fleet.logs() if fleet and fleet.haproxy else []
    results[s.name] = (figure, ok)
    lines = [f"{s.name}  {'PASS' if ok else 'FAIL'}  {figure}  ({time.monotonic() - started:.1f} s)"]
    if not ok:
        for path in logs[-4:]:
            lines += [f"    | {path.name}:"] + [f"    | {escaped(line)}" for line in tail(path)]
    say("\n".join(lines))


def report(selected, results, seconds):
    print(f"\n`make test-fleet` on {os.cpu_count()} cores in {seconds:.0f} s; PostgreSQL (primary and standby), "
          f"HAProxy, the task-api replicas and the clients share the machine.\n")
    print("| scenario | what was done | figure | target | result |")
    print("|---|---|---|---|---|")
    for s in selected:
        figure, ok = results.get(s.name, ("did not run", False))
        print(f"| {s.name} | {s.what} | {escaped(figure).replace('|', '/')} | {s.target} | "
              f"{'PASS' if ok else '**FAIL**'} |")


def main():
    # Stopped from outside (SIGTERM): as Ctrl-C, which asyncio.run turns into cancelling the
    # scenario, and then a KeyboardInterrupt; the finally below still stops everything.
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: (terminated.append(1), signal.raise_signal(signal.SIGINT)))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    unknown = set(ONLY) - {s.name for s in SCENARIOS}
    if unknown:
        sys.exit(f"fleet: unknown scenario {', '.join(sorted(unknown))}; "
                 f"known: {', '.join(s.name for s in SCENARIOS)}")
    if not BINARY.exists():
        sys.exit(f"fleet: {BINARY} is missing; run `make build` first")
    haproxy_binary()
    selected = [s for s in SCENARIOS if not ONLY or s.name in ONLY]
    (ROOT / "target").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="task-api-fleet-", dir=ROOT / "target"))
    work.chmod(0o755)  # as root, the clusters inside run as `postgres`
    started = time.monotonic()
    results = {}
    code = None
    try:
        fleet = Fleet(work)
        try:
            fleet.start()
            say(f"fleet: primary :{fleet.pair.primary.port}, synchronous standby :{fleet.pair.standby.port}, "
                f"replicas {', '.join(f'{n} :{r.port}' for n, r in fleet.replicas.items())}, HAProxy "
                f":{fleet.haproxy.port} (started in {time.monotonic() - started:.1f} s)")
        except Exception as err:  # noqa: BLE001 - every scenario is then a FAIL with this reason
            say(f"fleet: could not start: {type(err).__name__}: {err}")
            for path in sorted(work.glob("*.log")) + sorted(work.glob("*/server.log")):
                say("\n".join([f"    | {path.name}:"] + [f"    | {escaped(line)}" for line in tail(path)]))
            fleet = None
        for s in selected:
            run_one(s, fleet, results)
        report(selected, results, time.monotonic() - started)
    except KeyboardInterrupt:
        say(f"fleet: {'SIGTERM' if terminated else 'interrupted'}; stopping everything")
        results["interrupted"] = ("", False)
        code = 143 if terminated else 130
    finally:
        # The cleanup is bounded; a second signal does not cut it short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        processes = [p for p in STARTED if isinstance(p, Process)]
        stop_all([p for p in processes if p.running()], timeout=SHUTDOWN_DELAY + 5)
        for thing in reversed(STARTED):
            try:
                thing.close()
            except Exception as err:  # noqa: BLE001 - stop the rest regardless
                print(f"fleet: cleanup: {err}", file=sys.stderr)
        if KEEP:
            print(f"fleet: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code if code else 0 if all(ok for _, ok in results.values()) and len(results) == len(selected) else 1)


if __name__ == "__main__":
    main()
