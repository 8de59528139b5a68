#!/usr/bin/env python3
"""`make bench`: task-api measured against PostgreSQL's own pgbench, in one run.

Starts a throwaway PostgreSQL and the release binary, seeds 10,000 tasks, then runs each
scenario for a fixed time after a warm-up, at 64 and at 256 connections: task-api under wrk
(GET /tasks/{random id}, POST /tasks, GET /tasks?limit=20, GET /health) and, against the same
database with the same client count, `pgbench -M prepared -S` and a pgbench INSERT ... RETURNING
into a table shaped like tasks. Prints one markdown table with the ratios, cold start and idle
RSS. Stops everything it started.

Environment: BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_CONNECTIONS ("64 256"),
BENCH_BINARY (the musl release binary), BENCH_ENV (extra server variables, "K=V K=V"),
BENCH_QUICK=1 (only get_by_id and create, with their pgbench twins: for tuning runs).
"""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "64 256").split()]
# BENCH_QUICK=1: only the two scenarios with a pgbench twin (for tuning runs).
QUICK = os.environ.get("BENCH_QUICK") == "1"
BINARY = Path(os.environ.get("BENCH_BINARY", ROOT / "target/x86_64-unknown-linux-musl/release/task-api"))
SEED_TASKS = 10_000
PASSWORD = "bench-pw"
TICKS = os.sysconf("SC_CLK_TCK")
THREADS = str(os.cpu_count() or 2)

# The batched query (src/store/batch.rs) behind each scenario, if any.
BATCHED = {"get_by_id": "find", "create": "insert"}
WRK_SCRIPTS = {
    "get_by_id": f"""
request = function()
  return wrk.format("GET", "/tasks/" .. math.random(1, {SEED_TASKS}))
end
""",
    "create": """
wrk.path = "/tasks"
wrk.method = "POST"
wrk.body = '{"title":"bench","description":"a task made by make bench"}'
wrk.headers["Content-Type"] = "application/json"
""",
    "list": 'wrk.path = "/tasks?limit=20"\n',
    "health": 'wrk.path = "/health"\n',
}
# A row as POST /tasks makes it, returned as POST /tasks returns it.
PGBENCH_INSERT = (
    "INSERT INTO bench_tasks (title, description, status) "
    "VALUES ('bench', 'a task made by make bench', 'pending') "
    "RETURNING id, title, description, status, created_at, updated_at;\n"
)


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


def batch_totals(port):
    """(requests, statements) per batched query, from task_api_db_batch_size on /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    totals = {}
    for kind, query, value in re.findall(
            r'^task_api_db_batch_size_(sum|count)\{query="(\w+)"\} (\S+)$', text, re.M):
        totals.setdefault(query, [0.0, 0.0])[kind == "count"] = float(value)
    return totals


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

    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": number(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),
        "p99": number(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),
        "errors": errors,
        "requests": requests,
    }


class Bench:
    def __init__(self, work):
        self.work = work
        self.pg_dir = work / "pg"
        self.pg_port = free_port()
        self.api_port = free_port()
        self.server = None
        self.rows = []

    # --- PostgreSQL -------------------------------------------------------------------
    def start_postgres(self):
        subprocess.run(
            [ROOT / "scripts/pg.sh", "start", self.pg_dir, str(self.pg_port), "--",
             "-c", "max_connections=600", "-c", "shared_buffers=256MB"],
            check=True, env=dict(os.environ, PG_PASSWORD=PASSWORD))
        subprocess.run([ROOT / "scripts/pg.sh", "createdb", self.pg_dir, "bench"], check=True)
        self.url = f"postgres://postgres:{PASSWORD}@127.0.0.1:{self.pg_port}/bench?sslmode=disable"

    def psql(self, sql):
        subprocess.run(["psql", "-qX", "-v", "ON_ERROR_STOP=1", self.url.split("?")[0], "-c", sql],
                       check=True, stdout=subprocess.DEVNULL)

    def pgbench(self, *args, log=None):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        base = [self.pgbench_bin, "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres"]
        return subprocess.run(base + list(args) + ["bench"], check=True, env=env,
                              capture_output=True, text=True, cwd=self.work).stdout

    # --- task-api ---------------------------------------------------------------------
    def start_server(self):
        env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": self.url,
               "HOST": "127.0.0.1", "PORT": str(self.api_port)}
        env.update(kv.split("=", 1) for kv in os.environ.get("BENCH_ENV", "").split() if "=" in kv)
        log = open(self.work / "server.log", "ab")
        started = time.perf_counter()
        self.server = subprocess.Popen([BINARY, "serve"], env=env, stdout=log, stderr=log)
        ready = wait_healthy(self.api_port, 30)
        return (ready - started) * 1000, Proc(self.server.pid)

    def stop_server(self):
        if self.server and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(timeout=15)

    # --- runs ---------------------------------------------------------------------------
    def wrk(self, name, connections, proc):
        script = self.work / f"{name}.lua"
        script.write_text(WRK_SCRIPTS[name])
        url = f"http://127.0.0.1:{self.api_port}/"
        base = ["wrk", "-t", THREADS, "-c", str(connections), "--latency", "-s", str(script), url]
        subprocess.run(base[:5] + ["-d", f"{WARMUP}s"] + base[5:], check=True, capture_output=True)
        batches_before = batch_totals(self.api_port)
        cpu_before = proc.cpu_seconds()
        out = subprocess.run(base[:5] + ["-d", f"{SECONDS}s"] + base[5:], check=True,
                             capture_output=True, text=True).stdout
        cpu_after = proc.cpu_seconds()
        result = parse_wrk(out)
        result["cpu_us"] = (cpu_after - cpu_before) * 1e6 / max(result["requests"], 1)
        result["batch"] = None
        if name in BATCHED:
            after = batch_totals(self.api_port).get(BATCHED[name], [0, 0])
            before = batches_before.get(BATCHED[name], [0, 0])
            statements = after[1] - before[1]
            result["batch"] = (after[0] - before[0]) / statements if statements else None
        result["peak_rss"] = proc.kib("VmHWM") / 1024
        self.rows.append((f"task-api {name}", connections, result))
        return result

    def pgbench_run(self, name, connections, script_args):
        jobs = str(min(connections, int(THREADS)))
        common = ["-n", "-M", "prepared", "-c", str(connections), "-j", jobs]
        self.pgbench(*common, "-T", str(WARMUP), *script_args)
        for old in self.work.glob("pgb_log*"):
            old.unlink()
        out = self.pgbench(*common, "-T", str(SECONDS), "-l", "--log-prefix", "pgb_log", *script_args)
        latencies = sorted(int(line.split()[2]) / 1000 for f in self.work.glob("pgb_log*")
                           for line in f.read_text().splitlines())
        failed = re.search(r"number of failed transactions: (\d+)", out)
        result = {
            "rps": float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1)),
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "errors": int(failed.group(1)) if failed else 0, "cpu_us": None, "peak_rss": None,
            "batch": None,
        }
        self.rows.append((name, connections, result))
        return result

    def run(self):
        need("wrk", "wrk")
        self.start_postgres()
        self.pgbench_bin = shutil.which("pgbench") or subprocess.run(
            [ROOT / "scripts/pg.sh", "bindir"], check=True, capture_output=True, text=True
        ).stdout.strip() + "/pgbench"
        # First start applies the migrations; cold start is measured on the second.
        self.start_server()
        self.stop_server()
        cold_ms, proc = self.start_server()
        self.psql(f"INSERT INTO tasks (title, description) SELECT 'task ' || g, 'seeded' "
                  f"FROM generate_series(1, {SEED_TASKS}) g")
        self.psql("CREATE TABLE bench_tasks (LIKE tasks INCLUDING ALL)")
        self.pgbench("-i", "-s", "1", "-q")
        (self.work / "insert.sql").write_text(PGBENCH_INSERT)
        time.sleep(1)
        idle_kib = proc.kib("VmRSS")
        ratios = []
        for connections in CONNECTIONS:
            get = self.wrk("get_by_id", connections, proc)
            select = self.pgbench_run("pgbench -S", connections, ["-S"])
            create = self.wrk("create", connections, proc)
            insert = self.pgbench_run("pgbench insert", connections, ["-f", str(self.work / "insert.sql")])
            if not QUICK:
                self.wrk("list", connections, proc)
                self.wrk("health", connections, proc)
            ratios.append((connections, get["rps"] / select["rps"], create["rps"] / insert["rps"]))
        self.stop_server()
        self.report(cold_ms, idle_kib / 1024, ratios)

    def report(self, cold_ms, idle_mib, ratios):
        cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                             capture_output=True, text=True).stdout.strip()
        print(f"\n`make bench` on {os.cpu_count()} cores ({cpu}), {SECONDS} s per run after "
              f"{WARMUP} s warm-up; wrk, pgbench, PostgreSQL and task-api share the machine.\n")
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
        for connections, get_ratio, create_ratio in ratios:
            print(f"- {connections} connections: get_by_id ÷ pgbench -S = **{get_ratio:.2f}**, "
                  f"create ÷ pgbench insert = **{create_ratio:.2f}**")
        print(f"- cold start (spawn → first 200 on /health, migrations applied): **{cold_ms:.1f} ms**")
        print(f"- idle RSS: **{idle_mib:.1f} MiB**")


def main():
    # Stopped from outside (SIGTERM): unwind, so the finally below still stops everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not BINARY.exists():
        sys.exit(f"bench: {BINARY} is missing; run `make build` first")
    (ROOT / "target").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="task-api-bench-", dir=ROOT / "target"))
    work.chmod(0o755)  # as root, the cluster inside runs as `postgres`
    bench = Bench(work)
    try:
        bench.run()
    finally:
        bench.stop_server()
        subprocess.run([ROOT / "scripts/pg.sh", "stop", bench.pg_dir], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
