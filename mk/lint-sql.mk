# `make lint-sql`: squawk, the PostgreSQL migration linter, on every file of sql/ and
# sql/indexes/, with the release rules of docs/upgrading.md it cannot see (scripts/upgrade/lint.py).
# What it finds in V1–V4 is excused in .squawk.toml, each finding with its reason.

SQUAWK_PACKAGE ?= squawk-cli==2.70.0
SQUAWK_VENV := target/tools

.PHONY: lint-sql

## lint-sql      squawk on sql/ and sql/indexes/ (pip installs squawk-cli into target/tools):
##               unexcused findings, compatibility headers, lock and statement timeouts
lint-sql:
	test -x $(SQUAWK_VENV)/bin/squawk \
	  || { test -x $(SQUAWK_VENV)/bin/pip || python3 -m venv $(SQUAWK_VENV); \
	       $(SQUAWK_VENV)/bin/pip install --quiet --disable-pip-version-check $(SQUAWK_PACKAGE); }
	SQUAWK=$(SQUAWK_VENV)/bin/squawk PYTHONPATH=scripts python3 -m upgrade.lint
