"""The load the fleet scenarios run under, through HAProxy: keep-alive clients creating (with
an Idempotency-Key) and reading tasks; create-then-read pairs across replicas; and what the
scenarios ask of the calls afterwards (outcomes, stale reads, creates missing or stored)."""

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field

from harness.http import Connection, tally

from .topology import DATABASE

CLIENTS = 64


def span(values, unit=" s"):
    """`1.2–1.5 s` (or `1.2 s`) for a list of seconds; `none` when empty."""
    if not values:
        return "none"
    lo, hi = min(values), max(values)
    return f"{lo:.1f}{unit}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f}{unit}"


@dataclass
class Load:
    calls: list = field(default_factory=list)
    acked: list = field(default_factory=list)  # (id, title) of each 201
    patched: dict = field(default_factory=dict)  # {id: the value of the last PATCH answered 200}
    ended: float = 0.0

    async def create(self, conn, title, headers=None, timeout=10.0):
        """POST /tasks {"title": `title`} on `conn`; a 201's task joins `acked`."""
        k = await conn.send("POST", "/tasks", {"title": title}, headers, title=title, timeout=timeout)
        if k.status == 201:
            try:
                self.acked.append((k.json()["id"], title))
            except (ValueError, KeyError):
                k.status, k.error = None, "201 without a task"
        return k


def creates_and_gets(known=(), creates=True):
    """The fleet's requests (a mix for run_load), for each client in a loop: a keyed create, two
    gets of a task, a list of 10. A get reads one of the ids `known` (tasks every standby has),
    else one created before; without `creates`, a get comes instead of the create."""

    def mix(load, conn, name, rng, timeout):
        n = 0

        async def send():
            nonlocal n
            n += 1
            if creates and (n % 4 == 1 or not (known or load.acked)):
                return await load.create(conn, f"fleet-{name}-{n}", {"idempotency-key": uuid.uuid4()}, timeout)
            if n % 4 == 0:
                return await conn.send("GET", "/tasks?limit=10", timeout=timeout)
            task = rng.choice(known) if known else rng.choice(load.acked)[0]
            return await conn.send("GET", f"/tasks/{task}", timeout=timeout)

        return send

    return mix


async def run_load(port, stop, clients=CLIENTS, timeout=10.0, mix=creates_and_gets()):
    """`clients` keep-alive connections, each sending the requests `mix` makes for it (the fleet's
    own: keyed creates and gets) one after another, until `stop` is set."""
    load = Load()
    run = uuid.uuid4().hex[:8]

    async def client(i):
        conn = Connection(port)
        send = mix(load, conn, f"{run}-{i}", random.Random(i), timeout)
        while not stop.is_set():
            k = await send()
            load.calls.append(k)
            await asyncio.sleep(0.01 if k.ok else 0.05)
        conn.drop()

    await asyncio.gather(*(client(i) for i in range(clients)))
    load.ended = time.monotonic()
    return load


def under_load(port, steps, **options):
    """Runs the coroutine function `steps` while run_load's clients (with `options`: a `mix`,
    …) send through `port`; (the load, what `steps` returned)."""

    async def run():
        stop = asyncio.Event()
        load = asyncio.create_task(run_load(port, stop, **options))
        try:
            result = await steps()
        finally:
            stop.set()
        return await load, result

    return asyncio.run(run())


async def pairs(ports, count, token, clients=CLIENTS):
    """`count` create-then-read pairs over `clients` pairs of keep-alive connections: client i
    creates on ports[i % n] and reads the task back at once on the next port, sending the
    create's x-consistency-token when `token`. [(create, read or None)] in the order done."""
    done = []
    numbers = iter(range(count))
    run = uuid.uuid4().hex[:8]

    async def client(i):
        write, read = Connection(ports[i % len(ports)]), Connection(ports[(i + 1) % len(ports)])
        for n in numbers:  # shared: each number is taken by one client
            title = f"pair-{run}-{n}"
            create, back = await write.send("POST", "/tasks", {"title": title}, title=title), None
            if create.status == 201:
                sent = {"x-consistency-token": create.headers.get("x-consistency-token", "")} if token else {}
                back = await read.send("GET", f"/tasks/{create.json()['id']}", headers=sent, title=title)
            done.append((create, back))
        write.drop()
        read.drop()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return done


def stale(read):
    """Whether a read of the task just created saw an older state: not found, or another title."""
    if read.status == 404:
        return True
    try:
        return read.status == 200 and read.json()["title"] != read.title
    except (ValueError, KeyError, TypeError):
        return True


def outcome(k):
    """A call's outcome, a 503 of HAProxy's own (no x-request-id: no replica answered) told apart."""
    if k.status == 503 and "x-request-id" not in k.headers:
        return "503 (HAProxy)"
    return k.outcome()


def outcomes(calls):
    return tally(calls, outcome)


def non_2xx(calls):
    """The calls that failed, and `2 non-2xx {'503': 2}` (or `0 non-2xx`) of them."""
    failed = [k for k in calls if not k.ok]
    return failed, f"{len(failed)} non-2xx{f' {outcomes(failed)}' if failed else ''}"


def missing_creates(cluster, acked, db=DATABASE):
    """How many acknowledged creates (id, title) are not in the tasks table of `cluster`."""
    rows = dict(line.split("|", 1) for line in cluster.psql("SELECT id, title FROM tasks", db,
                                                            timeout=60).splitlines())
    return sum(rows.get(str(task_id)) != title for task_id, title in acked)


def stored_titles(cluster, titles):
    if not titles:
        return 0
    values = ",".join("'" + t.replace("'", "''") + "'" for t in titles)
    return int(cluster.psql(f"SELECT count(*) FROM tasks WHERE title IN ({values})", DATABASE))


