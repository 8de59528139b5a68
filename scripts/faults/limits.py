"""Fault scenarios on the server's own bounds: memory under clients that read slowly or
never, uploads that stall, and a low descriptor limit."""

import asyncio
import collections
import resource
import socket
import time

from harness.http import call, metric, request_bytes, read_response
from harness.net import held_peers

from .context import health_failures, probe_health, scenario


@scenario("memory", heavy=True)
def memory(ctx):
    """1,000 rows of control characters (31 MB as JSON); 100 clients GET /tasks?limit=1000, 50
    read 1 KB/s, 50 never read, for 15 s

    Target: peak RSS ≤ 64 MiB; every non-reader let go ≤ 15 s; a normal client gets all 1,000;
    /health always"""
    db = ctx.database()
    server = ctx.server(ctx.cluster.url(db))
    ctx.cluster.psql("INSERT INTO tasks (title, description) "
                     "SELECT repeat(chr(1), 200), repeat(chr(1), 5000) FROM generate_series(1, 1000)", db)
    idle_mib = server.proc.kib("VmRSS") / 1024
    r = asyncio.run(memory_attack(server.port))
    peak = server.proc.kib("VmHWM") / 1024
    cut = r["cut"]
    slowest = max(cut.values(), default=0)
    figure = (f"peak RSS {peak:.1f} MiB (idle {idle_mib:.1f}); non-readers let go {len(cut)}/50"
              f"{f' (slowest {slowest:.1f} s)' if cut else ''}; slow readers got {r['readers']}; "
              f"normal client: {r['normal']}; "
              f"/health {health_failures(r['health'])} failures of {len(r['health'])}")
    ok = (peak <= 64 and len(cut) == 50 and slowest <= 15 and r["normal"] == "1000 items"
          and health_failures(r["health"]) == 0)
    return figure, ok


async def memory_attack(port, clients=100, seconds=15):
    socks = [socket.socket() for _ in range(clients)]
    try:
        return await attack(port, socks, seconds)
    finally:
        for s in socks:
            s.close()


async def attack(port, socks, seconds):
    """Half of `socks` read 1 KB/s, half never read, for `seconds`; a normal client and /health
    probes meanwhile."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with asyncio.timeout(10):
        for s in socks:
            # A small receive buffer, no autotuning: the server's writes block soon.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", port))
            await loop.sock_sendall(s, request_bytes("GET", "/tasks?limit=1000"))
    sent = time.monotonic()
    readers, idle = socks[: len(socks) // 2], socks[len(socks) // 2:]

    async def trickle(s):  # 1 KB/s until the server closes; the status it answered
        status = "no answer"
        while not stop.is_set():
            await asyncio.sleep(1)
            try:
                data = s.recv(1024)
            except BlockingIOError:
                continue
            except OSError:
                break
            if status == "no answer" and data.startswith(b"HTTP/"):
                status = data.split()[1].decode()
            if not data:
                break
        return status

    async def watch_cuts():  # when the server let go of each non-reader (absent twice in a row)
        cut, absent, ports = {}, {}, {s.getsockname()[1] for s in idle}
        while not stop.is_set():
            held = held_peers(port)
            for client in ports - cut.keys():
                if client in held:
                    absent.pop(client, None)
                elif client in absent:
                    cut[client] = absent[client] - sent
                else:
                    absent[client] = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        return cut

    async def normal():
        await asyncio.sleep(2)
        c = await call(port, "GET", "/tasks?limit=1000", timeout=60)
        if c.status != 200:
            return f"got {c.outcome()}"
        items = c.json()
        good = sum(t["title"] == "\x01" * 200 and t["description"] == "\x01" * 5000 for t in items)
        return f"{good} items" if good == len(items) else f"{len(items)} items, {len(items) - good} wrong"

    async def end():
        await asyncio.sleep(seconds)
        stop.set()

    tasks = [asyncio.create_task(trickle(s)) for s in readers]
    cut, health, normal_result, _ = await asyncio.gather(
        watch_cuts(), probe_health(port, stop), normal(), end())
    answers = collections.Counter(await asyncio.gather(*tasks))
    return {"cut": cut, "health": health, "normal": normal_result, "readers": dict(answers)}



@scenario("stalled", heavy=True)
def stalled(ctx, clients=2000, limit=15):
    """2,000 connections send POST headers (content-length 65536) and 1 byte of body, then stall

    Target: all closed ≤ 15 s; fds back to baseline; /health always; body_timeout counted"""
    server = ctx.server(ctx.cluster.url(ctx.database()))
    before_metrics = server.metrics()
    baseline = server.proc.fds()
    r = asyncio.run(stall(server.port, server.proc, clients, limit))
    deadline = time.monotonic() + 5
    while server.proc.fds() > baseline + 16 and time.monotonic() < deadline:
        time.sleep(0.2)
    after = server.proc.fds()
    moved = (metric(server.metrics(), "task_api_http_connections_closed_total", reason="body_timeout")
             - metric(before_metrics, "task_api_http_connections_closed_total", reason="body_timeout"))
    closed = [t for t in r["closed"] if t is not None and t <= limit]
    fails = health_failures(r["health"])
    figure = (f"closed {len(closed)}/{clients} within {limit} s"
              f"{f' (slowest {max(closed):.1f} s)' if closed else ''}; {r['refused']} not even connected; "
              f"server fds {baseline} → peak {r['peak']} → {after}; /health {fails} failures of "
              f"{len(r['health'])}; body_timeout +{moved:.0f}")
    ok = len(closed) == clients and after <= baseline + 16 and fails == 0 and moved > 0
    return figure, ok


async def stall(port, proc, clients, limit):
    head = (b"POST /tasks HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 65536\r\n\r\n{")
    stop = asyncio.Event()
    peak = [proc.fds()]

    async def open_one():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(head)
            await writer.drain()
            return reader, writer, time.monotonic()
        except (OSError, TimeoutError):
            return None

    async def watch(reader, opened, until):  # seconds until the server closed, or None
        try:
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                while await reader.read(4096):
                    pass
        except TimeoutError:
            return None
        except OSError:
            pass
        return time.monotonic() - opened

    async def sample_fds():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.fds())
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass

    sampler = asyncio.create_task(sample_fds())
    health = asyncio.create_task(probe_health(port, stop))
    conns = []
    for start in range(0, clients, 200):
        conns += await asyncio.gather(*(open_one() for _ in range(start, min(clients, start + 200))))
    opened = [c for c in conns if c]
    until = max((c[2] for c in opened), default=time.monotonic()) + limit
    closed = await asyncio.gather(*(watch(r, t, t + limit) for r, _, t in opened))
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    stop.set()
    health_calls = await health
    await sampler
    for _, writer, _ in opened:
        writer.close()
    return {"closed": closed, "refused": clients - len(opened), "peak": peak[0], "health": health_calls}


@scenario("fd-limit", heavy=True)
def fd_limit(ctx, clients=1000):
    """server started with soft nofile 256 (hard unchanged); 1,000 idle connections, then GET
    /health on each

    Target: 1,000 of 1,000 answered"""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    server = ctx.server(ctx.cluster.url(ctx.database()),
                        prefix=("prlimit", f"--nofile=256:{hard_text}", "--"))
    soft = server.proc.nofile_soft()
    answered, connected = asyncio.run(idle_then_health(server.port, clients))
    figure = (f"{answered}/{clients} answered ({connected} connected); the server's soft nofile "
              f"is {soft} (started at 256)")
    return figure, answered == clients


async def idle_then_health(port, clients):
    async def open_one():
        try:
            return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            return None

    async def ask(reader, writer):
        try:
            writer.write(request_bytes("GET", "/health"))
            await writer.drain()
            status, _, _ = await asyncio.wait_for(read_response(reader), 10)
            return status == 200
        except (OSError, TimeoutError, EOFError, ValueError):
            return False
        finally:
            writer.close()

    conns = []
    for start in range(0, clients, 250):
        conns += await asyncio.gather(*(open_one() for _ in range(start, min(clients, start + 250))))
    opened = [c for c in conns if c]
    await asyncio.sleep(1)
    answers = await asyncio.gather(*(ask(r, w) for r, w in opened))
    return sum(answers), len(opened)


