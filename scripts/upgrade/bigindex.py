"""The big-index path (docs/upgrading.md, rule 5; src/pg/indexes.rs) on a table of a million
rows under write load: this build serves a steady stream of writes, creates and patches, while
the expand variant starts on the same database, applies its expand migration and builds its
index of sql/indexes/ (CREATE INDEX CONCURRENTLY) in the background. Every write is timed."""

import asyncio
import subprocess
import time

from harness.http import Connection, tally
from harness.server import Server

from .builds import TEST_INDEX
from .context import scenario

ROWS = 1_000_000
WRITERS = 8
RATE = 200  # writes a second, all writers together
CALM = 2.0  # seconds of writes before the variant starts, and after its index is valid
WAIT_LIMIT = 1.0  # the longest a write may wait (seconds)


async def writes(port, stop):
    """WRITERS keep-alive connections writing at RATE together until `stop`: each a create, then
    a patch of the task it created, in turn. Every call."""
    calls = []
    period = WRITERS / RATE

    async def writer(i):
        conn = Connection(port)
        mine, n, due = None, 0, time.monotonic()
        while not stop.is_set():
            n += 1
            if mine is None or n % 2:
                k = await conn.send("POST", "/tasks", {"title": f"write {i}-{n}"}, timeout=10)
                mine = k.json()["id"] if k.status == 201 else mine
            else:
                k = await conn.send("PATCH", f"/tasks/{mine}", {"description": f"patch {i}-{n}"}, timeout=10)
            calls.append(k)
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        conn.drop()

    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    return calls


@scenario("index", what=f"{ROWS:,} tasks (generate_series); this build serving {RATE} writes/s (creates and "
                        f"patches, {WRITERS} connections) while the expand variant starts on the same database: "
                        f"applies its expand (ADD COLUMN) and builds sql/indexes' {TEST_INDEX} (CREATE INDEX "
                        "CONCURRENTLY) in the background",
          target=f"every write answered 2xx, none waiting more than {WAIT_LIMIT:g} s; the index valid "
                 "(pg_index.indisvalid)")
def big_index(ctx):
    cluster, variant, db = ctx.cluster(), ctx.builds.variants["expand"], "big_index"
    url = cluster.createdb(db)
    subprocess.run([ctx.builds.new, "migrate"], env={"DATABASE_URL": url}, check=True, capture_output=True,
                   timeout=120)
    filled = time.monotonic()
    cluster.psql(f"INSERT INTO tasks (title, description) SELECT 'bulk task ' || g, repeat('x', 40) "
                 f"FROM generate_series(1, {ROWS}) g; VACUUM ANALYZE tasks;", db, timeout=600)
    filled = time.monotonic() - filled
    server = Server(ctx.builds.new, ctx.work / "index-this-build.log", url)
    ctx.logs.append(server.log_path)
    server.wait("/ready", 30)
    valid = f"coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{TEST_INDEX}')), false)"
    times = {}

    async def run():
        stop = asyncio.Event()
        load = asyncio.create_task(writes(server.port, stop))
        await asyncio.sleep(CALM)
        times["start"] = time.monotonic()
        newer = Server(variant.binary, ctx.work / "index-variant.log", url)
        ctx.logs.append(newer.log_path)
        try:
            times["ready"] = await asyncio.to_thread(newer.wait, "/ready", 60)
            made = await asyncio.to_thread(cluster.wait_until, valid, 300, db)
            times["valid"] = time.monotonic() if made else None
            await asyncio.sleep(CALM)
        finally:
            stop.set()
        return await load, newer

    calls, newer = asyncio.run(run())
    start, ready, made = times["start"], times["ready"], times["valid"]
    slowest = max(calls, key=lambda k: k.took)
    failed = [k for k in calls if not k.ok]
    during = sum(k.started >= ready and (made is None or k.end <= made) for k in calls)
    p99 = sorted(k.took for k in calls)[int(len(calls) * 0.99)]
    built = f"built index {TEST_INDEX}" in newer.output()
    codes = [newer.process.stop(), server.process.stop()]
    kinds = tally(calls, lambda k: k.method)
    figure = (f"{ROWS:,} rows in {filled:.0f} s; {len(calls)} writes ({kinds.get('POST', 0)} creates, "
              f"{kinds.get('PATCH', 0)} patches), {len(failed)} failed{f' {tally(failed)}' if failed else ''}; "
              f"the variant ready {ready - start:.1f} s after its start, the index valid "
              f"{f'{made - start:.1f} s after it' if made else 'NEVER'} ({during} writes meanwhile); "
              f"longest write wait {slowest.took * 1000:.0f} ms ({slowest.started - start:+.1f} s from the "
              f"variant's start), p99 {p99 * 1000:.0f} ms (target ≤ {WAIT_LIMIT * 1000:.0f} ms); "
              f"'built index' logged: {'yes' if built else 'NO'}; exit {', '.join(map(str, codes))}")
    ok = not failed and slowest.took <= WAIT_LIMIT and made is not None and built and codes == [0, 0]
    return figure, ok
