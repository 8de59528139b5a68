"""The read scenarios, d) to h), on the `reads` fleet (two asynchronous standbys in every
replica's DATABASE_READ_URL): where reads go is told by the replicas' own counters,
db_reads{target} and db_reads_waited, read from /metrics before and after."""

import asyncio
import collections
import math
import re
import statistics
import time

from harness.http import Connection, metric
from harness.process import stop_all

from .load import CLIENTS, creates_and_gets, non_2xx, outcomes, pairs, stale, under_load
from .scenarios import scenario
from .topology import DATABASE, READ_MAX_LAG, REPLICAS

TOKEN = "x-consistency-token"
PAIRS = 10_000
ASKED = 25  # scenario h: reads with each token on each replica
# Scenario d's own replicas: a paused standby stays in the rotation of reads without a token
# until its lag passes this. With the default 1 s it would leave ~1 s after the first write,
# and how many reads were stale would measure the probe's timing, not the token.
PAUSED_MAX_LAG = 30.0
PROBE_EVERY = 0.05  # the servers' probe of the standbys (src/store/replicas.rs)
# Scenario g counts reads from this long after READ_MAX_LAG: a standby leaves at the first probe
# past it, and a probe (a look at the primary, then at each standby) is slow on a busy machine.
SLACK = 1.0


def reads(replicas):
    """Reads by where they went, and those that waited for a standby, summed over `replicas`."""
    texts = [r.metrics() for r in replicas]
    return collections.Counter({
        "primary": sum(metric(t, "task_api_db_reads_total", target="primary") for t in texts),
        "standby": sum(metric(t, "task_api_db_reads_total", target="standby") for t in texts),
        "waited": sum(metric(t, "task_api_db_reads_waited_total") for t in texts)})


def moved(before, after):
    """`on standbys 9,870 / on the primary 130 (waited 0)`, from two readings of reads()."""
    d = {k: int(after[k] - before[k]) for k in ("standby", "primary", "waited")}
    return d, f"on standbys {d['standby']:,} / on the primary {d['primary']:,} (waited {d['waited']:,})"


def lags(fleet, replicas):
    """Each standby's lag as each replica's probe last saw it: {"standby1": [seconds, …]} (NaN: out)."""
    names = {f":{s.port}/": s.dir.name for s in fleet.pg.standbys}  # labelled `postgres@127.0.0.1:PORT/tasks …`
    seen = collections.defaultdict(list)
    for r in replicas:
        for label, value in re.findall(r'^task_api_db_standby_lag_seconds\{standby="([^"]+)"\} (\S+)$',
                                       r.metrics(), re.M):
            seen[next((n for port, n in names.items() if port in label), label)].append(float(value))
    return seen


def probed(fleet, replicas, limit=5.0):
    """Waits (at most `limit` s) until every replica's probe has seen every standby up."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        seen = lags(fleet, replicas)
        up = [len(v) == len(replicas) and not any(map(math.isnan, v)) for v in seen.values()]
        if len(up) == len(fleet.pg.standbys) and all(up):
            return
        time.sleep(0.05)


def shown(seen):
    """`standby1 out/out/out, standby2 0.0 s/0.0 s/0.0 s` from lags()."""
    return ", ".join(f"{standby} {'/'.join('out' if math.isnan(v) else f'{v:.1f} s' for v in values)}"
                     for standby, values in sorted(seen.items())) or "none shown"


def healed(fleet):
    """Heals `fleet` (standbys running, replaying and caught up; replicas up); its replicas."""
    fleet.heal()
    return list(fleet.replicas.values())


def known_ids(fleet, count=200):
    """Ids of `count` tasks every standby has: the newest, inserted first when there are fewer
    (a FLEET_ONLY run), then the standbys caught up."""
    primary = fleet.pg.primary
    missing = count - int(primary.psql("SELECT count(*) FROM tasks", DATABASE))
    if missing > 0:
        primary.psql(f"INSERT INTO tasks (title) SELECT 'known ' || n FROM generate_series(1, {missing}) n",
                     DATABASE)
    fleet.pg.heal()
    return [int(i) for i in primary.psql(f"SELECT id FROM tasks ORDER BY id DESC LIMIT {count}", DATABASE).split()]


@scenario("d", setup="reads",
          what=f"{PAIRS:,} create-then-read pairs with the token, then {PAIRS:,} without, each read at once "
               f"on another replica than its create ({CLIENTS} clients on {REPLICAS} replicas of their own, "
               f"addressed directly, READ_MAX_LAG={PAUSED_MAX_LAG:g} so that the paused standby stays in "
               "the rotation of reads without a token); one standby's replay paused (pg_wal_replay_pause) "
               "before each run, resumed after",
          target="with the token 0 stale reads (404, or another title than written); without it more than 0 "
                 "(the token is what keeps them fresh); every create 201 with a token, every read 200 or 404")
def your_own_writes(fleet):
    fleet.heal()
    replicas = [fleet.replica(f"d{i + 1}", READ_MAX_LAG=f"{PAUSED_MAX_LAG:g}", SHUTDOWN_DELAY="0")
                for i in range(REPLICAS)]
    try:
        for r in replicas:
            r.wait_ready(30)
        probed(fleet, replicas)
        runs = {}
        for token in (True, False):
            fleet.pg.pause(fleet.pg.standbys[0])
            before, started = reads(replicas), time.monotonic()
            done = asyncio.run(pairs([r.port for r in replicas], PAIRS, token))
            where = moved(before, reads(replicas))[1]
            runs[token] = (done, where, time.monotonic() - started, lags(fleet, replicas))
            fleet.pg.heal()
    finally:
        stop_all([r.process for r in replicas], 10)
    figure, ok = [], True
    for token, (done, where, seconds, _) in runs.items():
        errors = ([c for c, _ in done if c.status != 201 or TOKEN not in c.headers]
                  + [k for _, k in done if k and k.status not in (200, 404)])
        stales = sum(stale(k) for c, k in done if k)
        figure.append(f"{'with' if token else 'without'} the token: {len(done):,} pairs in {seconds:.0f} s, "
                      f"{stales:,} stale (target {'0' if token else '> 0'}), reads {where}; "
                      f"{len(errors)} errors{f' {outcomes(errors)}' if errors else ''}")
        ok = ok and len(done) == PAIRS and not errors and (stales == 0 if token else stales > 0)
    figure.append(f"standbys' lag at the end of the run without: {shown(runs[False][3])}")
    return "; ".join(figure), ok, [r.log_path for r in replicas]


@scenario("e", setup="reads",
          what=f"no writes: {CLIENTS} keep-alive connections through HAProxy for 5 s, each in a loop "
               "GET /tasks/{id} of tasks every standby has, and GET /tasks?limit=10",
          target="at least 90 % of the reads served by standbys (the replicas' db_reads{target}); 0 non-2xx")
def reads_only(fleet):
    replicas = healed(fleet)
    known = known_ids(fleet)
    probed(fleet, replicas)
    before = reads(replicas)
    load, _ = under_load(fleet.haproxy.port, lambda: asyncio.sleep(5), mix=creates_and_gets(known, creates=False))
    counts, where = moved(before, reads(replicas))
    share = counts["standby"] / max(1, counts["standby"] + counts["primary"])
    failed, failures = non_2xx(load.calls)
    figure = f"{len(load.calls):,} requests, reads {where}: {share:.1%} on standbys (target ≥ 90 %); {failures}"
    return figure, share >= 0.9 and not failed and bool(load.calls)


@scenario("f", setup="reads",
          what=f"a standby killed under load: {CLIENTS} keep-alive connections through HAProxy of creates, "
               "gets of tasks every standby has and lists; SIGKILL to one standby's postmaster 2 s in, 4 s more",
          target="0 non-2xx (or unanswered) requests; after the kill, reads still served, the other standby "
                 "still serving some (its db_reads moving)")
def standby_killed(fleet):
    replicas = healed(fleet)
    victim = fleet.pg.standbys[0]
    seen = {}

    async def kill():
        await asyncio.sleep(2)
        seen["before"], seen["kill"] = await asyncio.to_thread(reads, replicas), time.monotonic()
        victim.kill()
        await asyncio.sleep(4)
        seen["after"] = await asyncio.to_thread(reads, replicas)
        return await asyncio.to_thread(lags, fleet, replicas)

    load, at_end = under_load(fleet.haproxy.port, kill, mix=creates_and_gets(known_ids(fleet)))
    counts, where = moved(seen["before"], seen["after"])
    failed, failures = non_2xx(load.calls)
    served = [k for k in load.calls if k.ok and k.method == "GET" and k.started > seen["kill"]]
    figure = (f"{len(load.calls):,} requests, {failures} "
              f"(target 0); after the kill {len(served):,} reads served, {where}; slowest "
              f"{max(k.took for k in load.calls):.2f} s; lag as the replicas saw it at the end: {shown(at_end)}")
    return figure, not failed and bool(served) and counts["standby"] > 0


@scenario("g", setup="reads",
          what=f"both standbys' replay paused under {CLIENTS} keep-alive connections through HAProxy of creates "
               "(the primary moves on) and gets of tasks every standby has; reads counted for 1 s before the "
               f"pause, then from READ_MAX_LAG ({READ_MAX_LAG:g} s) + {SLACK:g} s after it, for 3 s",
          target="standbys serve reads before the pause; in those 3 s db_reads{target=standby} does not move "
                 "and {target=primary} does; 0 non-2xx over the whole load")
def both_paused(fleet):
    replicas = healed(fleet)
    seen = []

    async def pause():
        async def count(after):
            await asyncio.sleep(after)
            seen.append(await asyncio.to_thread(reads, replicas))

        await count(1)
        await count(1)
        await asyncio.to_thread(fleet.pg.pause, *fleet.pg.standbys)
        await count(0)
        await count(READ_MAX_LAG + SLACK)
        await count(3)
        return await asyncio.to_thread(lags, fleet, replicas)

    load, at_end = under_load(fleet.haproxy.port, pause, mix=creates_and_gets(known_ids(fleet)))
    before, before_where = moved(seen[0], seen[1])
    _, early = moved(seen[2], seen[3])
    after, after_where = moved(seen[3], seen[4])
    failed, failures = non_2xx(load.calls)
    figure = (f"reads in the 1 s before the pause {before_where}; in the {READ_MAX_LAG + SLACK:g} s after it "
              f"{early}; in the 3 s after that {after_where} (target 0 on standbys); lag at the end: "
              f"{shown(at_end)}; {len(load.calls):,} requests, {failures}")
    return figure, before["standby"] > 0 and after["standby"] == 0 and after["primary"] > 0 and not failed


@scenario("h", setup="reads",
          what=f"forged tokens: on each of the {REPLICAS} replicas, one at a time, {ASKED} GET /tasks/{{id}} of a "
               f"task every standby has with its genuine token, then {ASKED} with each forgery of it: another "
               "system id, another timeline, 1 GiB ahead of the primary, garbage",
          target="the genuine ones served by standbys; every forged one 200 with the task, and for each kind "
                 "db_reads{target=primary} up by exactly their number, {target=standby} and db_reads_waited "
                 "not moving, and their median latency under 50 ms (a wait lasts 100 ms)")
def forged_token(fleet):
    replicas = healed(fleet)
    created = asyncio.run(Connection(replicas[0].port).send("POST", "/tasks", {"title": "forged"}))
    task, genuine = created.json()["id"], created.headers.get(TOKEN, "")
    fleet.pg.heal()  # the standbys past the write
    time.sleep(3 * PROBE_EVERY)  # every probe has seen the primary and the standbys past the write
    try:
        system, timeline, lsn = (int(field, 16) for field in genuine.split("-"))
    except ValueError:
        return f"the create answered no token of three hex fields: {genuine or 'none'}", False
    tokens = {"genuine": genuine,
              "another system": f"{system ^ 1:x}-{timeline:x}-{lsn:x}",
              "another timeline": f"{system:x}-{timeline + 1:x}-{lsn:x}",
              "ahead": f"{system:x}-{timeline:x}-{lsn + (1 << 30):x}",
              "garbage": "not a token"}

    async def ask(token):
        calls = []
        for r in replicas:
            conn = Connection(r.port)
            for _ in range(ASKED):
                calls.append(await conn.send("GET", f"/tasks/{task}", headers={TOKEN: token}))
            conn.drop()
        return calls

    asked, ok, slowest = len(replicas) * ASKED, True, 0.0
    figure = [f"genuine token {genuine}"]
    for kind, token in tokens.items():
        before = reads(replicas)
        calls = asyncio.run(ask(token))
        counts, where = moved(before, reads(replicas))
        wrong = [k for k in calls if k.status != 200 or k.json().get("title") != "forged"]
        median = statistics.median(k.took for k in calls)
        figure.append(f"{kind}: {where}, median {median * 1000:.1f} ms"
                      f"{f', {len(wrong)} not 200 with the task' if wrong else ''}")
        if kind == "genuine":
            ok = ok and counts["standby"] == asked and not wrong
        else:
            slowest = max([slowest] + [k.took for k in calls])
            ok = (ok and counts["primary"] == asked and counts["standby"] == 0 and counts["waited"] == 0
                  and median < 0.05 and not wrong)
    figure.append(f"slowest forged one {slowest * 1000:.0f} ms")
    return "; ".join(figure), ok
