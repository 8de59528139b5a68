"""What the clients of a mixed fleet send, and what is asked of two versions at once: the request
mix of steps b and c (creates plain and keyed, gets, patches with If-Match), the writes it had
acknowledged that the table lost, and the facts that cross versions (a keyed retry replays, an
ETag is honoured) asked of one replica of each."""

import uuid

from harness.http import call


def crud(load, conn, name, rng, timeout):
    """For the client `name`, in a loop: a keyed create, a plain create, a get of one of its own
    tasks, a patch of that task with `If-Match` the get's ETag, a list of 10. Only this client
    writes its tasks, so every patch's ETag is current: a 412 means an ETag was not honoured."""
    n = 0
    mine = []
    seen = {}  # the ETag of the task the last get read: {id: etag}

    async def send():
        nonlocal n
        n += 1
        step = n % 5 if mine else 1
        if step in (1, 2):
            keyed = {"idempotency-key": f"upgrade-{name}-{n}"} if step == 1 else None
            k = await load.create(conn, f"upgrade-{name}-{n}", keyed, timeout)
            if k.status == 201:
                mine.append(k.json()["id"])
            return k
        if step == 3:
            task = rng.choice(mine)
            k = await conn.send("GET", f"/tasks/{task}", timeout=timeout)
            seen.clear()
            if k.status == 200:
                seen[task] = k.headers.get("etag", "")
            return k
        if step == 4 and seen:
            (task, etag), = seen.items()
            value = f"patched {name}-{n}"
            k = await conn.send("PATCH", f"/tasks/{task}", {"description": value}, {"if-match": etag},
                                timeout=timeout)
            if k.status == 200:
                load.patched[task] = value
            return k
        return await conn.send("GET", "/tasks?limit=10", timeout=timeout)

    return send


def lost_patches(cluster, patched, db):
    """How many tasks do not hold the value of the last PATCH answered 200 on them."""
    if not patched:
        return 0
    ids = ",".join(map(str, patched))
    rows = dict(line.split("|", 1) for line in cluster.psql(
        f"SELECT id, coalesce(description, '') FROM tasks WHERE id IN ({ids})", db, timeout=60).splitlines())
    return sum(rows.get(str(task)) != value for task, value in patched.items())


async def crossed(first, second, body):
    """A keyed create of `body` on port `first`, retried with the same key on port `second`; then
    a GET on `first` and a PATCH on `second` with `If-Match` its ETag. [what went wrong]"""
    key = f"upgrade-crossed-{uuid.uuid4()}"
    created = await call(first, "POST", "/tasks", body, {"idempotency-key": key})
    again = await call(second, "POST", "/tasks", body, {"idempotency-key": key})
    if created.status != 201:
        return [f"the create got {created.outcome()}"]
    task = created.json()["id"]
    problems = []
    replayed = again.json().get("id") if again.status == 201 else None
    if again.headers.get("idempotent-replayed") != "true" or replayed != task:
        problems.append(f"the retry got {again.outcome()}, idempotent-replayed "
                        f"{again.headers.get('idempotent-replayed')!r}, id {replayed} for {task}")
    got = await call(first, "GET", f"/tasks/{task}")
    patched = await call(second, "PATCH", f"/tasks/{task}", {"status": "completed"},
                         {"if-match": got.headers.get("etag", "")})
    if patched.status != 200:
        problems.append(f"If-Match with the ETag {got.headers.get('etag')} got {patched.outcome()}")
    return problems


async def across(old, new):
    """The facts that cross versions, between replica ports `old` and `new`: (figure, ok)."""
    cases = [("old→new", old, new, {"title": "crossed old→new"}),
             ("new→old", new, old, {"title": "crossed new→old", "description": "both ways"}),
             # docs/upgrading.md: the new release also takes the old one's digest of a body as written.
             ("old→new, a default spelled out", old, new,
              {"title": "crossed with a default", "status": "pending"})]
    said, ok = [], True
    for name, first, second, body in cases:
        problems = await crossed(first, second, body)
        ok = ok and not problems
        said.append(f"{name}: {'; '.join(problems) if problems else 'replayed, same id; ETag honoured'}")
    return "; ".join(said), ok
