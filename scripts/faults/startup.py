"""Fault scenarios of starting up: TLS modes, a database host that says nothing, locks held
on the migrations, broken URLs that must not leak a password, IPv6, and replicas
migrating at once."""

import re
import socket
import time

from harness import ROOT
from harness.http import request
from harness.net import Silent, free_port
from harness.process import parallel

from .context import LOCK_KEY, holder, holder_pid, release, run_binary, scenario


@scenario("sslmode")
def sslmode(ctx):
    """PostgreSQL without TLS; `migrate` with postgresql://u:a?b@…?sslmode=require (a '?' in the
    password), then the same URL with sslmode=disable

    Target: require: exit 1, no plaintext login, nothing created; disable: exit 0"""
    c = ctx.cluster
    c.psql("CREATE ROLE qmark LOGIN SUPERUSER PASSWORD 'a?b'")
    c.psql("CREATE DATABASE sslmode OWNER qmark")
    base = f"postgresql://qmark:a?b@127.0.0.1:{c.port}/sslmode"
    log = c.dir / "server.log"
    mark = log.stat().st_size
    code, out, took = run_binary(ctx, ["migrate"], {"DATABASE_URL": base + "?sslmode=require",
                                                   "DATABASE_STARTUP_TIMEOUT": "3"}, timeout=15)
    with open(log, "rb") as f:
        f.seek(mark)
        logins = f.read().decode(errors="replace").count("connection authorized: user=qmark")
    created = c.psql("SELECT to_regclass('public.tasks') IS NOT NULL", "sslmode") == "t"
    says_tls = bool(re.search(r"TLS|SSL", out, re.I))
    code2, out2, _ = run_binary(ctx, ["migrate"], {"DATABASE_URL": base + "?sslmode=disable",
                                                  "DATABASE_STARTUP_TIMEOUT": "5"}, timeout=15)
    figure = (f"require: exit {code} in {took:.1f} s{'' if says_tls else ' (no word of TLS)'}, "
              f"{logins} plaintext logins, tasks table {'CREATED' if created else 'absent'}; "
              f"disable: exit {code2}")
    if code2 != 0:
        figure += f" ({(out2.strip().splitlines() or ['no output'])[-1]})"
    ok = code == 1 and says_tls and logins == 0 and not created and code2 == 0
    return figure, ok


@scenario("verify-ca", needs_db=False)
def verify_ca(ctx):
    """`migrate` with sslmode=verify-ca and no sslrootcert; verify-ca and require with
    sslrootcert=system

    Target: exit 2 naming sslrootcert, 3 of 3"""
    cases = ["sslmode=verify-ca", "sslmode=verify-ca&sslrootcert=system",
             "sslmode=require&sslrootcert=system"]
    results = parallel(*(lambda q=q: run_binary(
        ctx, ["migrate"], {"DATABASE_URL": f"postgresql://u:p@127.0.0.1:1/d?{q}",
                           "DATABASE_STARTUP_TIMEOUT": "1"}, timeout=10) for q in cases))
    good = [code == 2 and "sslrootcert" in out for code, out, _ in results]
    figure = f"{sum(good)}/3 exit 2 naming sslrootcert" + "".join(
        f"; {q}: exit {code}" for q, (code, _, _), g in zip(cases, results, good) if not g)
    return figure, all(good)


@scenario("startup-hang")
def startup_hang(ctx):
    """DATABASE_STARTUP_TIMEOUT=3 against a host that accepts TCP and says nothing (plain, and
    sslmode=require); `migrate` while a session holds the migration lock, or locks the schema
    table

    Target: exit 1 within 5 s (silent host) / 6 s (locks), the holder named by pid and
    application_name"""
    silent = Silent()
    c = ctx.cluster
    env = {"DATABASE_STARTUP_TIMEOUT": "3", "HOST": "127.0.0.1"}

    def silent_host(mode):
        url = f"postgres://u:p@127.0.0.1:{silent.port}/d?sslmode={mode}"
        return run_binary(ctx, ["serve"], {**env, "PORT": str(free_port()), "DATABASE_URL": url}, timeout=12)

    def locked(suffix, prepare, sql, lock_condition):
        db = ctx.database(suffix)
        url = c.url(db)
        if prepare:
            code, out, _ = run_binary(ctx, ["migrate"], {"DATABASE_URL": url}, timeout=20)
            if code != 0:
                raise RuntimeError(f"first migrate: exit {code}: {out.strip()[-200:]}")
        held = holder(c, db, sql)
        try:
            pid = holder_pid(c, db, lock_condition)
            code, out, took = run_binary(ctx, ["migrate"], {**env, "DATABASE_URL": url}, timeout=12)
            return code, out, took, pid
        finally:
            release(held)

    try:
        plain, tls, advisory, table = parallel(
            lambda: silent_host("disable"), lambda: silent_host("require"),
            lambda: locked("_lock", False, f"SELECT pg_advisory_lock({LOCK_KEY});",
                           "l.locktype = 'advisory'"),
            lambda: locked("_table", True,
                           "BEGIN; LOCK TABLE refinery_schema_history IN ACCESS EXCLUSIVE MODE;",
                           "l.mode = 'AccessExclusiveLock' "
                           "AND l.relation = 'refinery_schema_history'::regclass"))
    finally:
        silent.close()

    def exited(code, took):
        if code is None:
            return f"still running after {took:.0f} s (killed)"
        return f"exit {code} in {took:.1f} s"

    def names(out, pid):
        return "lock-holder" in out and re.search(rf"\bpid\W{{0,3}}{pid}\b", out) is not None

    figure = (f"silent host: {exited(plain[0], plain[2])}; silent host, TLS: {exited(tls[0], tls[2])}; "
              f"migration lock: {exited(advisory[0], advisory[2])}"
              f"{', holder named' if names(advisory[1], advisory[3]) else ', holder NOT named'}; "
              f"schema table lock: {exited(table[0], table[2])}"
              f"{', holder named' if names(table[1], table[3]) else ', holder NOT named'}")
    ok = (all(r[0] == 1 and r[2] <= 5 for r in (plain, tls))
          and all(r[0] == 1 and r[2] <= 6 and names(r[1], r[3]) for r in (advisory, table)))
    return figure, ok



LEAKY_URLS = [
    ("host=127.0.0.1 port=1 user=u password=se cret99 dbname=d", ["se cret", "secret99", "cret99"]),
    ("postgresql://u:pa%zzss77@127.0.0.1:1/d", ["pa%zz", "zzss77", "ss77"]),
    ("host=127.0.0.1 port=1 user=u password=hunter2x9 bogus=1 dbname=d", ["hunter2x9"]),
    ("host=127.0.0.1 port=1 user=u password='sw0rdfish22 dbname=d", ["sw0rdfish"]),
    ("postgresql://u:pw7secret7@127.0.0.1:1/d?bogus=1", ["pw7secret7"]),
]


@scenario("password-leak", needs_db=False)
def password_leak(ctx):
    """`migrate` with 5 broken DATABASE_URLs: an unquoted space in a key=value password, bad
    percent-encoding, an unknown key or parameter after it, an unterminated quote

    Target: exit 2 with one line, 0 password fragments, 5 of 5"""
    results = parallel(*(lambda url=url: run_binary(
        ctx, ["migrate"], {"DATABASE_URL": url, "DATABASE_STARTUP_TIMEOUT": "1"}, timeout=10)
        for url, _ in LEAKY_URLS))
    leaks, wrong = 0, []
    for (url, secrets), (code, out, _) in zip(LEAKY_URLS, results):
        leaked = [s for s in secrets if s in out]
        leaks += bool(leaked)
        if code != 2 or leaked or len(out.strip().splitlines()) != 1:
            wrong.append(f"{url!r}: exit {code}{', shows ' + '/'.join(leaked) if leaked else ''}")
    figure = f"{len(LEAKY_URLS) - len(wrong)}/{len(LEAKY_URLS)} exit 2 in one line; {leaks} leak"
    figure += "".join(f"; {w}" for w in wrong)
    return figure, not wrong


@scenario("ipv6")
def ipv6(ctx):
    """HOST unset: GET /health on 127.0.0.1 and on [::1]

    Target: 200 on both"""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return "skipped: this machine has no ::1", True
    server = ctx.server(ctx.cluster.url(ctx.database()), host=None, wait=False)
    deadline = time.monotonic() + 20
    while "listening on" not in server.output() and server.process.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    answers = {h: request(server.port, "GET", "/health", timeout=2, host=h) for h in ("127.0.0.1", "::1")}
    figure = "; ".join(f"{h}: {k.outcome()}" for h, k in answers.items())
    return figure, all(k.status == 200 for k in answers.values())



@scenario("replicas")
def replicas(ctx, count=8):
    """8 `task-api serve` started at once on an empty database

    Target: one refinery_schema_history row and one 'applied migration' line per migration"""
    db = ctx.database()
    url = ctx.cluster.url(db)
    servers = [ctx.server(url, wait=False) for _ in range(count)]
    healthy = 0
    for server in servers:
        try:
            server.wait("/health", limit=30)
            healthy += 1
        except RuntimeError:
            pass
    migrations = len(list((ROOT / "sql").glob("V*__*.sql")))
    rows, versions = ctx.cluster.psql("SELECT count(*), count(DISTINCT version) FROM refinery_schema_history",
                                      db).split("|")
    applied = sum(s.output().count("applied migration") for s in servers)
    figure = (f"{healthy}/{count} healthy; {rows} history rows ({versions} versions), {applied} "
              f"'applied migration' lines for {migrations} migrations")
    return figure, healthy == count and int(rows) == int(versions) == migrations and applied == migrations


