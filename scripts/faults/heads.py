"""Fault scenarios of large request heads (spec §2: 431 over 16 KiB, at most 16 entity
tags): floods of If-Match tags, heads that never end, and long paths and user agents
while every request is traced to a collector that never answers."""

import asyncio
import os
import random
import resource
import socket
import threading
import time

from harness.http import call, metric, refused_early, request_bytes, tally
from harness.net import Silent

from .context import health_failures, probe_health, scenario

HEAD_LIMIT = 16 * 1024  # bytes of a request head the server takes (spec §2)


def detailed(c):
    """Whether an answer's body is JSON with a `detail`, as every error's must be."""
    try:
        return isinstance(c.json().get("detail"), str)
    except (ValueError, AttributeError):
        return False


def ms_at(values, q):
    """The q-th percentile of `values` (seconds) in milliseconds; 0 for none."""
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))] * 1000 if values else 0.0


@scenario("if-match-flood", heavy=True)
def if_match_flood(ctx, clients=64, seconds=5):
    """for 5 s, 64 clients PATCH or DELETE (half each) a task with an If-Match of 10,000 entity
    tags (40 KB), 64 more with 1,000 distinct short tags (6 KB), each a request after the other;
    one other client PATCHes a task of its own meanwhile

    Target: every flood request answered 431 (10,000 tags) or 400 (1,000) with a JSON detail
    within 100 ms, no row changed; the other client's PATCH p99 < 50 ms, 0 errors"""
    db = ctx.database()
    server = ctx.server(ctx.cluster.url(db))
    ctx.cluster.psql("INSERT INTO tasks (title) SELECT 'flood ' || g "
                     f"FROM generate_series(1, {2 * clients + 1}) g", db)
    # 10,000 tags (40 KB): over the head limit. 1,000 distinct ones (6 KB): under it, over 16 tags.
    floods = {431: ",".join(['"7"'] * 10_000), 400: ",".join(f'"{i:x}"' for i in range(1000))}

    def flood_request(i, tags):
        if i % 2:
            return request_bytes("DELETE", f"/tasks/{i + 1}", headers={"if-match": tags})
        return request_bytes("PATCH", f"/tasks/{i + 1}", {"status": "completed"}, {"if-match": tags})

    stop = threading.Event()
    bystander = []

    def patch_own():  # in a thread of its own: the flood's client work does not delay it
        async def loop():
            n = 0
            while not stop.is_set():
                n += 1
                bystander.append(await call(server.port, "PATCH", f"/tasks/{2 * clients + 1}",
                                            {"title": f"bystander {n}"}, timeout=10))
        asyncio.run(loop())

    async def flood():
        until = time.monotonic() + seconds

        async def client(i, expected):
            raw, calls, jitter = flood_request(i, floods[expected]), [], random.Random(i)
            while time.monotonic() < until:
                # Out of step: in one wave, the last of 128 would wait on this event loop for
                # the 127 others, and time the clients instead of the server.
                await asyncio.sleep(jitter.uniform(0, 0.1))
                calls.append((expected, await refused_early(server.port, raw, timeout=10)))
            return calls

        groups = await asyncio.gather(*(client(i, 431 if i < clients else 400) for i in range(2 * clients)))
        return [k for calls in groups for k in calls]

    thread = threading.Thread(target=patch_own, daemon=True)
    thread.start()
    time.sleep(0.2)
    try:
        calls = asyncio.run(flood())
    finally:
        stop.set()
        thread.join(15)
    changed = int(ctx.cluster.psql(f"SELECT count(*) FROM tasks WHERE id <= {2 * clients} "
                                   "AND (status <> 'pending' OR updated_at <> created_at)", db))
    left = int(ctx.cluster.psql(f"SELECT count(*) FROM tasks WHERE id <= {2 * clients}", db))
    wrong = [k for expected, k in calls if k.status != expected or not detailed(k)]
    slow = [k for _, k in calls if k.took > 0.1]
    took = [k.took for _, k in calls]
    own = [k.took for k in bystander]
    own_errors = [k for k in bystander if k.status != 200]
    figure = (f"{len(calls)} flood requests: 10,000 tags → {tally(k for e, k in calls if e == 431)}, "
              f"1,000 tags → {tally(k for e, k in calls if e == 400)}; {len(wrong)} without their 4xx and "
              f"JSON detail, {len(slow)} over 100 ms (p99 {ms_at(took, 99):.0f} ms, slowest "
              f"{ms_at(took, 100):.0f} ms); rows changed {changed}, deleted {2 * clients - left}; the other "
              f"client: {len(bystander)} PATCHes, p50 {ms_at(own, 50):.1f} ms, p99 {ms_at(own, 99):.1f} ms, "
              f"{len(own_errors)} errors"
              f"{f' {tally(own_errors)}' if own_errors else ''}")
    ok = (bool(calls) and not wrong and not slow and changed == 0 and left == 2 * clients and bool(bystander)
          and ms_at(own, 99) < 50 and not own_errors)
    return figure, ok


def head_flood_server(ctx, suffix):
    """A server with descriptors for thousands of connections (prlimit, as fd-limit does)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limit = max(8192, hard) if os.geteuid() == 0 else hard
    limit = "unlimited" if limit == resource.RLIM_INFINITY else str(limit)
    return ctx.server(ctx.cluster.url(ctx.database(suffix)), prefix=("prlimit", f"--nofile={limit}:{limit}", "--"))


@scenario("head-flood", heavy=True)
def head_flood(ctx, clients=3000, chunk=6000, chunks=10):
    """3,000 connections, opened over 5 s, each send a request head that never ends (no blank
    line): 6,000 bytes every 0.5 s up to 60 KB; apart, on a new server, 3,000 that send 15 KB of
    a head and wait

    Target: peak RSS ≤ 64 MiB; each flooding connection answered 431 and closed before its head
    ended; /health always (the 15 KB heads: peak RSS for information)"""
    server = head_flood_server(ctx, "")
    idle = server.proc.kib("VmRSS") / 1024
    before = server.metrics()
    head = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: "
    head += b"a" * (chunk * chunks - len(head))
    r = asyncio.run(flood_heads(server.port, clients, head, chunk))
    peak = server.proc.kib("VmHWM") / 1024
    cut = (metric(server.metrics(), "task_api_http_connections_closed_total", reason="head_too_large")
           - metric(before, "task_api_http_connections_closed_total", reason="head_too_large"))
    server.process.stop()

    held = head_flood_server(ctx, "_held")
    held_idle = held.proc.kib("VmRSS") / 1024
    h = asyncio.run(flood_heads(held.port, clients, head[:15_000], 15_000, hold=2))
    held_peak = held.proc.kib("VmHWM") / 1024
    answered = sum(status == 431 for status, _ in r["ends"])
    early = sum(sent < len(head) for _, sent in r["ends"])
    where = sorted(sent for _, sent in r["ends"])
    figure = (f"peak RSS {peak:.1f} MiB (idle {idle:.1f}); {r['opened']}/{clients} connected, {answered} "
              f"answered 431, {early} closed before their head's end (after {where[0] if where else 0:,}–"
              f"{where[-1] if where else 0:,} bytes sent), head_too_large +{cut:.0f}; /health "
              f"{health_failures(r['health'])} failures of {len(r['health'])}; 15 KB heads held: "
              f"{h['opened']} connected, {h['open']} still open at the end, peak RSS {held_peak:.1f} MiB "
              f"(idle {held_idle:.1f}), /health {health_failures(h['health'])} failures")
    ok = (peak <= 64 and r["opened"] == clients and answered == clients and early == clients
          and health_failures(r["health"]) == 0)
    return figure, ok


async def flood_heads(port, clients, head, chunk, ramp=5.0, every=0.5, hold=0.0):
    """Opens `clients` connections at an even pace over `ramp` s; each sends `head`, `chunk`
    bytes every `every` s (all would be open at once if the server kept them), and reads
    what the server answers. Then waits `hold` s more. The ends: (status or None, bytes sent
    when the server was found to have answered or closed, or in all)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    health = asyncio.create_task(probe_health(port, stop))
    conns, refused = [], 0  # [socket, bytes sent, answer, bytes sent when it ended, next send]
    started = time.monotonic()
    try:
        while len(conns) + refused < clients or any(
                c[3] is None and c[1] < len(head) for c in conns):
            now = time.monotonic()
            due = min(clients, int((now - started) / ramp * clients) + 1) - len(conns) - refused
            batch = [socket.socket() for _ in range(due)]
            for s in batch:
                s.setblocking(False)
            errors = await asyncio.gather(*(loop.sock_connect(s, ("127.0.0.1", port)) for s in batch),
                                          return_exceptions=True)
            for s, error in zip(batch, errors):
                if error is None:
                    conns.append([s, 0, b"", None, now])
                else:
                    refused += 1
                    s.close()
            for c in conns:
                if c[3] is None and c[1] < len(head) and now >= c[4]:
                    take(c)
                    if c[3] is None:
                        try:
                            c[1] += c[0].send(head[c[1]:c[1] + chunk])
                        except BlockingIOError:
                            pass
                        except OSError:
                            c[3] = c[1]
                        c[4] += every
            await asyncio.sleep(0.05)
        await asyncio.sleep(every + hold)  # the answers to the last chunks
        for c in conns:
            take(c)
        still = sum(c[3] is None for c in conns)
        ends = [(int(c[2].split()[1]) if c[2].startswith(b"HTTP/1.1 ") else None,
                 c[1] if c[3] is None else c[3]) for c in conns]
    finally:
        stop.set()
        calls = await health
        for c in conns:
            c[0].close()
    return {"ends": ends, "opened": len(conns), "open": still, "health": calls}


def take(c):
    """Reads what the server sent on connection `c` of flood_heads, if anything; notes the end."""
    if c[3] is not None:
        return
    try:
        while data := c[0].recv(65536):
            c[2] += data
        c[3] = c[1]  # end of file: the server closed
    except BlockingIOError:
        if c[2]:
            c[3] = c[1]
    except OSError:
        c[3] = c[1]


@scenario("trace-memory", heavy=True)
def trace_memory(ctx, clients=64, seconds=15):
    """tracing on, to a collector that accepts and never answers; for 15 s, 64 connections send
    requests with 7,000-character paths and user agents, one connection in 4 with 30 KB paths
    instead; at the default TRACES_MAX_PER_SECOND (100), then at 100,000

    Target: peak RSS ≤ 64 MiB at both; every request answered (404; 431 for the 30 KB paths);
    spans dropped, not kept: past the cap (rate_limited) at the default, for a full queue
    (queue_full > 0) at 100,000 a second"""
    collector = Silent()
    runs = []
    try:
        for cap in (None, 100_000):
            # SHUTDOWN_TIMEOUT: the spans left are not waited for long, at the end.
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}", "SHUTDOWN_TIMEOUT": "1"}
            if cap:
                env["TRACES_MAX_PER_SECOND"] = str(cap)
            server = ctx.server(ctx.cluster.url(ctx.database(f"_{len(runs)}")), env=env)
            idle = server.proc.kib("VmRSS") / 1024
            calls = asyncio.run(long_heads(server.port, clients, seconds))
            text = server.metrics()
            dropped = {reason: metric(text, "task_api_trace_spans_dropped_total", reason=reason)
                       for reason in ("queue_full", "rate_limited", "export_failed")}
            runs.append((cap, idle, server.proc.kib("VmHWM") / 1024, calls, dropped))
            server.process.stop()
    finally:
        collector.close()
    parts, ok = [], True
    for cap, idle, peak, calls, dropped in runs:
        wrong = [k for expected, k in calls if k.status != expected]
        long_paths = [k for expected, k in calls if expected == 431]
        parts.append(f"{'default cap' if cap is None else f'{cap:,}/s'}: peak RSS {peak:.1f} MiB "
                     f"(idle {idle:.1f}); "
                     f"{len(calls) - len(long_paths)} requests → {tally(k for e, k in calls if e == 404)}, "
                     f"30 KB paths {tally(long_paths)}, {len(wrong)} otherwise; spans dropped: "
                     + ", ".join(f"{reason} {n:.0f}" for reason, n in dropped.items()))
        shed = dropped["queue_full"] if cap else dropped["queue_full"] + dropped["rate_limited"]
        ok = ok and peak <= 64 and bool(calls) and not wrong and shed > 0
    return "; ".join(parts), ok


async def long_heads(port, clients, seconds):
    """`clients` connections, each a request after the other for `seconds`: a 7,000-character
    path and user agent (a 14 KB head), or, on one connection in 4, a 30 KB path; the
    calls, each with the status it should get."""
    agent = "a" * 7000
    fits = request_bytes("GET", "/" + "p" * 6999, headers={"user-agent": agent})
    too_long = request_bytes("GET", "/" + "q" * 29_999, headers={"user-agent": agent})
    assert len(fits) < HEAD_LIMIT < len(too_long)
    until = time.monotonic() + seconds

    async def client(i):
        expected, raw = (431, too_long) if i % 4 == 3 else (404, fits)
        calls = []
        while time.monotonic() < until:
            calls.append((expected, await refused_early(port, raw, timeout=10)))
        return calls

    return [k for calls in await asyncio.gather(*(client(i) for i in range(clients))) for k in calls]
