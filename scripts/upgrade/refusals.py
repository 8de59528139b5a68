"""What a binary does on a schema a newer build left (src/pg/compat.rs): this build on a contract
migration that needs a later release, and `<rev>` on an expand migration, refused when `<rev>`
predates the compatibility records and served otherwise."""

import subprocess

from harness.net import free_port
from harness.server import Server

from .context import scenario


def migrated(ctx, binary, db):
    """A new database of the shared cluster, migrated by `binary`: its URL, and what `migrate`
    printed."""
    cluster = ctx.cluster()
    url = cluster.createdb(db)
    out = subprocess.run([binary, "migrate"], env={"DATABASE_URL": url}, capture_output=True, text=True,
                         timeout=120)
    if out.returncode:
        raise RuntimeError(f"{binary.name} migrate exited {out.returncode}: {out.stderr.strip()[-300:]}")
    return url, out.stdout


def started(binary, command, url):
    """`binary command` on `url`, to its end (a refused start ends at once): its exit code and stderr."""
    env = {"DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(free_port()), "DATABASE_STARTUP_TIMEOUT": "5"}
    try:
        out = subprocess.run([binary, command], env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None, "still running after 30 s"
    return out.returncode, out.stderr.strip()


@scenario("contract")
def contract(ctx):
    """This build on a database the contract variant migrated (its expand, then a contract
    migration that says it works with task-api 99.0.0 and later): `serve` and `migrate`.
    Target: exit 1 for both, naming the contract migration and 99.0.0."""
    variant = ctx.builds.variants["contract"]
    name = next(p.rsplit("/", 1)[1].removesuffix(".sql") for p in variant.extra if "contract" in p)
    url, printed = migrated(ctx, variant.binary, "contract")
    said, ok = [], name in printed
    for command in ("serve", "migrate"):
        code, stderr = started(ctx.builds.new, command, url)
        names = name in stderr and "99.0.0" in stderr
        ok = ok and code == 1 and names
        said.append(f"{command}: exit {code}{'' if names else ', not naming both'}")
    reason = next((line for line in stderr.splitlines() if "refusing" in line), stderr[-200:])
    return (f"{variant.label} applied {name}; this build's {'; '.join(said)}: “{reason.split(': ', 1)[-1]}”",
            ok)


@scenario("unknown")
def unknown(ctx):
    """`<rev>` on a database the expand variant migrated (a migration it does not know, recorded
    as an expand that works with this release). Target: a release from before records (exit 1
    naming the migration: it cannot tell an expand from anything else); one with records
    serves."""
    release, variant = ctx.builds.old, ctx.builds.variants["expand"]
    name = next(p.rsplit("/", 1)[1].removesuffix(".sql") for p in variant.extra if p.startswith("sql/V"))
    url, _ = migrated(ctx, variant.binary, "expand_only")
    if release.has_records():
        server = Server(release.binary, ctx.work / "unknown-serve.log", url, env={"DATABASE_STARTUP_TIMEOUT": "5"})
        ctx.logs.append(server.log_path)
        server.wait("/ready", 20)
        code = server.process.stop()
        return f"{release.label} has records: served on it (/ready 200), stopped with exit {code}", code == 0
    code, stderr = started(release.binary, "serve", url)
    reason = next((line for line in stderr.splitlines() if "refusing" in line), stderr[-200:])
    named = "naming" if name in stderr else "NOT naming"
    return (f"{release.label} predates records: exit {code}, {named} {name}: “{reason.split(': ', 1)[-1]}”",
            code == 1 and name in stderr)
