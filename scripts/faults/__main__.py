"""`make test-faults`: task-api against a slow, stalled, failing or hostile world.

Each scenario starts its own task-api servers (the release binary, HOST=127.0.0.1, a free
port) against its own database on a throwaway PostgreSQL on loopback (its own cluster where
it stops PostgreSQL), does one harmful thing (slow readers, a slow or frozen database,
stalled uploads, forged log fields, floods of entity tags or of request heads, kill -9,
SIGTERM, ...), and measures one figure against its target. Prints one line per scenario as
it ends, then the markdown table, which it also writes to docs/results/faults.md (not for a
FAULTS_ONLY run: a subset leaves the file as it was), and exits 1 when any scenario failed.
The cheap scenarios run at the same time; the heavy and timing-sensitive ones one after the
other. A scenario that crashes is a FAIL with the reason; everything started is stopped on
exit, also on Ctrl-C or SIGTERM. Needs PostgreSQL (scripts/pg.sh installs it as root), psql
and prlimit; Python's standard library only.

The scenarios, by what they attack (one module each): limits.py (memory, stalled, fd-limit),
heads.py (if-match-flood, head-flood, trace-memory), database.py (slow-db, abandoned,
fallback, outage, list-resets), startup.py (sslmode, verify-ca, startup-hang, password-leak,
ipv6, replicas), logs.py (debug-log, log-forging), lifecycle.py (kill9, sigterm).

Environment: FAULTS_BINARY (the musl release binary), FAULTS_ONLY (comma-separated
scenario names, for development), FAULTS_KEEP=1 (keep the work directory with every log).
"""

import os
import shutil
import sys
import threading
import time

from harness.cluster import Cluster
from harness.report import command, conclude, finished
from harness.suite import attempt, begin, workdir

from . import limits, heads, database, startup, logs, lifecycle  # noqa: F401 - they register the scenarios
from .context import BINARY, KEEP, ONLY, PASSWORD, PG_OPTIONS, SCENARIOS, Context

TITLE = "make test-faults: task-api against a slow, stalled, failing or hostile world"


def run_one(s, work, cluster, results):
    ctx = Context(s.name, work, cluster)
    started = time.monotonic()
    figure, ok, _ = attempt(s.run, ctx)
    try:
        ctx.close()
    except Exception as err:  # noqa: BLE001
        figure, ok = f"{figure}; stopping its servers: {err}", False
    results[s.name] = (figure, ok)
    tails = [(path.name, path.read_bytes().decode(errors="backslashreplace").splitlines()[-30:])
             for path in ctx.logs[-4:]]
    finished(s.name, ok, figure, time.monotonic() - started, tails, width=14)


def report(selected, results, seconds):
    conclude("faults", selected, results, seconds,
             f"`make test-faults` on {os.cpu_count()} cores in {seconds:.0f} s; PostgreSQL, task-api and the "
             "clients share the machine.", TITLE, BINARY, command("test-faults", ["FAULTS_BINARY"]),
             "FAULTS_ONLY" if ONLY else "")


def main():
    selected = begin("faults", SCENARIOS, ONLY, BINARY)
    if not shutil.which("prlimit"):
        sys.exit("faults: prlimit is missing (util-linux)")
    started = time.monotonic()
    results = {}
    with workdir("faults", KEEP) as work:
        cluster = None
        if any(s.needs_db for s in selected):
            cluster = Cluster(work, "pg", PASSWORD, PG_OPTIONS + ["-c", "log_connections=on"], app="faults",
                              tag="faults")
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
    sys.exit(0 if all(ok for _, ok in results.values()) and len(results) == len(selected) else 1)


if __name__ == "__main__":
    main()
