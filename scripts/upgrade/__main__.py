"""`make test-upgrade`: two releases on one database (docs/upgrading.md), proven.

FROM=<rev> (else the newest v* tag, else 02cade1, the last state before the compatibility
records) is built in a git worktree under target/upgrade/ by its own `make build`, and its
integration tests compiled; this tree plus test-only migrations is built as two debug variants
beside it, never touching sql/ (builds.py). Then, each on loopback with clusters of its own:

  a          <rev>'s own integration tests on databases this build migrated first (oldsuite.py)
  b, c       a mixed fleet behind the fleet suite's HAProxy under load: <rev> → this build, then
             an old replica started again on the migrated schema and a rollback (mixed.py)
  b-expand,  the same between this build and this build + an expand migration, which proves the
  c-expand   compatibility records whatever <rev> is
  contract   this build refuses a contract migration that needs a later release (refusals.py)
  unknown    <rev> on an expand it does not know: refused before records, served after
  index      a big index built concurrently on a million rows under write load (bigindex.py)

Prints a line per scenario as it ends, then the markdown table, which it also writes to
docs/results/upgrade.md (not for an UPGRADE_ONLY run), and exits 1 when any scenario failed.
Everything started is stopped on exit, also on Ctrl-C or SIGTERM. Needs PostgreSQL and HAProxy
(installed as root when missing). `make lint-sql` is lint.py (`python3 -m upgrade.lint`).

Environment: FROM, UPGRADE_ONLY (comma-separated scenario names; c needs b), UPGRADE_KEEP=1
(keep the work directory with every log).
"""

import os
import sys
import time

from fleet.topology import SHUTDOWN_DELAY
from harness import BINARY
from harness.process import install
from harness.report import command, conclude, finished, say, tail
from harness.suite import attempt, begin, workdir

from . import oldsuite, mixed, refusals, bigindex  # noqa: F401 - they register the scenarios, in this order
from .builds import Builds
from .context import KEEP, ONLY, SCENARIOS, Context


def run_one(s, ctx, results):
    ctx.logs = []
    started = time.monotonic()
    figure, ok, _ = attempt(s.run, ctx)
    results[s.name] = (figure, ok)
    finished(s.name, ok, figure, time.monotonic() - started, [(p.name, tail(p)) for p in ctx.logs[-4:]], width=8)


def main():
    selected = begin("upgrade", SCENARIOS, ONLY, BINARY)
    install("haproxy", "haproxy", "upgrade")
    builds = Builds()
    say(f"upgrade: {builds.old.label} → this build; building what is missing")
    try:
        builds.build()
    except (RuntimeError, OSError) as err:
        sys.exit(f"upgrade: a build failed: {err}")
    for s in SCENARIOS:
        s.what = s.what.replace("<rev>", builds.old.label)
    started = time.monotonic()
    results = {}
    with workdir("upgrade", KEEP, grace=SHUTDOWN_DELAY + 5) as work:
        ctx = Context(work, builds)
        for s in selected:
            run_one(s, ctx, results)
        seconds = time.monotonic() - started
        conclude("upgrade", selected, results, seconds,
                 f"`make test-upgrade` ({builds.old.label} → this build) on {os.cpu_count()} cores in "
                 f"{seconds:.0f} s after the builds; PostgreSQL, HAProxy, every replica and the clients share the "
                 "machine.",
                 f"make test-upgrade: {builds.old.label} and this build on one database, and this build with "
                 "test-only migrations", BINARY, command("test-upgrade", ["FROM"]), "UPGRADE_ONLY" if ONLY else "")
    sys.exit(0 if all(ok for _, ok in results.values()) and len(results) == len(selected) else 1)


if __name__ == "__main__":
    main()
