"""`make bench`: task-api measured against PostgreSQL's own pgbench, in one run.

Starts a throwaway PostgreSQL and the release binary, seeds 10,000 tasks (a third of each
status) and copies them into `bench_tasks`, a table made `LIKE tasks INCLUDING ALL`. Then
each scenario runs for a fixed time after a warm-up, at 64 and at 256 connections, task-api
under wrk, each followed at once by its pgbench twin: the statement the server runs for it
(src/store/sql/tasks.rs), with the same client count, on the copy.

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
  standby        get_by_id through a second server with    (server CPU per request
                 DATABASE_READ_URL on a streaming standby  ÷ get_by_id's)
                 (pg_basebackup -R; once it has replayed all the primary wrote),
                 at the first of BENCH_CONNECTIONS (64) only

The twins write the server's NULL parameters (no If-Match, no title) as typed NULL literals:
pgbench cannot bind a NULL. get_304 fetches the seeded tasks' ETags over HTTP before each
run (patch runs move them). Delete runs are seeded for DELETE_CEILING requests a second.
For the overload runs wrk gets the hard fd limit; the server keeps its own MAX_CONNECTIONS
(derived from its fd limit, at most 4,096; BENCH_ENV may set it), past which it answers 503.
A ratio to a baseline (keyed_create ÷ create, get_304 ÷ get_by_id) is also measured in
turn, after the table's runs: BENCH_PAIRS (5) pairs of short runs (BENCH_PAIR_SECONDS, 3,
each after a 1 s warm-up), the baseline first in every other pair, and its target is judged
on the median of the pairs' ratios. So is standby's: get_by_id's server CPU per request on
its server over that on the first (at most 1.10 ×), the two servers in turn; and at least
90 % of its server's reads (task_api_db_reads_total in its /metrics, over all its runs) must
have been served by the standby. Two runs 30 s apart on this shared VM can differ by 15 %,
which a ratio of two such runs doubles; runs in turn see the same machine. Before each run
(and each twin's) PostgreSQL is settled: VACUUM ANALYZE, then CHECKPOINT, so that no run
pays for the writes of the one before it. It is settled after the create and keyed_create runs
too: tasks' growth from the settle before (pg_total_relation_size, table and indexes) over the
rows the run created is what a create and a keyed create cost in storage (docs/retries.md);
not measured once tasks has had updates or deletes, whose space creates would reuse. req/s
counts answers with a 2xx or 3xx status. "errors" counts socket errors and responses with
another status than the scenario's (from the server's /metrics: a 200 in get_304 is an
error); for a twin, failed transactions and deletes that found no row. Prints one markdown
table, the ratios, the storage lines, cold start, idle RSS and the targets met or missed, and
writes them to docs/results/bench.md (not when BENCH_ONLY or BENCH_QUICK leaves scenarios out). Stops
everything it started. workloads.py holds the scenarios, their wrk scripts and pgbench
twins; measure.py the runs; report.py the report; curve.py the drawing.

`python3 -m bench curve` (make bench-curve) runs get_by_id, create and patch at 16 to 4,096
connections instead, prints its numbers as a table, and writes them with the drawing to
docs/results/load-latency.md and docs/results/load-latency.svg.

`python3 -m bench overload` (make bench-overload) runs only the overload row at 4,096
connections, BENCH_ROUNDS times, each variant of BENCH_VARIANTS in turn on a server started for
its run, and writes the runs, and each variant's share of them that met the row's targets, to
docs/results/overload.md: one run of the row is a sample of a noisy machine, this its spread.

`python3 -m bench memory` (make bench-memory) measures what the row's 4,096 connections hold,
BENCH_ROUNDS times, each variant in turn on a server started for its run: its RSS idle, with the
connections kept alive after one get each, and with a get waiting on all but one (tasks locked),
and writes the runs to docs/results/memory.md.

Environment: BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_CONNECTIONS ("64 256"),
BENCH_BINARY (the musl release binary), BENCH_ENV (extra server variables, "K=V K=V"),
BENCH_QUICK=1 (only get_by_id and create, with their pgbench twins: for tuning runs),
BENCH_ONLY (scenarios to run, "patch,delete"), BENCH_CURVE=1 (the curve too, after the
table), BENCH_CURVE_SECONDS (5, per point of the curve), BENCH_PAIRS (5; 0: no runs in
turn, the targets then use the table's rows), BENCH_PAIR_SECONDS (3), BENCH_ROUNDS (5) and
BENCH_VARIANTS ("as shipped:"; "label: K=V K=V; label: K=V", each a variant's server variables;
BENCH_BINARY=path among them runs that variant on another build).
"""

import signal
import sys

from harness.process import raise_fd_limit
from harness.suite import workdir

from .measure import Bench
from .workloads import BINARY, ONLY, SCENARIOS


def main():
    # Stopped from outside (SIGTERM): unwind, so that everything started is still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not BINARY.exists():
        sys.exit(f"bench: {BINARY} is missing; run `make build` first")
    runs = {"": "run", "curve": "run_curve", "overload": "run_overload", "memory": "run_memory"}
    what = " ".join(sys.argv[1:])
    if what not in runs:
        sys.exit(f"bench: unknown command {what!r}; known: python3 -m bench [curve | overload | memory]")
    unknown = set(ONLY) - set(SCENARIOS)
    if unknown:
        sys.exit(f"bench: unknown scenario {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    raise_fd_limit()
    with workdir("bench") as work:
        bench = Bench(work)
        try:
            getattr(bench, runs[what])()
        finally:
            bench.close()


if __name__ == "__main__":
    main()
