"""`make test-fleet`: task-api run as many, behind HAProxy, on a PostgreSQL that fails over
and on one whose standbys serve reads.

Starts everything itself on loopback, one fleet at a time: PostgreSQL clusters (a primary and
streaming standbys made with `pg_basebackup -R`), 3 task-api replicas whose DATABASE_URL names
every host with target_session_attrs=read-write, and SHUTDOWN_DELAY=2; HAProxy in front
(roundrobin, health checks on /ready, retries with redispatch). First the failover fleet (one
standby, synchronous: an acknowledged commit exists on both), under 64 keep-alive connections
of gets and creates through HAProxy:

  a) rolling restart: each replica in turn SIGTERMed, waited for, started again on its port,
     waited for until /ready is 200 and HAProxy has it UP;
  b) failover: the primary's postmaster SIGKILLed, the standby promoted a second later;
  c) 8 replicas started at once against an empty database.

Then the reads fleet: two asynchronous standbys, both in every replica's DATABASE_READ_URL
(READ_MAX_LAG=1); where reads went is read from the replicas' /metrics (db_reads{target},
db_reads_waited) before and after:

  d) one standby's replay paused: 10,000 create-then-read pairs, each read at once on another
     replica (addressed directly), with the x-consistency-token (0 stale reads), then 10,000
     without (stale reads, as the token is what prevents them); these replicas have
     READ_MAX_LAG=30, so that the paused standby stays in the rotation for the whole run;
  e) reads only: at least 90 % served by standbys;
  f) a standby's postmaster SIGKILLed under load: no client sees an error;
  g) both standbys paused under writes: past READ_MAX_LAG every read is the primary's;
  h) forged tokens (another system id, another timeline, ahead of the primary, garbage):
     served by the primary without waiting.

Prints one line per scenario as it ends, then the markdown table, which it also writes to
docs/results/fleet.md (not for a FLEET_ONLY run: a subset leaves the file as it was), and
exits 1 when any scenario failed. A scenario that crashes is a FAIL with the reason;
everything started is stopped on exit, also on Ctrl-C or SIGTERM. Needs PostgreSQL
(scripts/pg.sh installs it as root) and HAProxy (installed from the distribution as root when
missing); Python's standard library only. topology.py builds the fleets, load.py is the
clients, scenarios.py scenarios a to c, reads.py d to h.

Environment: FLEET_BINARY (the musl release binary), FLEET_ONLY (comma-separated scenario
names: a to h), FLEET_KEEP=1 (keep the work directory with every log).
"""

import os
import signal
import sys
import time

from harness.process import install, raise_fd_limit
from harness.report import command, conclude, escaped, finished, say, tail
from harness.suite import attempt, workdir

from . import reads  # noqa: F401 - registers scenarios d to h
from .scenarios import SCENARIOS
from .topology import BINARY, SHUTDOWN_DELAY, Fleet

ONLY = [name for name in os.environ.get("FLEET_ONLY", "").split(",") if name]
KEEP = os.environ.get("FLEET_KEEP") == "1"
TITLE = ("make test-fleet: task-api as many replicas behind HAProxy, on a PostgreSQL that fails over "
         "and on one whose standbys serve reads")


def start(work, kind):
    """A fleet of `kind`, started; None when it could not start (the reason and the logs'
    tails printed)."""
    started = time.monotonic()
    folder = work / kind
    try:
        fleet = Fleet(folder, kind)
        fleet.start()
    except Exception as err:  # noqa: BLE001 - every scenario on it is then a FAIL with this reason
        say(f"fleet {kind}: could not start: {type(err).__name__}: {err}")
        for path in sorted(folder.glob("*.log")) + sorted(folder.glob("*/server.log")):
            say("\n".join([f"    | {path.name}:"] + [f"    | {escaped(line)}" for line in tail(path)]))
        return None
    pg = fleet.pg
    say(f"fleet {kind}: primary :{pg.primary.port}, {'synchronous ' if pg.synchronous else ''}standby "
        f"{', '.join(f':{c.port}' for c in pg.standbys)}, replicas "
        f"{', '.join(f'{n} :{r.port}' for n, r in fleet.replicas.items())}, HAProxy :{fleet.haproxy.port} "
        f"(started in {time.monotonic() - started:.1f} s)")
    return fleet


def run_one(s, fleet, results):
    started = time.monotonic()
    if fleet is None:
        figure, ok, rest = "crashed: RuntimeError: the fleet did not start", False, []
    else:
        figure, ok, rest = attempt(s.run, fleet)
    logs = rest[0] if rest else fleet.logs() if fleet else []
    results[s.name] = (figure, ok)
    finished(s.name, ok, figure, time.monotonic() - started, [(path.name, tail(path)) for path in logs[-4:]])


def main():
    # Stopped from outside (SIGTERM): as Ctrl-C, which asyncio.run turns into cancelling the
    # scenario, and then a KeyboardInterrupt; everything started is still stopped.
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: (terminated.append(1), signal.raise_signal(signal.SIGINT)))
    raise_fd_limit()
    selected = SCENARIOS.select(ONLY, "fleet")
    if not BINARY.exists():
        sys.exit(f"fleet: {BINARY} is missing; run `make build` first")
    install("haproxy", "haproxy", "fleet")
    started = time.monotonic()
    results = {}
    code = None
    with workdir("fleet", KEEP, grace=SHUTDOWN_DELAY + 5) as work:
        try:
            kind = fleet = None
            for s in selected:
                if s.setup != kind:  # one fleet at a time: the machine may have 2 cores
                    if fleet:
                        fleet.close()
                    kind, fleet = s.setup, start(work, s.setup)
                run_one(s, fleet, results)
            seconds = time.monotonic() - started
            conclude("fleet", selected, results, seconds,
                     f"`make test-fleet` on {os.cpu_count()} cores in {seconds:.0f} s; PostgreSQL (primaries and "
                     "standbys), HAProxy, the task-api replicas and the clients share the machine.", TITLE, BINARY,
                     command("test-fleet", ["FLEET_BINARY"]), "FLEET_ONLY" if ONLY else "")
        except KeyboardInterrupt:
            say(f"fleet: {'SIGTERM' if terminated else 'interrupted'}; stopping everything")
            results["interrupted"] = ("", False)
            code = 143 if terminated else 130
    sys.exit(code if code else 0 if all(ok for _, ok in results.values()) and len(results) == len(selected) else 1)


if __name__ == "__main__":
    main()
