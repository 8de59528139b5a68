#!/usr/bin/env bash
# `make test`: the whole suite, against a throwaway PostgreSQL started here and
# removed afterwards, or against $TEST_DATABASE_URL when it is set (a superuser or
# CREATEDB role: every test makes and drops a database of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${TEST_DATABASE_URL:-} ]]; then
  # One cluster per run, so two runs at once never share (or delete) one.
  dir=target/test-pg-$$
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  scripts/pg.sh stop "$dir" 2>/dev/null || true
  rm -rf "$dir"
  mkdir -p target
  # Durability off: this cluster lives for one run. Many tests run at once.
  PG_PASSWORD=test-secret-pw scripts/pg.sh start "$dir" "$port" -- \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400
  trap 'scripts/pg.sh stop "$dir"; rm -rf "$dir"' EXIT
  export TEST_DATABASE_URL="postgres://postgres:test-secret-pw@127.0.0.1:$port/postgres?sslmode=disable"
fi
# The metrics test reads /metrics with each format's own parser: promtool (Debian's
# prometheus) for the text format, prometheus_client (PyPI) for OpenMetrics.
if ! command -v promtool >/dev/null; then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "test.sh: promtool is missing: install Debian's prometheus package" >&2
  fi
fi
TOOLS_VENV=target/tools
if ! "$TOOLS_VENV/bin/python3" -c 'import prometheus_client' 2>/dev/null; then
  [[ -x $TOOLS_VENV/bin/pip ]] || python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check prometheus-client==0.23.1
fi
# The tests that start servers of their own (TLS, late start) use scripts/pg.sh too.
cargo test --locked "$@"
