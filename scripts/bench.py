#!/usr/bin/env python3
"""`make bench`: task-api measured against PostgreSQL's own pgbench, in one run.

Starts a throwaway PostgreSQL and the release binary, seeds 10,000 tasks (a third of each
status) and copies them into `bench_tasks`, a table made `LIKE tasks INCLUDING ALL`. Then
each scenario runs for a fixed time after a warm-up, at 64 and at 256 connections, task-api
under wrk, each followed at once by its pgbench twin: the statement the server runs for it
(src/store/sql.rs), with the same client count, on the copy.

  get_by_id      GET /tasks/{random id}                    pgbench -S
  get_304        the same with If-None-Match: its ETag     (ratio to get_by_id)
  create         POST /tasks                               INSERT ... RETURNING
  keyed_create   the same with a new Idempotency-Key each  (ratio to create)
  patch          PATCH /tasks/{random id}, status flipped  the UPDATE ... RETURNING
  delete         DELETE /tasks/{id}, each seeded id once   the DELETE, each seeded id once
  list           GET /tasks?limit=20                       the SELECT ... LIMIT 20
  list_status    GET /tasks?status=completed&limit=20      the SELECT ... WHERE status
  mixed          70 % get_by_id, 20 % create, 10 % patch   their statements, 70/20/10
  health         GET /health                               —
  overload       get_by_id at 1,024 and 4,096 connections  —
  pooled         get_by_id and create through PgBouncer    (ratio to the direct rows)
                 (transaction mode, DATABASE_STATEMENTS=unnamed), a second server

The twins write the server's NULL parameters (no If-Match, no title) as typed NULL literals:
pgbench cannot bind a NULL. get_304 fetches the seeded tasks' ETags over HTTP before each
run (patch runs move them). Delete runs are seeded for DELETE_CEILING requests a second.
For the overload runs wrk gets the hard fd limit; the server keeps its own MAX_CONNECTIONS
(derived from its fd limit, at most 4,096; BENCH_ENV may set it), past which it answers 503.
A ratio to a baseline (keyed_create ÷ create, get_304 ÷ get_by_id) is also measured in
turn, after the table's runs: BENCH_PAIRS (5) pairs of short runs (BENCH_PAIR_SECONDS, 3,
each after a 1 s warm-up), the baseline first in every other pair, and its target is judged
on the median of the pairs' ratios. Two runs 30 s apart on this shared VM can differ by 15 %,
which a ratio of two such runs doubles; runs in turn see the same machine. Before each run
(and each twin's) PostgreSQL is settled: VACUUM ANALYZE, then CHECKPOINT, so that no run
pays for the writes of the one before it. req/s counts answers with a 2xx or 3xx status. "errors" counts socket errors and responses
with another status than the scenario's (from the server's /metrics: a 200 in get_304 is an
error); for a twin, failed transactions and deletes that found no row. Prints one markdown
table, the ratios, cold start, idle RSS and the targets met or missed. Stops everything it
started.

`bench.py curve` (make bench-curve) runs get_by_id, create and patch at 16 to 4,096
connections instead, draws docs/load-latency.svg and prints its numbers as a table.

Environment: BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_CONNECTIONS ("64 256"),
BENCH_BINARY (the musl release binary), BENCH_ENV (extra server variables, "K=V K=V"),
BENCH_QUICK=1 (only get_by_id and create, with their pgbench twins: for tuning runs),
BENCH_ONLY (scenarios to run, "patch,delete"), BENCH_CURVE=1 (the curve too, after the
table), BENCH_CURVE_SECONDS (5, per point of the curve), BENCH_PAIRS (5; 0: no runs in
turn, the targets then use the table's rows), BENCH_PAIR_SECONDS (3).
"""

import datetime
import http.client
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import Template

import curve

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "64 256").split()]
SCENARIOS = ["get_by_id", "get_304", "create", "keyed_create", "patch", "delete", "list",
             "list_status", "mixed", "health", "overload", "pooled"]
# Not run by the loop over SCENARIOS: runs of their own, after it.
APART = ("overload", "pooled")
# What the pooled runs measure through PgBouncer, beside the direct rows.
POOLED = ["get_by_id", "create"]
# BENCH_QUICK=1: only get_by_id and create, with their twins (for tuning runs).
ONLY = (["get_by_id", "create"] if os.environ.get("BENCH_QUICK") == "1"
        else os.environ.get("BENCH_ONLY", ",".join(SCENARIOS)).replace(",", " ").split())
CURVE = os.environ.get("BENCH_CURVE") == "1"
CURVE_SECONDS = int(os.environ.get("BENCH_CURVE_SECONDS", "5"))
BINARY = Path(os.environ.get("BENCH_BINARY", ROOT / "target/x86_64-unknown-linux-musl/release/task-api"))
SEED_TASKS = 10_000
OVERLOAD = [1024, 4096]
CURVE_CONNECTIONS = [16, 64, 256, 1024, 4096]
CURVE_SCENARIOS = ["get_by_id", "create", "patch"]
# Requests a second a delete run is seeded for: well above the fastest route's rate, as
# each wrk thread takes an equal share and one thread may run faster than the other.
DELETE_CEILING = 100_000
PASSWORD = "bench-pw"
VIA_PGBOUNCER = "via PgBouncer"
TICKS = os.sysconf("SC_CLK_TCK")
THREADS = str(os.cpu_count() or 2)
SVG = ROOT / "docs/load-latency.svg"

# The batched query (src/store/batch.rs, `task_api_db_batch_size`) behind a scenario.
BATCHED = {"get_by_id": "find", "get_304": "find", "create": "insert", "keyed_create": "insert",
           "patch": "update", "delete": "delete", "list": "list", "list_status": "list_status"}
# The statuses a scenario's requests should get; any other is an error.
EXPECTED = {"get_by_id": {200}, "get_304": {304}, "create": {201}, "keyed_create": {201},
            "patch": {200}, "delete": {204}, "list": {200}, "list_status": {200},
            "mixed": {200, 201}, "health": {200}}
# The other task-api scenario a scenario is compared with, and the least ratio wanted.
BASELINES = {"keyed_create": ("create", 0.8), "get_304": ("get_by_id", 0.8)}
# Pairs of runs in turn, per ratio to a baseline, and the seconds of each run.
PAIRS = int(os.environ.get("BENCH_PAIRS", "5"))
PAIR_SECONDS = int(os.environ.get("BENCH_PAIR_SECONDS", "3"))

BODY = '{"title":"bench","description":"a task made by make bench"}'
LUA_GET = 'wrk.format("GET", "/tasks/" .. math.random(1, $seed))'
LUA_CREATE = f"wrk.format(\"POST\", \"/tasks\", json, '{BODY}')"
# Alternately completed and pending, per thread.
LUA_PATCH = """wrk.format("PATCH", "/tasks/" .. math.random(1, $seed), json,
    flips % 2 == 0 and '{"status":"completed"}' or '{"status":"pending"}')"""
# Each thread learns its number (tid) before its init.
LUA_THREADS = """
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
"""
# string.Template: $seed, $etags, $key, $first, $per_thread.
WRK_SCRIPTS = {
    "get_by_id": f"request = function() return {LUA_GET} end\n",
    "get_304": f"""
local etags = {{$etags}}
request = function()
  local id = math.random(1, $seed)
  return wrk.format("GET", "/tasks/" .. id, {{["If-None-Match"] = etags[id]}})
end
""",
    "create": f"""
wrk.path = "/tasks"
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
""",
    # create's request with a key of its own each time. The request is formatted once,
    # and only the key's counter spliced in per request: wrk sends create's request as
    # it is, without calling Lua, so what is compared is the server's work.
    "keyed_create": LUA_THREADS + f"""
local before, after
local sent = 0
function init()
  local slot = "KEY-SLOT"
  local headers = {{["Content-Type"] = "application/json", ["Idempotency-Key"] = slot}}
  local req = wrk.format("POST", "/tasks", headers, '{BODY}')
  local at = req:find(slot, 1, true)
  before = req:sub(1, at - 1) .. "$key-" .. tid .. "-"
  after = req:sub(at + #slot)
end
request = function()
  sent = sent + 1
  return before .. sent .. after
end
""",
    "patch": f"""
local json = {{["Content-Type"] = "application/json"}}
local flips = 0
request = function()
  flips = flips + 1
  return {LUA_PATCH}
end
""",
    # Thread t deletes $first + t * $per_thread and on, one id after the other.
    "delete": LUA_THREADS + """
local next_id
function init()
  next_id = $first + tid * $per_thread
end
request = function()
  next_id = next_id + 1
  return wrk.format("DELETE", "/tasks/" .. (next_id - 1))
end
""",
    "list": 'wrk.path = "/tasks?limit=20"\n',
    "list_status": 'wrk.path = "/tasks?status=completed&limit=20"\n',
    "mixed": f"""
local json = {{["Content-Type"] = "application/json"}}
local flips = 0
request = function()
  local pick = math.random(1, 100)
  if pick <= 70 then return {LUA_GET} end
  if pick <= 90 then return {LUA_CREATE} end
  flips = flips + 1
  return {LUA_PATCH}
end
""",
    "health": 'wrk.path = "/health"\n',
}

COLUMNS = "id, title, description, status, created_at, updated_at"
RANDOM_ID = f"\\set id random(1, {SEED_TASKS})\n"
# UPDATE of src/store/sql.rs for {"status": ...}: $1 id, $2 NULL (title), $3 false (no
# description), $4 NULL, $5 the status, $6 NULL (no If-Match).
PGBENCH_UPDATE = Template(
    "UPDATE bench_tasks SET title = COALESCE(NULL::text, title), "
    "description = CASE WHEN false THEN NULL::text ELSE description END, "
    "status = COALESCE($status::text, status), "
    "updated_at = CASE WHEN (COALESCE(NULL::text, title), "
    "CASE WHEN false THEN NULL::text ELSE description END, COALESCE($status::text, status)) "
    "IS DISTINCT FROM (title, description, status) "
    "THEN greatest(now(), updated_at + interval '1 microsecond') ELSE updated_at END "
    "WHERE id = :id AND (NULL::timestamptz[] IS NULL OR updated_at = ANY(NULL::timestamptz[])) "
    f"RETURNING {COLUMNS};\n")
PGBENCH_SCRIPTS = {
    # A row as POST /tasks makes it, returned as POST /tasks returns it.
    "insert.sql": "INSERT INTO bench_tasks (title, description, status) "
                  "VALUES ('bench', 'a task made by make bench', 'pending') "
                  f"RETURNING {COLUMNS};\n",
    "get.sql": RANDOM_ID + f"SELECT {COLUMNS} FROM bench_tasks WHERE id = :id;\n",
    "update.sql": RANDOM_ID + "\\set flip random(0, 1)\n\\if :flip\n"
                  + PGBENCH_UPDATE.substitute(status=":completed") + "\\else\n"
                  + PGBENCH_UPDATE.substitute(status=":pending") + "\\endif\n",
    # Client c deletes :first + c * :per and on, one id after the other.
    "delete.sql": "\\set id :first + :client_id * :per + :n\n\\set n :n + 1\n"
                  "DELETE FROM bench_deletes WHERE id = :id "
                  "AND (NULL::timestamptz[] IS NULL OR updated_at = ANY(NULL::timestamptz[]));\n",
    "list.sql": f"\\set after 0\n\\set limit 20\n\\set offset 0\nSELECT {COLUMNS} FROM bench_tasks "
                "WHERE id > :after ORDER BY id LIMIT :limit OFFSET :offset;\n",
    "list_status.sql": f"\\set after 0\n\\set limit 20\n\\set offset 0\nSELECT {COLUMNS} "
                       "FROM bench_tasks WHERE status = :status AND id > :after "
                       "ORDER BY id LIMIT :limit OFFSET :offset;\n",
}
# Each scenario's twin: its name in the table, and its pgbench arguments (delete adds its ids).
TWINS = {
    "get_by_id": ("pgbench -S", ["-S"]),
    "create": ("pgbench insert", ["-f", "insert.sql"]),
    "patch": ("pgbench update", ["-f", "update.sql", "-D", "completed=completed",
                                 "-D", "pending=pending"]),
    "delete": ("pgbench delete", ["-f", "delete.sql", "-D", "n=0"]),
    "list": ("pgbench list", ["-f", "list.sql"]),
    "list_status": ("pgbench list_status", ["-f", "list_status.sql", "-D", "status=completed"]),
    "mixed": ("pgbench mixed", ["-f", "get.sql@70", "-f", "insert.sql@20", "-f", "update.sql@10",
                                "-D", "completed=completed", "-D", "pending=pending"]),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(command, package):
    if shutil.which(command):
        return
    if os.geteuid() != 0:
        sys.exit(f"bench: {command} is missing; install {package}")
    print(f"bench: installing {package}", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env, stdout=subprocess.DEVNULL)


def raise_fd_limit():
    """Soft RLIMIT_NOFILE to the hard one, for wrk's thousands of connections."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Proc:
    """CPU time and memory of a running process, from /proc."""

    def __init__(self, pid):
        self.pid = pid

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def kib(self, key):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def etags(port):
    """The ETag of each seeded task, by id, over one kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        tags = []
        for task in range(1, SEED_TASKS + 1):
            conn.request("GET", f"/tasks/{task}")
            response = conn.getresponse()
            response.read()
            tags.append(response.getheader("etag"))
        return tags
    finally:
        conn.close()


def metrics(port):
    """The /metrics text; retried while the server still holds the last run's clients."""
    for _ in range(50):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            if response.status == 200:
                return response.read().decode()
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    sys.exit("bench: /metrics did not answer")


def batch_totals(text):
    """(requests, statements) per batched query, from task_api_db_batch_size."""
    totals = {}
    for kind, query, value in re.findall(
            r'^task_api_db_batch_size_(sum|count)\{query="(\w+)"\} (\S+)$', text, re.M):
        totals.setdefault(query, [0.0, 0.0])[kind == "count"] = float(value)
    return totals


def status_counts(text):
    """Responses by status, all routes but /metrics, from task_api_http_requests_total."""
    counts = {}
    for route, status, value in re.findall(
            r'^task_api_http_requests_total\{method="\w+",route="([^"]*)",status="(\d+)"\} (\S+)$',
            text, re.M):
        if route != "/metrics":
            counts[int(status)] = counts.get(int(status), 0) + float(value)
    return counts


def over_capacity(text):
    """Connections answered 503 and closed at MAX_CONNECTIONS, from /metrics."""
    found = re.search(r'^task_api_http_connections_closed_total\{reason="over_capacity"\} (\S+)$',
                      text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_healthy(port, limit):
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        try:
            if get(port, "/health") == 200:
                return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.001)
    sys.exit("bench: task-api did not answer /health")


def parse_wrk(output):
    def number(text):
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]

    socket_errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    answered = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    non_2xx = int(non_2xx.group(1)) if non_2xx else 0
    return {
        # Answers with a 2xx or 3xx status a second; "answered" counts the others too.
        "rps": answered * (requests - non_2xx) / max(requests, 1),
        "answered": answered,
        "p50": number(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),
        "p99": number(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),
        "socket": [int(n) for n in socket_errors.groups()] if socket_errors else [0, 0, 0, 0],
        "non_2xx": non_2xx,
        "requests": requests,
    }


class Bench:
    def __init__(self, work):
        self.work = work
        self.pg_dir = work / "pg"
        self.pg_port = free_port()
        self.api_port = free_port()
        self.server = None
        self.pooled_server = None
        self.rows = []
        self.results = {}
        self.started = time.perf_counter()
        self.etags = []
        # The next seeded id a delete run may take, by table.
        self.deletable = {}
        # The ratios of the pairs run in turn, by (scenario, connections).
        self.pairs = {}

    # --- PostgreSQL -------------------------------------------------------------------
    def start_postgres(self):
        subprocess.run(
            [ROOT / "scripts/pg.sh", "start", self.pg_dir, str(self.pg_port), "--",
             "-c", "max_connections=600", "-c", "shared_buffers=256MB"],
            check=True, env=dict(os.environ, PG_PASSWORD=PASSWORD))
        subprocess.run([ROOT / "scripts/pg.sh", "createdb", self.pg_dir, "bench"], check=True)
        self.url = f"postgres://postgres:{PASSWORD}@127.0.0.1:{self.pg_port}/bench?sslmode=disable"
        self.pgbench_bin = shutil.which("pgbench") or subprocess.run(
            [ROOT / "scripts/pg.sh", "bindir"], check=True, capture_output=True, text=True
        ).stdout.strip() + "/pgbench"

    def psql(self, sql):
        return subprocess.run(["psql", "-qAtX", "-v", "ON_ERROR_STOP=1", self.url.split("?")[0],
                               "-c", sql], check=True, capture_output=True, text=True).stdout

    def pgbench(self, *args):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        base = [self.pgbench_bin, "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres"]
        return subprocess.run(base + list(args) + ["bench"], check=True, env=env,
                              capture_output=True, text=True, cwd=self.work).stdout

    def seed(self):
        """The tasks, their copy for the twins, and pgbench's own tables and scripts."""
        self.psql(f"INSERT INTO tasks (title, description, status) "
                  f"SELECT 'task ' || g, 'seeded', (ARRAY['pending', 'in_progress', 'completed'])[g % 3 + 1] "
                  f"FROM generate_series(1, {SEED_TASKS}) g")
        for table in ("bench_tasks", "bench_deletes"):
            self.psql(f"CREATE TABLE {table} (LIKE tasks INCLUDING ALL)")
        self.psql("INSERT INTO bench_tasks OVERRIDING SYSTEM VALUE SELECT * FROM tasks; "
                  "SELECT setval(pg_get_serial_sequence('bench_tasks', 'id'), max(id)) FROM bench_tasks; "
                  "ANALYZE")
        self.pgbench("-i", "-s", "1", "-q")
        for name, text in PGBENCH_SCRIPTS.items():
            (self.work / name).write_text(text)

    def settle(self):
        """What the runs before left PostgreSQL to do, done before the next: their new
        and dead rows vacuumed, the statistics renewed, the dirty pages written. Else a
        run pays for the one before it, as an autovacuum or a checkpoint that starts
        during it (pgbench vacuums before each of its runs too, unless told -n)."""
        self.psql("VACUUM ANALYZE")
        self.psql("CHECKPOINT")

    def seed_deletes(self, table):
        """Rows for a delete run and its warm-up, at DELETE_CEILING requests a second."""
        rows = DELETE_CEILING * (WARMUP + SECONDS)
        first, last = map(int, self.psql(
            f"WITH new AS (INSERT INTO {table} (title, description) "
            f"SELECT 'delete me', 'seeded' FROM generate_series(1, {rows}) RETURNING id) "
            f"SELECT min(id), max(id) FROM new").split("|"))
        if last - first + 1 != rows:
            sys.exit(f"bench: the ids seeded into {table} are not one range: {first}..{last}")
        self.deletable[table] = first
        self.psql(f"VACUUM ANALYZE {table}")  # not autovacuum, during the run

    def take_deletes(self, table, seconds):
        """The first of the seeded ids a delete run of `seconds` may take."""
        first = self.deletable[table]
        self.deletable[table] += DELETE_CEILING * seconds
        return first

    def count(self, table):
        return int(self.psql(f"SELECT count(*) FROM {table}"))

    # --- task-api ---------------------------------------------------------------------
    def spawn(self, url, port, extra=()):
        """A server on `port` with DATABASE_URL `url`; its Popen and start time in ms."""
        env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url,
               "HOST": "127.0.0.1", "PORT": str(port)}
        env.update(kv.split("=", 1) for kv in os.environ.get("BENCH_ENV", "").split() if "=" in kv)
        env.update(extra)
        log = open(self.work / "server.log", "ab")
        started = time.perf_counter()
        server = subprocess.Popen([BINARY, "serve"], env=env, stdout=log, stderr=log)
        ready = wait_healthy(port, 30)
        return server, (ready - started) * 1000

    def start_server(self):
        self.server, cold_ms = self.spawn(self.url, self.api_port)
        return cold_ms, Proc(self.server.pid)

    def stop_server(self):
        for server in (self.server, self.pooled_server):
            if server and server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=15)

    def start_pooled(self):
        """PgBouncer in transaction mode in front of the bench database, and a second
        server through it: its port and Proc."""
        bouncer, port = self.work / "pgbouncer", free_port()
        subprocess.run([ROOT / "scripts/pgbouncer.sh", "start", bouncer, str(port),
                        str(self.pg_port), "postgres", PASSWORD], check=True)
        self.bouncer = bouncer
        url = f"postgres://postgres:{PASSWORD}@127.0.0.1:{port}/bench?sslmode=disable"
        api_port = free_port()
        self.pooled_server, _ = self.spawn(url, api_port, {"DATABASE_STATEMENTS": "unnamed"})
        return api_port, Proc(self.pooled_server.pid)

    # --- runs ---------------------------------------------------------------------------
    def lua(self, name, seconds):
        """The wrk script of a scenario, for a run of `seconds`."""
        values = {"seed": SEED_TASKS, "key": secrets.token_hex(8)}
        if name == "get_304":
            values["etags"] = ", ".join('"' + tag.replace('"', '\\"') + '"' for tag in self.etags)
        if name == "delete":
            values["first"] = self.take_deletes("tasks", seconds)
            values["per_thread"] = DELETE_CEILING * seconds // int(THREADS)
        return Template(WRK_SCRIPTS[name]).substitute(values)

    def run_wrk(self, name, connections, seconds, port):
        script = self.work / f"{name}.lua"
        script.write_text(self.lua(name, seconds))
        return subprocess.run(
            ["wrk", "-t", THREADS, "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
             "--latency", "-s", str(script), f"http://127.0.0.1:{port}/"],
            check=True, capture_output=True, text=True).stdout

    def wrk(self, name, connections, proc, seconds=SECONDS, warmup=WARMUP, row=True, via=None):
        """A scenario under wrk, against the direct server, or `via` (a label and a
        port) another one."""
        port = via[1] if via else self.api_port
        if name == "get_304":
            self.etags = etags(port)  # patch runs move them
        self.run_wrk(name, connections, warmup, port)
        before = metrics(port)
        cpu_before = proc.cpu_seconds()
        result = parse_wrk(self.run_wrk(name, connections, seconds, port))
        cpu_after = proc.cpu_seconds()
        after = metrics(port)
        result["cpu_us"] = (cpu_after - cpu_before) * 1e6 / max(result["requests"], 1)
        statuses = status_counts(after)
        for status, n in status_counts(before).items():
            statuses[status] -= n
        unexpected = sum(n for status, n in statuses.items() if status not in EXPECTED[name])
        result["errors"] = sum(result["socket"]) + round(unexpected)
        result["over_capacity"] = round(over_capacity(after) - over_capacity(before))
        result["batch"] = None
        if name in BATCHED:
            requests, statements = (a - b for a, b in zip(
                batch_totals(after).get(BATCHED[name], [0, 0]),
                batch_totals(before).get(BATCHED[name], [0, 0])))
            result["batch"] = requests / statements if statements else None
        result["peak_rss"] = proc.kib("VmHWM") / 1024
        if row:
            label = f"{name} {via[0]}" if via else name
            self.rows.append((f"task-api {label}", connections, result))
            self.results[label, connections] = result
        return result

    def paired(self, name, baseline, connections, proc):
        """`name` and `baseline` in turn, PAIRS times: each pair's ratio of req/s. The
        baseline goes first in every other pair, so that neither is always the one that
        runs just after the other."""
        ratios = []
        for turn in range(PAIRS):
            rps = {}
            for which in (baseline, name) if turn % 2 == 0 else (name, baseline):
                rps[which] = self.wrk(which, connections, proc, PAIR_SECONDS, 1, row=False)["rps"]
            ratios.append(rps[name] / rps[baseline])
        self.pairs[name, connections] = ratios

    def pgbench_run(self, name, connections):
        label, args = TWINS[name]
        jobs = str(min(connections, int(THREADS)))
        common = ["-n", "-M", "prepared", "-c", str(connections), "-j", jobs]

        def ids(seconds):  # a delete twin's share of the seeded ids, per client
            if name != "delete":
                return []
            first = self.take_deletes("bench_deletes", seconds)
            return ["-D", f"first={first}", "-D", f"per={DELETE_CEILING * seconds // connections}"]

        self.pgbench(*common, "-T", str(WARMUP), *args, *ids(WARMUP))
        for old in self.work.glob("pgb_log*"):
            old.unlink()
        rows_before = self.count("bench_deletes") if name == "delete" else 0
        out = self.pgbench(*common, "-T", str(SECONDS), "-l", "--log-prefix", "pgb_log", *args,
                           *ids(SECONDS))
        latencies = sorted(int(line.split()[2]) / 1000 for f in self.work.glob("pgb_log*")
                           for line in f.read_text().splitlines())
        failed = re.search(r"number of failed transactions: (\d+)", out)
        errors = int(failed.group(1)) if failed else 0
        if name == "delete":  # a delete that found no row
            processed = int(re.search(r"actually processed: (\d+)", out).group(1))
            errors += processed - (rows_before - self.count("bench_deletes"))
        result = {
            "rps": float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1)),
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "errors": errors, "cpu_us": None, "peak_rss": None, "batch": None,
        }
        self.rows.append((label, connections, result))
        self.results[label, connections] = result

    def run(self):
        need("wrk", "wrk")
        self.start_postgres()
        # First start applies the migrations; cold start is measured on the second.
        self.start_server()
        self.stop_server()
        cold_ms, proc = self.start_server()
        self.seed()
        time.sleep(1)
        idle_kib = proc.kib("VmRSS")
        for connections in CONNECTIONS:
            for name in SCENARIOS:
                if name not in ONLY or name in APART:
                    continue
                if name == "delete":
                    self.seed_deletes("tasks")
                    self.seed_deletes("bench_deletes")
                self.settle()
                self.wrk(name, connections, proc)
                if name in TWINS:
                    self.settle()
                    self.pgbench_run(name, connections)
            for name, (baseline, _) in BASELINES.items():
                if PAIRS and name in ONLY and baseline in ONLY:
                    self.settle()
                    self.paired(name, baseline, connections, proc)
        if "overload" in ONLY:
            for connections in OVERLOAD:
                self.wrk("get_by_id", connections, proc)
        if "pooled" in ONLY:
            port, pooled = self.start_pooled()
            for connections in CONNECTIONS:
                for name in POOLED:
                    self.wrk(name, connections, pooled, via=(VIA_PGBOUNCER, port))
        self.report(cold_ms, idle_kib / 1024)
        if CURVE:
            self.curve(proc)
        self.stop_server()

    def run_curve(self):
        need("wrk", "wrk")
        self.start_postgres()
        _, proc = self.start_server()
        self.seed()
        self.curve(proc)
        self.stop_server()

    def curve(self, proc):
        """get_by_id, create and patch from 16 to 4,096 connections: the SVG and its table."""
        started = time.perf_counter()
        points = {name: [(connections, self.wrk(name, connections, proc, CURVE_SECONDS, 1, row=False))
                         for connections in CURVE_CONNECTIONS] for name in CURVE_SCENARIOS}
        took = time.perf_counter() - started
        title = (f"task-api load–latency, {machine()}, {datetime.date.today().isoformat()}, "
                 f"{CURVE_SECONDS} s per point")
        SVG.parent.mkdir(exist_ok=True)
        SVG.write_text(curve.svg(points, title))
        print(f"\n{title}; {SVG.relative_to(ROOT)}, {took:.0f} s.\n")
        print(curve.table(points))

    # --- report ------------------------------------------------------------------------
    def ratio(self, name, connections):
        """A scenario's req/s over its twin's (or its baseline's), and the least wanted."""
        if name in BASELINES:
            other, least = BASELINES[name]
        elif name.endswith(VIA_PGBOUNCER):  # its cost: no target
            other, least = name.removesuffix(" " + VIA_PGBOUNCER), None
        else:
            other, least = TWINS[name][0], 1.5 if name == "get_by_id" else 1.0
        mine, theirs = self.results.get((name, connections)), self.results.get((other, connections))
        if not mine or not theirs:
            return None
        return other, mine["rps"] / theirs["rps"], least

    def report(self, cold_ms, idle_mib):
        print(f"\n`make bench` on {machine()}, {SECONDS} s per run after {WARMUP} s warm-up; "
              f"wrk, pgbench, PostgreSQL and task-api share the machine.\n")
        print("| scenario | conns | req/s | p50 ms | p99 ms | errors | server CPU µs/req "
              "| peak RSS MiB | requests per statement |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, connections, r in self.rows:
            cpu_us = f"{r['cpu_us']:.1f}" if r["cpu_us"] is not None else "—"
            rss = f"{r['peak_rss']:.1f}" if r["peak_rss"] is not None else "—"
            batch = f"{r['batch']:.1f}" if r["batch"] is not None else "—"
            print(f"| {name} | {connections} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
                  f"| {r['errors']} | {cpu_us} | {rss} | {batch} |")
        print()
        ratios = {}
        for connections in CONNECTIONS:
            parts = []
            pooled = [f"{name} {VIA_PGBOUNCER}" for name in POOLED]
            for name in SCENARIOS + pooled:
                ratio = self.ratio(name, connections) if name in TWINS or name in BASELINES or name in pooled else None
                if ratio:
                    other, value, least = ratio
                    pairs = sorted(self.pairs.get((name, connections), []))
                    if pairs:
                        # The target is judged on the pairs run in turn.
                        median = statistics.median(pairs)
                        parts.append(f"{name} ÷ {other} = **{median:.2f}** (median of {len(pairs)} "
                                     f"pairs in turn, {pairs[0]:.2f}–{pairs[-1]:.2f}; "
                                     f"{value:.2f} in the table)")
                        value = median
                    else:
                        parts.append(f"{name} ÷ {other} = **{value:.2f}**")
                    if least is not None:
                        ratios.setdefault((name, other, least), []).append((value, connections))
            if parts:
                print(f"- {connections} connections: " + ", ".join(parts))
        for connections in OVERLOAD:
            r = self.results.get(("get_by_id", connections))
            if r:
                connect, read, write, timeout = r["socket"]
                print(f"- overload, get_by_id at {connections} connections: socket errors "
                      f"{sum(r['socket'])} (connect {connect}, read {read}, write {write}, "
                      f"timeout {timeout}), non-2xx {r['non_2xx']} of {r['requests']} answers "
                      f"({r['answered']:.0f}/s; {r['over_capacity']} connections over "
                      f"MAX_CONNECTIONS), p99 {r['p99']:.1f} ms, peak RSS {r['peak_rss']:.1f} MiB")
        print(f"- cold start (spawn → first 200 on /health, migrations applied): **{cold_ms:.1f} ms**")
        print(f"- idle RSS: **{idle_mib:.1f} MiB**")
        print(f"- the whole run took {time.perf_counter() - self.started:.0f} s\n\nTargets:\n")
        for (name, other, least), values in ratios.items():
            target(f"{name} ≥ {least} × {other}", values, lambda v: v >= least, "{:.2f}")
        cpu = [("get_by_id", 15), ("list", 40), ("list_status", 40)]
        for name, most in cpu:
            values = [(self.results[name, c]["cpu_us"], c) for c in CONNECTIONS if (name, c) in self.results]
            target(f"server CPU ≤ {most} µs per {name}", values, lambda v: v <= most, "{:.1f} µs")
        overload = [(self.results["get_by_id", c], c) for c in OVERLOAD if ("get_by_id", c) in self.results]
        target("0 socket errors under overload", [(sum(r["socket"]), c) for r, c in overload],
               lambda v: v == 0, "{}")
        target("p99 of get_by_id ≤ 100 ms under overload", [(r["p99"], c) for r, c in overload],
               lambda v: v <= 100, "{:.1f} ms")
        target("peak RSS ≤ 64 MiB under overload", [(r["peak_rss"], c) for r, c in overload],
               lambda v: v <= 64, "{:.1f} MiB")
        target("cold start ≤ 50 ms", [(cold_ms, None)], lambda v: v <= 50, "{:.1f} ms")
        target("idle RSS ≤ 10 MiB", [(idle_mib, None)], lambda v: v <= 10, "{:.1f} MiB")


def target(label, values, ok, form):
    """One line of the targets: the numbers, by connections, and met or missed."""
    if not values:
        return
    shown = ", ".join(form.format(v) + (f" at {c}" if c else "") for v, c in values)
    verdict = "met" if all(ok(v) for v, _ in values) else "**missed**"
    print(f"- {label}: {shown}: {verdict}")


def machine():
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu})"


def main():
    # Stopped from outside (SIGTERM): unwind, so the finally below still stops everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not BINARY.exists():
        sys.exit(f"bench: {BINARY} is missing; run `make build` first")
    unknown = set(ONLY) - set(SCENARIOS)
    if unknown:
        sys.exit(f"bench: unknown scenario {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    raise_fd_limit()
    (ROOT / "target").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="task-api-bench-", dir=ROOT / "target"))
    work.chmod(0o755)  # as root, the cluster inside runs as `postgres`
    bench = Bench(work)
    try:
        bench.run_curve() if sys.argv[1:] == ["curve"] else bench.run()
    finally:
        bench.stop_server()
        if getattr(bench, "bouncer", None):
            subprocess.run([ROOT / "scripts/pgbouncer.sh", "stop", bench.bouncer], check=False)
        subprocess.run([ROOT / "scripts/pg.sh", "stop", bench.pg_dir], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
