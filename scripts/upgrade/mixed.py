"""Steps b and c: a mixed fleet behind the fleet suite's HAProxy (scripts/fleet/), on its primary
and synchronous standby, under 64 keep-alive connections of requests.crud.

  b) rollout: 3 replicas of the old build serve; the new build joins on a spare server (r4) and
     migrates; the facts that cross versions are asked of r1 (old) and r4 (new); r1–r3 are then
     replaced one by one by the new build.
  c) restart and rollback, on what b left: an old replica started again on r4 (where a new one
     ran) must come up on the migrated schema and serve; then r1–r3 go back to the old build.
     Where the old build must refuse that schema (it predates records and a migration was added
     since), c checks the refusal instead, and says so."""

import asyncio
import re
import subprocess
import time
from collections import Counter

from fleet.load import missing_creates, outcomes, span, under_load
from fleet.scenarios import restart
from fleet.topology import REPLICAS, Fleet
from harness.http import call
from harness.net import free_port

from .context import scenario
from .requests import across, crud, lost_patches

SPARE = "r4"
FIRST = [f"r{i + 1}" for i in range(REPLICAS)]
SETTLE = 2.0  # seconds of load before the first change and after the last


def under_crud(fleet, changes):
    """Runs the coroutine function `changes`, SETTLE s after the clients (requests.crud) start
    sending through HAProxy and SETTLE s before they stop: (the load, what `changes` returned)."""

    async def settled():
        await asyncio.sleep(SETTLE)
        try:
            return await changes()
        finally:
            await asyncio.sleep(SETTLE)

    return under_load(fleet.haproxy.port, settled, mix=crud)


def verdict(fleet, load, before):
    """What b and c both report of the load: (figure, ok)."""
    after = fleet.haproxy.counters()
    failed = [k for k in load.calls if not k.ok]
    cluster = fleet.pg.writable()
    missing = missing_creates(cluster, load.acked, fleet.database)
    lost = lost_patches(cluster, load.patched, fleet.database)
    kinds = Counter(k.method for k in load.calls)
    patched = sum(k.method == "PATCH" and k.status == 200 for k in load.calls)
    figure = (f"{len(load.calls)} requests ({kinds['GET']} gets, {kinds['POST']} creates, "
              f"{kinds['PATCH']} patches with If-Match), {len(failed)} failed"
              f"{f' {outcomes(failed)}' if failed else ''} (target 0); "
              f"{len(load.acked)} creates acknowledged, {missing} missing; {patched} patches acknowledged, "
              f"{lost} tasks not holding the last (target 0); HAProxy retried {after['wretr'] - before['wretr']}, "
              f"redispatched {after['wredis'] - before['wredis']}")
    return figure, not failed and missing == 0 and lost == 0 and bool(load.acked) and patched > 0


def replaced(restarts):
    """The figure of replicas replaced one by one (fleet.scenarios.restart's results), and whether
    each old one exited 0 and each new one came up."""
    codes = [r["code"] for r in restarts]
    problems = [r["problem"] for r in restarts if r["problem"]]
    figure = (f"exit {', '.join(map(str, codes))}, the one started in its place ready in "
              f"{span([r['up'] for r in restarts if r['up'] is not None])}{''.join(f'; {p}' for p in problems)}")
    return figure, all(c == 0 for c in codes) and not problems


def join(fleet, name, binary):
    """`binary` started on the spare server `name`: seconds until ready and until HAProxy had it
    UP, and the migrations it applied."""
    r = fleet.replicas[name] = fleet.replica(name, fleet.ports[name], binary=binary)
    ready = r.wait_ready(60)
    balanced = fleet.haproxy.wait_up(name, 15)
    return ready, balanced, re.findall(r"applied migration (\w+)", r.output())


def rollout(ctx, versions):
    fleet = Fleet(ctx.folder(f"fleet-{versions.database}"), pg=ctx.pair(), database=versions.database,
                  binary=versions.old, spares=[SPARE])
    ctx.fleets[versions.database] = fleet
    fleet.start()
    before = fleet.haproxy.counters()
    crossing = {}

    async def changes():
        joined = await asyncio.to_thread(join, fleet, SPARE, versions.new)
        crossing["said"] = await across(fleet.replicas[FIRST[0]].port, fleet.replicas[SPARE].port)
        return joined, [await asyncio.to_thread(restart, fleet, name, versions.new) for name in FIRST]

    load, ((ready, balanced, applied), restarts) = under_crud(fleet, changes)
    ctx.logs += fleet.logs()
    records = fleet.pg.writable().psql("SELECT count(*) FROM task_api_compatibility", fleet.database)
    crossed, crossed_ok = crossing["said"]
    swaps, swaps_ok = replaced(restarts)
    said, ok = verdict(fleet, load, before)
    figure = (f"sql/: {versions.sql_said()}; {SPARE} ({versions.new_label}) ready {ready:.1f} s after its start, "
              f"applied {', '.join(applied) or 'nothing'}, {records} compatibility records, UP in HAProxy "
              f"{balanced:.1f} s later; across versions: {crossed}; {', '.join(FIRST)} replaced one by one, each "
              f"{swaps}; {said}")
    return figure, ok and crossed_ok and swaps_ok


async def serves(port):
    """A create and a get on `port` itself: how they were answered, and whether with 201 and 200."""
    created = await call(port, "POST", "/tasks", {"title": "served after a rollback"})
    got = await call(port, "GET", f"/tasks/{created.json()['id']}") if created.status == 201 else created
    return f"POST {created.outcome()}, GET {got.outcome()}", created.status == 201 and got.status == 200


def refused(fleet, versions):
    """c where the old build must refuse: it is started once, beside the fleet."""
    out = subprocess.run([versions.old, "serve"], capture_output=True, text=True, timeout=60,
                         env={"DATABASE_URL": fleet.url, "HOST": "127.0.0.1", "PORT": str(free_port())})
    named = (versions.changed or versions.added)[0].removesuffix(".sql")
    figure = (f"{versions.old_label} must refuse this schema ({versions.sql_said()}; it predates records): exit "
              f"{out.returncode}, {'names' if named in out.stderr else 'does NOT name'} {named}; the rollback to "
              "it is not run")
    return figure, out.returncode == 1 and named in out.stderr


def rollback(ctx, versions):
    fleet = ctx.fleets.get(versions.database)
    if fleet is None:
        raise RuntimeError("step c carries on from step b: run them together")
    if versions.old_refuses:
        figure, ok = refused(fleet, versions)
        fleet.close()
        return figure, ok
    before = fleet.haproxy.counters()

    async def changes():
        first = await asyncio.to_thread(restart, fleet, SPARE, versions.old)
        answered = await serves(fleet.replicas[SPARE].port)
        return first, answered, [await asyncio.to_thread(restart, fleet, name, versions.old) for name in FIRST]

    started = time.monotonic()
    load, (first, (answered, answered_ok), restarts) = under_crud(fleet, changes)
    ctx.logs += fleet.logs()
    judged = re.findall(r"the database holds (\w+) \((\w+)\), which works with ([\w.-]+)",
                        fleet.replicas[SPARE].output())
    back, back_ok = replaced([first])
    swaps, swaps_ok = replaced(restarts)
    said, ok = verdict(fleet, load, before)
    fleet.close()
    logged = "; ".join(f"{m} ({kind}) works with {release}" for m, kind, release in judged) or "nothing newer"
    figure = (f"sql/: {versions.sql_said()}; {versions.old_label} started again as {SPARE} on the migrated "
              f"schema: the new one's {back}; it logged: {logged}; served: {answered}; {', '.join(FIRST)} back to "
              f"{versions.old_label} one by one, each {swaps}; {said} (in {time.monotonic() - started:.0f} s)")
    # The old build judges every migration it does not know: each must be in its log as working with it.
    judged_ok = not versions.old_has_records or {m for m, _, _ in judged} == {a.removesuffix(".sql")
                                                                              for a in versions.added}
    return figure, ok and back_ok and answered_ok and swaps_ok and judged_ok


LOAD = ("under 64 keep-alive connections through HAProxy (gets, creates plain and with Idempotency-Key, patches "
        "with If-Match)")
ROLLOUT_TARGET = ("0 failed requests (no answer, a connection error, or anything but 2xx); 0 acknowledged creates "
                  "or patches missing; a keyed retry that crosses versions replays (201, idempotent-replayed, "
                  "same id), both ways; an ETag of one version passes If-Match on the other; each old replica "
                  "exits 0")
ROLLBACK_TARGET = ("the old replica comes up on the migrated schema and serves; 0 failed requests; 0 acknowledged "
                   "writes missing")


@scenario("b", what=f"rollout <rev> → this build, {LOAD}: 3 replicas of <rev> serve; this build joins as r4 and "
                    "migrates; the cross-version facts asked of r1 (<rev>) and r4; r1–r3 replaced one by one",
          target=ROLLOUT_TARGET)
def rollout_from_rev(ctx):
    return rollout(ctx, ctx.versions("rev"))


@scenario("c", what="restart and rollback on b's database: <rev> started again as r4 on the schema this build "
                    "migrated; then r1–r3 back to <rev> one by one, under the same load",
          target=f"{ROLLBACK_TARGET}. Where <rev> predates records and a migration was added since: its refusal "
                 "instead (exit 1 naming it)")
def rollback_to_rev(ctx):
    return rollback(ctx, ctx.versions("rev"))


@scenario("b-expand", what=f"the same rollout between this build and this build + a test-only expand migration "
                           f"and a sql/indexes/ index (a debug build), on a database of its own, {LOAD}",
          target=ROLLOUT_TARGET)
def rollout_of_expand(ctx):
    return rollout(ctx, ctx.versions("expand"))


@scenario("c-expand", what="the same restart and rollback: this build started again on the expanded schema, then "
                           "every replica back to this build",
          target=f"{ROLLBACK_TARGET}; this build logs that the expand works with it")
def rollback_of_expand(ctx):
    return rollback(ctx, ctx.versions("expand"))
