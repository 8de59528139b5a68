"""What every fault scenario runs in: the suite's settings and registry, the Context that
holds a scenario's databases, servers and logs, and the checks several scenarios make
(/health probes, a psql session holding a lock, statements task-api is running)."""

import asyncio
import itertools
import os
import subprocess
import time
from pathlib import Path

from harness import BINARY as BUILT
from harness.process import Process
from harness.server import Server
from harness.suite import Suite
from harness.http import call

BINARY = Path(os.environ.get("FAULTS_BINARY", BUILT))
ONLY = [name for name in os.environ.get("FAULTS_ONLY", "").split(",") if name]
KEEP = os.environ.get("FAULTS_KEEP") == "1"
PASSWORD = "faults-pw"
# The cluster most scenarios share; outage gets one of its own, as it stops it.
PG_OPTIONS = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
              "-c", "max_connections=300"]
# task-api's migration lock (src/pg/migrate.rs): "taskapi" in ASCII.
LOCK_KEY = 0x0074_6173_6b61_7069
# Sessions of ours, told apart from the server's in pg_stat_activity.
OUR_APPS = ("faults", "lock-holder")
BUDGET = 5.0  # a request that needs the database answers within this (seconds)
SLACK = 0.5
SCENARIOS = Suite()
scenario = SCENARIOS.scenario


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

    def server(self, url, wait=True, env=None, **options):
        """A `task-api serve` on `url` (DATABASE_STARTUP_TIMEOUT 10 s), once /health answers
        unless not `wait`."""
        server = Server(BINARY, self.log_path("serve"), url, env={"DATABASE_STARTUP_TIMEOUT": "10", **(env or {})},
                        **options)
        self.servers.append(server)
        if wait:
            server.wait("/health", limit=20)
        return server

    def close(self):
        for server in self.servers:
            server.process.stop()


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


def gets_and_creates(port, stop, calls, path, name, timeout, failed):
    """A client for a loop of requests until `stop`: client(i) GETs `path(i, n)` and creates a
    task titled `name i-n` in turn, each call added to `calls`, and waits 20 ms after one that
    `failed`."""
    async def client(i):
        n = 0
        while not stop.is_set():
            n += 1
            if n % 2:
                k = await call(port, "GET", path(i, n), timeout=timeout)
            else:
                k = await call(port, "POST", "/tasks", {"title": f"{name} {i}-{n}"}, timeout=timeout)
            calls.append(k)
            if failed(k):
                await asyncio.sleep(0.02)
    return client


def health_failures(calls):
    return sum(c.status != 200 for c in calls)


# --- a psql session of ours -------------------------------------------------------------------

def server_statements(cluster, db):
    """How many statements task-api sessions are running (or waiting in) on `db`."""
    return int(cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid() "
        f"AND application_name NOT IN {OUR_APPS}", db))


def holder(cluster, db, sql):
    """A psql session (application_name lock-holder) that runs `sql` and stays open."""
    proc = Process([*cluster.psql_argv(db), "-q"], cluster.env("lock-holder"), stdin=subprocess.PIPE)
    proc.popen.stdin.write(sql.encode() + b"\n")
    proc.popen.stdin.flush()
    return proc


def holder_pid(cluster, db, lock_condition, limit=10):
    """The pid of the lock-holder on `db` once it holds a lock matching `lock_condition`."""
    found = cluster.wait_until((
        "EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        f"WHERE a.application_name = 'lock-holder' AND a.datname = current_database() "
        f"AND l.granted AND {lock_condition})"), limit, db)
    if not found:
        raise RuntimeError("the lock-holder session never got its lock")
    return int(cluster.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'lock-holder' "
                            "AND datname = current_database()", db))


def release(holder):
    """Ends a holder session: end of input, psql quits, its transaction and locks go."""
    holder.popen.stdin.close()
    try:
        holder.popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        holder.close()
