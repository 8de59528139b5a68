"""Step a: `<rev>`'s own integration tests on databases this build migrated first. A cluster of
its own whose template1 this build's `task-api migrate` has migrated, so that every database the
old suite creates (`CREATE DATABASE`, from template1) is a copy of this build's schema; the suite
run the way `<rev>` runs it (its scripts/test.sh, which installs what it needs) against it.

The cluster logs its DDL (log_statement=ddl), which tells how many databases the suite created
there and whether any of them had to run V1 itself (none should: the schema was there).

The tests that check what `migrate` does to an empty database (it applies V1–V4, the metric
counts them) cannot hold on a database that is already migrated: they are listed in EMPTY, with
why, and run apart on a second cluster whose template1 is left empty."""

import re
import subprocess
import time

from harness.cluster import Cluster
from harness.report import say

from .context import scenario

# <rev>'s tests that need an empty database, by libtest name: skipped on the migrated template,
# run on an empty one. Each asserts that the binary under test applied the migrations itself.
EMPTY = {
    "cli::libpq_key_value_strings_work": "`migrate` with a key=value URL prints `applied V1__create_tasks`",
    "cli::migrate_applies_once_then_reports_nothing_pending": "the first `migrate` prints `applied V1__…`",
    "lifecycle::eight_concurrent_migrations_apply_each_exactly_once": "one of eight `migrate`s applies V1–V4",
    "metrics::pool_migrations_and_build_info_are_reported": "task_api_migrations_applied is 4",
    "pooler::four_replicas_migrate_through_pgbouncer_exactly_once": "one of four replicas applies V1–V4",
}
PG_OPTIONS = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
              "-c", "max_connections=400", "-c", "log_statement=ddl"]
# V1's first statement: logged (log_statement=ddl) wherever V1 runs, so in a database that was
# not migrated already.
V1 = "CREATE TABLE tasks ("


def cargo_tests(release, cluster, args, log):
    """`<rev>`'s scripts/test.sh --test api -- `args` against `cluster`: (exit code, passed, failed,
    names of the failed)."""
    env = dict(cluster.env(), TEST_DATABASE_URL=cluster.url("postgres"))
    for name in ("CARGO_TARGET_DIR", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(name, None)
    with open(log, "w") as out:
        code = subprocess.run(["scripts/test.sh", "--test", "api", "--", *args], cwd=release.tree, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=1800).returncode
    text = log.read_text(errors="replace")
    passed = sum(int(n) for n in re.findall(r"^test result: \w+\. (\d+) passed", text, re.M))
    failed = sum(int(n) for n in re.findall(r"^test result: \w+\. \d+ passed; (\d+) failed", text, re.M))
    return code, passed, failed, re.findall(r"^test (\S+) \.\.\. FAILED", text, re.M)


@scenario("a")
def own_tests(ctx):
    """`<rev>`'s own integration tests (its scripts/test.sh --test api) against a cluster whose
    template1 this build migrated first, so that every database they create starts as this
    build's schema; the few that test migrating an empty database on an empty template1.
    Target: all pass (a test that fails passes when run again alone); every test database a copy of
    the migrated one (none runs V1)."""
    release = ctx.builds.old
    migrated = Cluster(ctx.work, "a-migrated", "upgrade-pw", PG_OPTIONS, app="upgrade", tag="upgrade")
    empty = Cluster(ctx.work, "a-empty", "upgrade-pw", PG_OPTIONS, app="upgrade", tag="upgrade")
    migrated.start()
    empty.start()
    out = subprocess.run([ctx.builds.new, "migrate"], env={"DATABASE_URL": migrated.url("template1")},
                         capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise RuntimeError(f"this build's migrate on template1 exited {out.returncode}: {out.stderr.strip()}")
    records = migrated.psql("SELECT count(*) FROM task_api_compatibility", "template1")
    # A database made now is a copy of template1: the schema, the history and the records.
    migrated.psql("CREATE DATABASE upgrade_probe")
    copied = migrated.psql("SELECT count(*) FROM task_api_compatibility", "upgrade_probe")
    migrated.psql("DROP DATABASE upgrade_probe")
    server_log = migrated.dir / "server.log"
    mark = len(server_log.read_bytes().decode(errors="replace"))

    started = time.monotonic()
    say(f"a: {release.label}'s tests on a cluster whose template1 this build migrated ({records} "
        f"compatibility records; a new database holds {copied})")
    skips = [arg for name in EMPTY for arg in ("--skip", name)]
    code, passed, failed, names = cargo_tests(release, migrated, skips, ctx.work / "a-migrated-tests.log")
    # Some of <rev>'s tests hold a timing (the pruner's within 10 s) that a loaded 2-core machine can
    # miss: those that failed run once more, alone, on the same migrated template. The figure says so.
    again = None
    if names and len(names) == failed:
        again = cargo_tests(release, migrated, ["--exact", *names], ctx.work / "a-again-tests.log")
        ctx.logs.append(ctx.work / "a-again-tests.log")
    text = server_log.read_bytes().decode(errors="replace")
    before, during = text[:mark], text[mark:]
    made = during.count("statement: CREATE DATABASE")
    took = time.monotonic() - started
    code2, passed2, failed2, names2 = cargo_tests(release, empty, ["--exact", *EMPTY],
                                                  ctx.work / "a-empty-tests.log")
    ctx.logs += [ctx.work / "a-migrated-tests.log", ctx.work / "a-empty-tests.log"]
    passed_again = again is not None and again[0] == 0 and again[1] == failed and again[2] == 0
    migrated.close()
    empty.close()

    retried = (", which passed when run again alone" if passed_again else ", and failed again") if names else ""
    figure = (f"template1 migrated by this build ({records} compatibility records, copied into every new "
              f"database); {passed} passed, {failed} failed{f' {names[:5]}' if names else ''}{retried} in "
              f"{took:.0f} s; {made} databases created from it; V1 logged {before.count(V1)} time before (this "
              f"build on template1), {during.count(V1)} during (target 0); the {len(EMPTY)} that test migrating "
              f"an empty database (EMPTY, scripts/upgrade/oldsuite.py) on an empty template1: {passed2} passed, "
              f"{failed2} failed{f' {names2}' if names2 else ''}")
    ok = ((code == failed == 0 or passed_again) and code2 == failed2 == 0 and passed > 0
          and passed2 == len(EMPTY) and int(records) > 0 and copied == records and made > 0
          and before.count(V1) == 1 and during.count(V1) == 0)
    return figure, ok
