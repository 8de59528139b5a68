# `make test-upgrade`: two releases on one database (docs/upgrading.md), proven by
# scripts/upgrade/: FROM (default: the newest v* tag, else 02cade1, the last state before the
# compatibility records) built in a git worktree under target/upgrade/, then its own tests on
# this build's schema, a mixed fleet behind HAProxy, a restart and a rollback, the same with
# test-only migrations, and a big index built under write load.

FROM ?=

.PHONY: test-upgrade

## test-upgrade  two releases on one database (~5 minutes; the first time ~15 more, to build FROM,
##               its tests and two test variants): FROM=<rev> (default: the newest v* tag, else
##               02cade1); prints the table and writes it to docs/results/upgrade.md
test-upgrade: build
	FROM="$(FROM)" PYTHONPATH=scripts python3 -m upgrade
