"""The failover fleet's scenarios, in the order they run: a) a rolling restart, b) a failover
of the database, c) many replicas starting at once; each under load.py's clients where it says
so. The registry of every scenario (reads.py adds d to h)."""

import asyncio
import signal
import time

from harness import ROOT
from harness.http import request
from harness.process import stop_all
from harness.suite import Suite

from .load import CLIENTS, missing_creates, outcomes, span, stored_titles, under_load
from .topology import REPLICAS, SHUTDOWN_DELAY, SHUTDOWN_TIMEOUT

BUDGET = 5.0  # a request that needs the database answers within this (seconds)
SLACK = 0.5
SCENARIOS = Suite()
scenario = SCENARIOS.scenario


@scenario("a", setup="failover",
          what=f"rolling restart of all {REPLICAS} replicas behind HAProxy, one after another (SIGTERM, "
               "wait for the exit, start again on its port, wait for /ready 200 and HAProxy UP), under "
               f"{CLIENTS} keep-alive connections of gets and creates",
          target="0 failed requests (non-2xx, connection error, timeout); 0 acknowledged creates missing; "
                 "each old replica exits 0")
def rolling_restart(fleet):
    fleet.heal()
    before = fleet.haproxy.counters()

    async def one_after_another():
        await asyncio.sleep(2)
        done = [await asyncio.to_thread(restart, fleet, name) for name in list(fleet.replicas)]
        await asyncio.sleep(2)
        return done

    load, restarts = under_load(fleet.haproxy.port, one_after_another)
    after = fleet.haproxy.counters()
    failed = [k for k in load.calls if not k.ok]
    missing = missing_creates(fleet.pg.writable(), load.acked)
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


def restart(fleet, name, binary=None):
    """SIGTERM `name`, wait for its exit, start it again on its port (as `binary`, else the fleet's),
    wait for /ready and HAProxy."""
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
    new = fleet.replicas[name] = fleet.replica(name, old.port, binary=binary)
    try:
        result["up"] = new.wait_ready(30)
        result["balanced"] = fleet.haproxy.wait_up(name, 15)
    except RuntimeError as err:
        result["problem"] = str(err)
    return result


@scenario("b", setup="failover",
          what="failover under the same load: SIGKILL to the primary's postmaster, `pg_ctl promote` of the "
               "synchronous standby 1 s later; the replicas' DATABASE_URL names both hosts, "
               "target_session_attrs=read-write",
          target="first success ≤ 5 s after the promote, steady success before the load ends; only 2xx and "
                 "503 (a POST closed without an answer is an unknown outcome, counted apart); none slower "
                 "than 5.5 s; 0 acknowledged creates missing on the new primary; 0 creates answered with "
                 "an error stored (keyed creates ask again until the database answers); no replica restarted")
def failover(fleet):
    if fleet.pg.primary.killed:
        raise RuntimeError("the primary was already killed")
    fleet.heal()
    pids = {name: r.pid for name, r in fleet.replicas.items()}
    times = {}

    async def kill_and_promote():
        await asyncio.sleep(2)
        times["kill"] = time.monotonic()
        fleet.pg.primary.kill()
        await asyncio.sleep(1)
        times["promote"] = time.monotonic()
        await asyncio.to_thread(fleet.pg.promote)
        times["promoted"] = time.monotonic()
        await asyncio.sleep(8)

    load, _ = under_load(fleet.haproxy.port, kill_and_promote)
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
    new_primary = fleet.pg.standby
    if not new_primary.wait_until("NOT pg_is_in_recovery()", 10, tolerate_errors=True):
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


@scenario("c", setup="failover",
          what="8 replicas started at once against an empty database (multi-host URL, on the primary "
               "that takes writes now)",
          target="all 8 ready; one refinery_schema_history row and one 'applied migration' line per migration")
def many_at_once(fleet, count=8):
    cluster = fleet.pg.writable()
    db = "tasks_c"
    cluster.psql(f'CREATE DATABASE "{db}"')
    started = time.monotonic()
    replicas = [fleet.replica(f"c{i + 1}", db=db, SHUTDOWN_DELAY="0") for i in range(count)]
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
    codes = stop_all([r.process for r in replicas], SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT + 5)
    figure = (f"{ready}/{count} ready (the last {slowest:.1f} s after the start); {rows} history rows "
              f"({versions} versions), {applied} 'applied migration' lines for {migrations} migrations; "
              f"stopped with exit {', '.join(map(str, sorted(set(codes), key=str)))}")
    figure += "".join(f"; {p}" for p in problems[:2])
    ok = ready == count and int(rows) == int(versions) == migrations and applied == migrations
    return figure, ok, [r.log_path for r in replicas]


