"""Fault scenarios in the database's way: a slow one, a locked one, one that freezes
(through proxy.py), one that refuses writes, one restarted and stopped; and reads that
clients abandon by the thousand."""

import asyncio
import socket
import struct
import time
import uuid

from harness.cluster import Cluster
from harness.http import call, request, request_bytes, tally

from .context import (BUDGET, OUR_APPS, PASSWORD, PG_OPTIONS, SLACK, gather, gets_and_creates, holder,
                      holder_pid, release, run_binary, scenario, server_statements)
from .proxy import Proxy


@scenario("slow-db", heavy=True)
def slow_db(ctx):
    """insert trigger sleeping 3 s per statement, 30 concurrent POSTs; update/delete triggers
    sleeping 6 s, a PATCH and a DELETE

    Target: no error answer stored; every 201 stored; errors ≤ 5.5 s; PATCH and DELETE 503, row
    unchanged"""
    c = ctx.cluster
    db = ctx.database()
    server = ctx.server(c.url(db))
    c.psql("CREATE FUNCTION faults_sleep() RETURNS trigger LANGUAGE plpgsql AS "
           "$$ BEGIN PERFORM pg_sleep(TG_ARGV[0]::float8); RETURN NULL; END $$", db)
    c.psql("CREATE TRIGGER slow_insert BEFORE INSERT ON tasks FOR EACH STATEMENT "
           "EXECUTE FUNCTION faults_sleep('3')", db)
    tag = uuid.uuid4().hex[:8]
    titles = [f"slow-{tag}-{i}" for i in range(30)]
    calls = asyncio.run(gather(*(call(server.port, "POST", "/tasks", {"title": t}, timeout=30)
                                 for t in titles)))
    c.wait_until("NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                 "AND state = 'active' AND pid <> pg_backend_pid() "
                 f"AND application_name NOT IN {OUR_APPS})", 20, db)
    stored = set(c.psql(f"SELECT title FROM tasks WHERE title LIKE 'slow-{tag}-%'", db).splitlines())
    errors = [(t, k) for t, k in zip(titles, calls) if k.status != 201]
    stored_errors = sum(t in stored for t, _ in errors)
    lost = sum(k.status == 201 and t not in stored for t, k in zip(titles, calls))
    slow_errors = max((k.took for _, k in errors), default=0)
    slow_201 = max((k.took for k in calls if k.status == 201), default=0)

    c.psql("DROP TRIGGER slow_insert ON tasks", db)
    patch_id, delete_id = c.psql(f"INSERT INTO tasks (title) VALUES ('patch-{tag}'), ('delete-{tag}') "
                                 "RETURNING id", db).split()
    for event in ("UPDATE", "DELETE"):
        c.psql(f"CREATE TRIGGER slow_{event.lower()} BEFORE {event} ON tasks FOR EACH STATEMENT "
               "EXECUTE FUNCTION faults_sleep('6')", db)
    sent = time.monotonic()
    patch, delete = asyncio.run(gather(
        call(server.port, "PATCH", f"/tasks/{patch_id}", {"title": f"patched-{tag}"}, timeout=15),
        call(server.port, "DELETE", f"/tasks/{delete_id}", timeout=15)))
    time.sleep(max(0.0, sent + 8 - time.monotonic()))  # a statement left running would be done by now
    title = c.psql(f"SELECT title FROM tasks WHERE id = {patch_id}", db)
    kept = c.psql(f"SELECT count(*) FROM tasks WHERE id = {delete_id}", db) == "1"
    unchanged = title == f"patch-{tag}"

    figure = (f"POST: {len(errors)} errors {tally([k for _, k in errors])}, {stored_errors} of them "
              f"stored (target 0), {len(calls) - len(errors)} 201s, {lost} not stored; slowest error "
              f"{slow_errors:.1f} s, slowest 201 {slow_201:.1f} s; PATCH {patch.outcome()} in "
              f"{patch.took:.1f} s, row {'unchanged' if unchanged else 'CHANGED'}; DELETE {delete.outcome()} "
              f"in {delete.took:.1f} s, row {'kept' if kept else 'DELETED'}")
    ok = (stored_errors == 0 and lost == 0 and slow_errors <= BUDGET + SLACK
          and patch.status == 503 and patch.took <= BUDGET + SLACK and unchanged
          and delete.status == 503 and delete.took <= BUDGET + SLACK and kept)
    return figure, ok


@scenario("abandoned", heavy=True)
def abandoned(ctx):
    """10 GETs left after 0.5 s while a session locks tasks; then 50 GETs in a row; then a proxy
    to PostgreSQL that freezes (forwards nothing, keeps sockets open) for 8 s

    Target: 0 statements left 6 s after the clients left; 50 × 200 < 200 ms; frozen: 503 ≤ 5.5
    s, /ready 503 ≤ 1.5 s; recovery ≤ 15 s"""
    c = ctx.cluster
    db = ctx.database()
    server = ctx.server(c.url(db))
    c.psql("INSERT INTO tasks (title) SELECT 'abandoned ' || g FROM generate_series(1, 20) g", db)
    held = holder(c, db, "BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE;")
    try:
        holder_pid(c, db, "l.mode = 'AccessExclusiveLock' AND l.relation = 'tasks'::regclass")
        paths = ["/tasks?limit=5", "/tasks/1"] * 5
        waiting_at_leave = asyncio.run(abandon(server.port, paths, lambda: server_statements(c, db)))
        left = time.monotonic()
        cleared, remaining = None, waiting_at_leave
        while time.monotonic() < left + 6:
            remaining = server_statements(c, db)
            if remaining == 0:
                cleared = time.monotonic() - left
                break
            time.sleep(0.25)
    finally:
        release(held)
    in_row = [request(server.port, "GET", "/tasks?limit=5", timeout=5) for _ in range(50)]
    fast = sum(k.status == 200 and k.took < 0.2 for k in in_row)
    frozen = silent_peer(ctx)
    figure = (f"abandoned: {waiting_at_leave} statements waiting when the clients left, "
              + (f"0 after {cleared:.1f} s" if cleared is not None else f"{remaining} still there after 6 s")
              + f"; then {fast}/50 fast 200s (slowest {max(k.took for k in in_row) * 1000:.0f} ms); "
              + frozen["figure"])
    ok = waiting_at_leave > 0 and cleared is not None and fast == 50 and frozen["ok"]
    return figure, ok


async def abandon(port, paths, count_waiting):
    """Sends each GET, waits 0.5 s, hangs up; how many statements the server had waiting then."""
    conns = [await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5) for _ in paths]
    for (_, writer), path in zip(conns, paths):
        writer.write(request_bytes("GET", path))
    await asyncio.gather(*(w.drain() for _, w in conns))
    await asyncio.sleep(0.5)
    waiting = await asyncio.to_thread(count_waiting)
    for _, writer in conns:
        writer.transport.abort()
    return waiting


def silent_peer(ctx, frozen_for=8):
    """Part (d) of abandoned: task-api → Proxy → PostgreSQL, the proxy frozen `frozen_for` s."""
    c = ctx.cluster
    db = ctx.database("_silent")
    proxy = Proxy(c.port)
    try:
        server = ctx.server(c.url(db, port=proxy.port))
        c.psql("INSERT INTO tasks (title) SELECT 'silent ' || g FROM generate_series(1, 5) g", db)
        warm = asyncio.run(gather(*(call(server.port, "GET", f"/tasks/{i % 5 + 1}") for i in range(16))))
        frozen_at = proxy.freeze()
        gets = asyncio.run(gather(
            *(call(server.port, "GET", p, timeout=15) for p in ("/tasks/1", "/tasks?limit=5", "/tasks/2",
                                                               "/tasks?status=pending")),
            call(server.port, "GET", "/ready", timeout=5)))
        ready = gets.pop()
        time.sleep(max(0.0, frozen_at + frozen_for - time.monotonic()))
        held = proxy.reset()
        back = time.monotonic()
        recovered = None
        while time.monotonic() < back + 15:
            if request(server.port, "GET", "/tasks?limit=1", timeout=6).status == 200:
                recovered = time.monotonic() - back
                break
            time.sleep(0.2)
    finally:
        proxy.close()
    dropped = [t for t in held if t is not None]
    kept = len(held) - len(dropped)
    figure = (f"frozen database: warm-up {tally(warm)}, GETs {tally(gets)} (slowest "
              f"{max(k.took for k in gets):.1f} s), /ready {ready.outcome()} in {ready.took:.1f} s; "
              f"the server dropped {len(dropped)} of {len(held)} frozen connections"
              f"{f' (last after {max(dropped):.1f} s)' if dropped else ''}"
              f"{f', held {kept} all {frozen_for} s' if kept else ''}; "
              + (f"recovered {recovered:.2f} s after the proxy was replaced" if recovered is not None
                 else "NOT recovered within 15 s"))
    ok = (all(k.status == 503 and k.took <= BUDGET + SLACK for k in gets)
          and ready.status == 503 and ready.took <= 1.5 and recovered is not None)
    return {"figure": figure, "ok": ok}


@scenario("fallback")
def fallback(ctx):
    """the server's role may not INSERT (42501): 64 concurrent POSTs; then a CHECK refusing
    titles 'refused…': 100 concurrent POSTs, 20 refused

    Target: 64 × 500/503 and 0 'one by one' fallbacks; then 20 × 422 and 80 × 201"""
    c = ctx.cluster
    db = ctx.database()
    code, out, _ = run_binary(ctx, ["migrate"], {"DATABASE_URL": c.url(db)}, timeout=20)
    if code != 0:
        raise RuntimeError(f"migrate as superuser: exit {code}: {out.strip()[-200:]}")
    c.psql("CREATE ROLE app LOGIN PASSWORD 'app-pw'")
    for grant in ("USAGE, CREATE ON SCHEMA public", "SELECT, UPDATE, DELETE ON tasks",
                  "SELECT ON refinery_schema_history"):
        c.psql(f"GRANT {grant} TO app", db)
    server = ctx.server(c.url(db, user="app", password="app-pw"))
    denied = asyncio.run(gather(*(call(server.port, "POST", "/tasks", {"title": f"denied {i}"})
                                  for i in range(64))))
    fallbacks = server.output().count("one by one")
    c.psql("GRANT INSERT ON tasks TO app", db)
    c.psql("ALTER TABLE tasks DROP CONSTRAINT tasks_title_check, ADD CONSTRAINT tasks_title_check CHECK "
           "(char_length(title) BETWEEN 1 AND 200 AND title ~ '[^[:space:]]' "
           "AND title NOT LIKE 'refused%')", db)
    titles = [f"refused {i}" if i % 5 == 0 else f"fine {i}" for i in range(100)]
    mixed = asyncio.run(gather(*(call(server.port, "POST", "/tasks", {"title": t}) for t in titles)))
    refused = [k for t, k in zip(titles, mixed) if t.startswith("refused")]
    fine = [k for t, k in zip(titles, mixed) if not t.startswith("refused")]
    figure = (f"no INSERT right: 64 POSTs → {tally(denied)}, {fallbacks} 'one by one' fallbacks "
              "(target 0); "
              f"CHECK: refused → {tally(refused)}, others → {tally(fine)}")
    ok = (all(k.status in (500, 503) for k in denied) and fallbacks == 0
          and all(k.status == 422 for k in refused) and all(k.status == 201 for k in fine))
    return figure, ok


# Requests whose path, request id or method a naive logger would write raw.

@scenario("outage", heavy=True)
def outage(ctx):
    """16 clients GET and POST in a loop; PostgreSQL restarted (fast), later stopped for 6 s

    Target: only 2xx and 503; none slower than 5.5 s; first success < 1 s after the database is
    back"""
    cluster = Cluster(ctx.work, "pg-outage", PASSWORD, PG_OPTIONS, app="faults", tag="faults")
    try:
        cluster.start()
        db = "outage"
        url = cluster.createdb(db)
        server = ctx.server(url)
        cluster.psql("INSERT INTO tasks (title) SELECT 'outage ' || g FROM generate_series(1, 100) g", db)
        r = asyncio.run(outage_load(server.port, cluster))
    finally:
        cluster.stop()
    calls = r["calls"]
    stops = r["stops"]  # [(stop began, stop done, back)]

    def mid_write(k):  # a POST in flight while PostgreSQL went away: its outcome is truly unknown
        return k.status is None and k.method == "POST" and any(
            k.started <= done and k.end >= began for began, done, _ in stops)

    def answered_right(k):
        return k.status is not None and (200 <= k.status < 300 or k.status == 503)

    bad = [k for k in calls if not answered_right(k) and not mid_write(k)]
    unknown = sum(mid_write(k) for k in calls)
    slow = [k for k in calls if k.took > BUDGET + SLACK]
    firsts = []
    for began, _, back in stops:
        after = [k.end - back for k in calls if k.status and 200 <= k.status < 300 and k.started >= began
                 and k.end >= back]
        firsts.append(min(after) if after else None)

    def first(t):
        return f"{t * 1000:.0f} ms" if t is not None else "none"

    ok2xx = sum(bool(k.status and 200 <= k.status < 300) for k in calls)
    figure = (f"{len(calls)} requests: {ok2xx} 2xx, {sum(k.status == 503 for k in calls)} 503, "
              f"{len(bad)} other{f' {tally(bad)}' if bad else ''}, {unknown} closed mid-write; "
              f"slowest {max(k.took for k in calls):.1f} s; first success after the restart "
              f"{first(firsts[0])}, after the 6 s outage {first(firsts[1])}")
    ok = not bad and not slow and all(t is not None and t < 1 for t in firsts)
    return figure, ok


async def outage_load(port, cluster, clients=16):
    calls, stops = [], []
    stop = asyncio.Event()
    client = gets_and_creates(port, stop, calls, lambda i, n: f"/tasks/{(i * 7 + n) % 100 + 1}", "outage", 10,
                              lambda k: k.status != 200 and k.status != 201)

    async def faults():
        await asyncio.sleep(1.5)
        for down in (0, 6):
            began = time.monotonic()
            await asyncio.to_thread(cluster.stop)
            done = time.monotonic()
            await asyncio.sleep(down)
            await asyncio.to_thread(cluster.start)
            stops.append((began, done, time.monotonic()))
            await asyncio.sleep(3)
        stop.set()

    await asyncio.gather(faults(), *(client(i) for i in range(clients)))
    return {"calls": calls, "stops": stops}


@scenario("list-resets", heavy=True)
def list_resets(ctx, clients=16, seconds=10, pool=8):
    """1,000 tasks with 5,000-character descriptions; for 10 s, 16 clients in a loop send GET
    /tasks?limit=1000 and reset the connection (SO_LINGER 0) right after sending, or once the
    first bytes of the answer arrive

    Target: task-api opens ≤ DATABASE_POOL_SIZE (8) new PostgreSQL sessions in those 10 s; GET
    /tasks?limit=1000 then answers 200 with 1,000 tasks"""
    c = ctx.cluster
    db = ctx.database()
    server = ctx.server(c.url(db))
    c.psql("INSERT INTO tasks (title, description) "
           "SELECT 'reset ' || g, repeat('d', 5000) FROM generate_series(1, 1000) g", db)
    log = c.dir / "server.log"  # log_connections is on: one line per session opened
    mark = log.stat().st_size
    resets = asyncio.run(reset_lists(server.port, clients, seconds))
    time.sleep(1)  # what the last resets set going
    with open(log, "rb") as f:
        f.seek(mark)
        opened = f.read().decode(errors="replace").count(
            f"connection authorized: user=postgres database={db} application_name=task-api")
    after = request(server.port, "GET", "/tasks?limit=1000", timeout=15)
    items = len(after.json()) if after.status == 200 else 0
    figure = (f"{resets['sent']} lists reset ({resets['early']} right after sending, {resets['late']} after "
              f"the first bytes); task-api opened {opened} PostgreSQL sessions (target ≤ {pool}); then "
              f"GET /tasks?limit=1000 → {after.outcome()}, {items} tasks in {after.took * 1000:.0f} ms")
    return figure, opened <= pool and after.status == 200 and items == 1000


async def reset_lists(port, clients, seconds):
    """`clients` loops of GET /tasks?limit=1000, each connection reset (SO_LINGER 0, close)
    right after the request is sent, or, every other time, once the answer starts."""
    loop = asyncio.get_running_loop()
    until = time.monotonic() + seconds
    counts = {"sent": 0, "early": 0, "late": 0}
    raw = request_bytes("GET", "/tasks?limit=1000")

    async def client(i):
        n = i
        while time.monotonic() < until:
            n += 1
            s = socket.socket()
            s.setblocking(False)
            try:
                await loop.sock_connect(s, ("127.0.0.1", port))
                await loop.sock_sendall(s, raw)
                counts["sent"] += 1
                if n % 2:
                    await asyncio.wait_for(loop.sock_recv(s, 1), 5)
                    counts["late"] += 1
                else:
                    counts["early"] += 1
            except (OSError, TimeoutError):
                await asyncio.sleep(0.05)
            finally:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return counts
