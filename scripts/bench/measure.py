"""The runs of `make bench`: a throwaway PostgreSQL seeded with tasks and their copies,
task-api under wrk, each scenario's pgbench twin, the ratios measured in turn, and the
load–latency curve; what each run measured, from wrk's output and the server's /metrics."""

import asyncio
import datetime
import os
import re
import secrets
import subprocess
import sys
import time
from string import Template

from harness.cluster import Cluster
from harness.http import Connection, metric, request, tally
from harness.net import free_port
from harness.process import install
from harness import ROOT
from harness.report import RESULTS, command, machine, write
from harness.server import Server

PGBOUNCER_SH = ROOT / "scripts/pgbouncer.sh"

from . import curve
from .report import VARIABLES, memory_report, overload_report, report
from .workloads import (APART, assignments, BASELINES, BATCHED, BINARY, CONNECTIONS, CURVE, CURVE_CONNECTIONS,
                        CURVE_SCENARIOS, CURVE_SECONDS, DELETE_CEILING, EXPECTED, ONLY, OVERLOAD, PAIR_SECONDS,
                        PAIRS, PASSWORD, PGBENCH_SCRIPTS, POOLED, ROUNDS, SCENARIOS, SECONDS, SEED_TASKS, THREADS,
                        TWINS, VARIANTS, VIA_PGBOUNCER, VIA_STANDBY, WARMUP, WRK_SCRIPTS)

def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def etags(port):
    """The ETag of each seeded task, by id, over one kept-alive connection."""
    async def fetch():
        conn = Connection(port)
        try:
            return [(await conn.send("GET", f"/tasks/{task}", timeout=5)).headers.get("etag")
                    for task in range(1, SEED_TASKS + 1)]
        finally:
            conn.drop()
    return asyncio.run(fetch())


def metrics(port):
    """The /metrics text; retried while the server still holds the last run's clients."""
    for _ in range(50):
        answer = request(port, "GET", "/metrics", timeout=5)
        if answer.status == 200:
            return answer.body.decode()
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


def standby_share(text):
    """The share of the reads the standby answered, from task_api_db_reads_total."""
    reads = dict(re.findall(r'^task_api_db_reads_total\{target="(\w+)"\} (\S+)$', text, re.M))
    standby, primary = (float(reads.get(target, 0)) for target in ("standby", "primary"))
    return standby / max(standby + primary, 1)


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
    """One run of `make bench` (or `make bench-curve`) in the work directory `work`."""

    def __init__(self, work):
        self.work = work
        self.cluster = None
        self.bouncer = None
        self.api_port = free_port()
        self.server = None
        self.pooled_server = None
        self.standby = None
        self.standby_server = None
        self.standby_share = None
        self.rows = []
        self.results = {}
        self.started = time.perf_counter()
        self.etags = []
        # The next seeded id a delete run may take, by table.
        self.deletable = {}
        # The ratios of the pairs run in turn, by (scenario, connections).
        self.pairs = {}
        # Bytes tasks grows by per create and per keyed create, by (scenario, connections);
        # None: not measured, as tasks had had updates or deletes (see run).
        self.storage = {}

    # --- PostgreSQL -------------------------------------------------------------------
    def start_postgres(self):
        options = ["-c", "max_connections=600", "-c", "shared_buffers=256MB"]
        self.cluster = Cluster(self.work, "pg", PASSWORD, options, app="bench", tag="bench")
        self.cluster.start()
        self.url = self.cluster.createdb("bench")

    def psql(self, sql):
        return self.cluster.psql(sql, "bench", timeout=600)

    def pgbench(self, *args):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        base = [self.cluster.bindir / "pgbench", "-h", "127.0.0.1", "-p", str(self.cluster.port), "-U", "postgres"]
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

    def tasks_size(self):
        """tasks' bytes (table and indexes), its rows, and the rows updated or deleted so far."""
        return [int(v) for v in self.psql(
            "SELECT pg_total_relation_size('tasks'), (SELECT count(*) FROM tasks), n_tup_upd + n_tup_del "
            "FROM pg_stat_user_tables WHERE relid = 'tasks'::regclass").split("|")]

    # --- task-api ---------------------------------------------------------------------
    def spawn(self, url, port, extra=()):
        """A server on `port` with DATABASE_URL `url`; it and its start time in ms (spawn → first 200
        on /health)."""
        env = assignments(os.environ.get("BENCH_ENV", ""))
        env.update(extra)
        binary = ROOT / env.pop("BENCH_BINARY", BINARY)  # a variant's own build, else this one
        started = time.monotonic()
        server = Server(binary, self.work / "server.log", url, port, env)
        ready = server.wait("/health", limit=30, every=0.001, timeout=2)
        return server, (ready - started) * 1000

    def start_server(self):
        self.server, cold_ms = self.spawn(self.url, self.api_port)
        return cold_ms, self.server.proc

    def stop_server(self):
        for server in (self.server, self.pooled_server, self.standby_server):
            if server:
                server.process.stop(15)

    def start_pooled(self):
        """PgBouncer in transaction mode in front of the bench database, and a second
        server through it: its port and Proc."""
        bouncer, port = self.work / "pgbouncer", free_port()
        subprocess.run([PGBOUNCER_SH, "start", bouncer, str(port), str(self.cluster.port), "postgres", PASSWORD],
                       check=True)
        self.bouncer = bouncer
        api_port = free_port()
        self.pooled_server, _ = self.spawn(self.cluster.url("bench", port=port), api_port,
                                           {"DATABASE_STATEMENTS": "unnamed"})
        return api_port, self.pooled_server.proc

    def start_standby(self):
        """A streaming standby of the bench cluster, once it has replayed all the primary has
        written, and a second server that reads from it (DATABASE_READ_URL): its port and Proc."""
        self.standby = Cluster(self.work, "standby", PASSWORD, self.cluster.options, app="bench", tag="bench")
        self.cluster.base_backup(self.standby)
        self.standby.start()
        lsn = self.psql("SELECT pg_current_wal_lsn()")
        if not self.standby.wait_until(f"pg_last_wal_replay_lsn() >= '{lsn}'", 60, tolerate_errors=True):
            sys.exit("bench: the standby did not replay the primary's writes within 60 s")
        api_port = free_port()
        self.standby_server, _ = self.spawn(self.url, api_port, {"DATABASE_READ_URL": self.standby.url("bench")})
        return api_port, self.standby_server.proc

    def close(self):
        """Stops the servers, PgBouncer, the standby and PostgreSQL."""
        self.stop_server()
        if self.bouncer:
            subprocess.run([PGBOUNCER_SH, "stop", self.bouncer], check=False)
        if self.standby:
            self.standby.stop()
        if self.cluster:
            self.cluster.stop()

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

    def paired(self, name, baseline, connections, proc, key="rps", via=None):
        """`name` and `baseline` in turn, PAIRS times: each pair's ratio of `key`. The
        baseline goes first in every other pair, so that neither is always the one that
        runs just after the other. With `via` (a label, a port and its server's Proc),
        `name` is `baseline` run against that server."""
        runs = {baseline: (baseline, proc, None), name: (baseline, via[2], via[:2]) if via else (name, proc, None)}
        ratios = []
        for turn in range(PAIRS):
            got = {}
            for which in (baseline, name) if turn % 2 == 0 else (name, baseline):
                scenario, server, through = runs[which]
                got[which] = self.wrk(scenario, connections, server, PAIR_SECONDS, 1, row=False, via=through)[key]
            ratios.append(got[name] / got[baseline])
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
        install("wrk", "wrk", "bench")
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
                # What a create costs in storage: tasks' growth from this settle to the one after
                # the run, per row created; not after updates or deletes, whose space creates reuse.
                before = self.tasks_size() if name in ("create", "keyed_create") else None
                self.wrk(name, connections, proc)
                if name in TWINS or before:
                    self.settle()
                if before:
                    size, rows, _ = self.tasks_size()
                    self.storage[name, connections] = (None if before[2] else
                                                       (size - before[0]) / max(rows - before[1], 1))
                if name in TWINS:
                    self.pgbench_run(name, connections)
            for name, (baseline, _) in BASELINES.items():
                if PAIRS and name in ONLY and baseline in ONLY:
                    self.settle()
                    self.paired(name, baseline, connections, proc)
        if "overload" in ONLY:
            self.settle()
            for connections in OVERLOAD:
                self.wrk("get_by_id", connections, proc)
        if "pooled" in ONLY:
            self.settle()
            port, pooled = self.start_pooled()
            for connections in CONNECTIONS:
                for name in POOLED:
                    self.wrk(name, connections, pooled, via=(VIA_PGBOUNCER, port))
        if "standby" in ONLY:  # at the first connection count only (64), to keep the run short
            self.settle()
            via = (VIA_STANDBY, *self.start_standby())
            self.wrk("get_by_id", CONNECTIONS[0], via[2], via=via[:2])
            if PAIRS and "get_by_id" in ONLY:
                self.paired(f"get_by_id {VIA_STANDBY}", "get_by_id", CONNECTIONS[0], proc, "cpu_us", via)
            self.standby_share = standby_share(metrics(via[1]))
        report(self, cold_ms, idle_kib / 1024)
        if CURVE:
            self.curve(proc)
        self.stop_server()

    def run_curve(self):
        install("wrk", "wrk", "bench")
        self.start_postgres()
        _, proc = self.start_server()
        self.seed()
        self.curve(proc)
        self.stop_server()

    def in_turn(self, measure):
        """`measure(proc)` ROUNDS times on each variant's server in turn, each started for its run
        alone, so that its peak RSS is that run's: [(variant, what it measured)], in the order run."""
        self.start_postgres()
        runs = []
        for _ in range(ROUNDS):
            for label, env in VARIANTS:
                self.server, _ = self.spawn(self.url, self.api_port, env)
                if not runs:
                    self.seed()
                runs.append((label, measure(self.server.proc)))
                self.stop_server()
                self.server = None
        return runs

    def run_overload(self):
        """The overload row at its most connections, each variant in turn."""
        install("wrk", "wrk", "bench")
        runs = self.in_turn(lambda proc: self.wrk("get_by_id", OVERLOAD[-1], proc, row=False))
        overload_report(runs, OVERLOAD[-1], time.perf_counter() - self.started)

    def run_memory(self):
        """What the overload row's most connections hold (`held`), each variant in turn."""
        runs = self.in_turn(lambda proc: asyncio.run(self.held(proc, OVERLOAD[-1])))
        memory_report(runs, OVERLOAD[-1], time.perf_counter() - self.started)

    async def held(self, proc, connections):
        """The server's RSS (KiB) idle, then with `connections` kept alive after a request each,
        then with a get waiting on all but one while tasks is locked (and how many the server counted
        in flight), its peak, and the answers."""
        rss = {}
        await asyncio.sleep(1)  # each sample a second after the change: mimalloc's purge delay
        rss["idle"] = proc.kib("VmRSS")
        clients = [Connection(self.api_port) for _ in range(connections)]
        calls = []
        for first in range(0, connections, 256):  # opened a few at a time, within the listen backlog
            calls += await asyncio.gather(*(c.send("GET", "/tasks/1") for c in clients[first:first + 256]))
        await asyncio.sleep(1)
        rss["kept alive"] = proc.kib("VmRSS")
        lock = subprocess.Popen([*self.cluster.psql_argv("bench"), "-qAt", "-v", "ON_ERROR_STOP=1", "-c",
                                 "BEGIN; LOCK TABLE tasks; SELECT pg_sleep(3); COMMIT"],
                                env=self.cluster.env(), stdout=subprocess.DEVNULL)
        try:
            if not self.cluster.wait_until("EXISTS (SELECT FROM pg_locks WHERE relation = 'tasks'::regclass "
                                           "AND mode = 'AccessExclusiveLock' AND granted)", 10, "bench"):
                sys.exit("bench: tasks was not locked within 10 s")
            waiting = asyncio.gather(*(c.send("GET", f"/tasks/{i % SEED_TASKS + 1}")
                                       for i, c in enumerate(clients[1:])))
            await asyncio.sleep(1)
            rss["waiting"] = proc.kib("VmRSS")
            # Asked on the first connection (one more would pass MAX_CONNECTIONS): /metrics counts itself.
            asked = await clients[0].send("GET", "/metrics")
            text, gauge = asked.body.decode() if asked.ok else "", "task_api_http_requests_in_flight"
            waited = metric(text, gauge) - 1 if gauge in text else None
            calls += await waiting
        finally:
            lock.wait(30)
        for c in clients:
            c.drop()
        return rss, waited, proc.kib("VmHWM"), tally(calls)

    def curve(self, proc):
        """get_by_id, create and patch from 16 to 4,096 connections: the SVG and its table."""
        started = time.perf_counter()
        points = {name: [(connections, self.wrk(name, connections, proc, CURVE_SECONDS, 1, row=False))
                         for connections in CURVE_CONNECTIONS] for name in CURVE_SCENARIOS}
        took = time.perf_counter() - started
        title = (f"task-api load–latency, {machine()}, {datetime.date.today().isoformat()}, "
                 f"{CURVE_SECONDS} s per point")
        table = curve.table(points)
        print(f"\n{title}; {took:.0f} s.\n")
        print(table)
        if set(ONLY) != set(SCENARIOS):  # a subset, for tuning: the curve's files are left as they were
            print("\nbench: BENCH_ONLY or BENCH_QUICK runs a subset: docs/results/load-latency.* are left "
                  "as they were")
            return
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "load-latency.svg").write_text(curve.svg(points, title))
        how = command("bench-curve" if sys.argv[1:] == ["curve"] else "bench", VARIABLES)
        path = write("load-latency.md", f"make bench-curve: {title}", BINARY, how,
                     [f"![{title}](load-latency.svg)", "", table], took)
        print(f"\nbench: wrote {path.relative_to(ROOT)} and load-latency.svg beside it")

    # --- report ------------------------------------------------------------------------
