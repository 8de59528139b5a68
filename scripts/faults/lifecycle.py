"""Fault scenarios of the process's life: SIGKILL while clients create, SIGTERM under load."""

import asyncio
import signal
import time

from harness.http import call, tally

from .context import gets_and_creates, scenario


@scenario("kill9", heavy=True)
def kill9(ctx):
    """32 clients create tasks for 4 s; SIGKILL the server at 2 s; restart it

    Target: every acknowledged create stored: 0 missing"""
    c = ctx.cluster
    db = ctx.database()
    url = c.url(db)
    server = ctx.server(url)
    acked, failed = asyncio.run(create_and_kill(server))
    started = time.monotonic()
    ctx.server(url)
    restart = time.monotonic() - started
    rows = dict(line.split("|", 1) for line in c.psql("SELECT id, title FROM tasks", db).splitlines())
    missing = sum(rows.get(str(task_id)) != title for task_id, title in acked)
    figure = (f"acknowledged {len(acked)}, missing {missing} (target 0); {failed} requests without a 201; "
              f"restarted in {restart:.2f} s")
    return figure, missing == 0 and len(acked) > 0


async def create_and_kill(server, clients=32, seconds=4, kill_at=2):
    acked, failed = [], 0
    until = time.monotonic() + seconds

    async def client(i):
        nonlocal failed
        n = 0
        while time.monotonic() < until:
            title = f"k9-{i}-{n}"
            n += 1
            k = await call(server.port, "POST", "/tasks", {"title": title}, timeout=3)
            if k.status == 201:
                acked.append((k.json()["id"], title))
            else:
                failed += 1
                await asyncio.sleep(0.05)

    async def killer():
        await asyncio.sleep(kill_at)
        server.process.popen.kill()

    await asyncio.gather(killer(), *(client(i) for i in range(clients)))
    server.process.popen.wait()
    return acked, failed


@scenario("sigterm", heavy=True)
def sigterm(ctx):
    """32 clients GET and POST in a loop; SIGTERM the server after 2 s

    Target: 0 failures among requests sent ≥ 100 ms before the signal; exit 0 within 10 s"""
    server = ctx.server(ctx.cluster.url(ctx.database()))
    calls, signalled, exited = asyncio.run(term_load(server))
    code = server.process.popen.returncode
    before = [k for k in calls if k.sent is not None and k.sent <= signalled - 0.1]
    failed = [k for k in before if not (k.status and 200 <= k.status < 300)]
    late = [k for k in calls if k.sent is not None and k.sent > signalled - 0.1]
    took = f"{exited - signalled:.2f} s" if exited else "more than 12 s"
    figure = (f"{len(before)} requests sent ≥ 100 ms before SIGTERM, {len(failed)} failed"
              f"{f' {tally(failed)}' if failed else ''} (target 0); {len(late)} sent later; "
              f"exit {code} after {took}")
    return figure, not failed and code == 0 and exited is not None and exited - signalled <= 10


async def term_load(server, clients=32):
    calls = []
    stop = asyncio.Event()
    client = gets_and_creates(server.port, stop, calls, lambda i, n: "/tasks?limit=10", "sigterm", 12,
                              lambda k: k.status is None)

    async def terminate():
        await asyncio.sleep(2)
        signalled = time.monotonic()
        server.process.popen.send_signal(signal.SIGTERM)
        exited = None
        while time.monotonic() < signalled + 12:
            if server.process.popen.poll() is not None:
                exited = time.monotonic()
                break
            await asyncio.sleep(0.02)
        stop.set()
        return signalled, exited

    (signalled, exited), *_ = await asyncio.gather(terminate(), *(client(i) for i in range(clients)))
    return calls, signalled, exited


