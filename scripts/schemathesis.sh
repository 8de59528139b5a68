#!/usr/bin/env bash
# `make test-openapi`: the server keeps to its own contract. Starts a throwaway
# PostgreSQL and the debug server, points schemathesis at GET /openapi.json with every
# check on, and fails on any failure: a 5xx, a response the schema does not allow,
# an undocumented status or header, valid input refused or invalid input accepted.
# Everything it started is stopped on the way out.
#
#   scripts/schemathesis.sh [EXTRA_SCHEMATHESIS_OPTION...]
#
# SCHEMATHESIS_EXAMPLES (default 200): at most that many generated cases per operation;
# SCHEMATHESIS_SEED (default 1); the run is cut after SCHEMATHESIS_TIMEOUT s (default 150).
# The tools go in a venv, $TOOLS_VENV (default target/tools), pinned below.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
SPEC_VALIDATOR_VERSION=0.9.0
TOOLS_VENV=${TOOLS_VENV:-target/tools}
examples=${SCHEMATHESIS_EXAMPLES:-200}
seed=${SCHEMATHESIS_SEED:-1}
budget=${SCHEMATHESIS_TIMEOUT:-150}
password=${PG_PASSWORD:-postgres}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

schemathesis=$TOOLS_VENV/bin/schemathesis
validator=$TOOLS_VENV/bin/openapi-spec-validator
if [[ $("$schemathesis" --version 2>/dev/null) != *" $SCHEMATHESIS_VERSION" ]] \
  || [[ $("$validator" --version 2>/dev/null) != *" $SPEC_VALIDATOR_VERSION" ]]; then
  echo "schemathesis.sh: installing schemathesis $SCHEMATHESIS_VERSION and" \
    "openapi-spec-validator $SPEC_VALIDATOR_VERSION in $TOOLS_VENV" >&2
  [[ -x $TOOLS_VENV/bin/pip ]] || python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$SPEC_VALIDATOR_VERSION"
fi

# The document itself first: a valid OpenAPI 3.1 document, or nothing else is worth running.
"$validator" --schema 3.1 src/http/openapi.json

mkdir -p target
work=target/openapi-$$
pg_dir=$work/pg
server_log=$work/server.log
server=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local status=$?
  if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    wait "$server" 2>/dev/null || true
  fi
  scripts/pg.sh stop "$pg_dir" || true
  if ((status != 0)) && [[ -s $server_log ]]; then
    echo "--- server log (warnings and errors), last 40 lines" >&2
    tail -n 40 "$server_log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
mkdir -p "$work"

pg_port=$(free_port)
PG_PASSWORD=$password scripts/pg.sh start "$pg_dir" "$pg_port" -- \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off
scripts/pg.sh createdb "$pg_dir" tasks

cargo build --locked --quiet --bin task-api
port=$(free_port)
DATABASE_URL="postgres://postgres:$password@127.0.0.1:$pg_port/tasks?sslmode=disable" \
  HOST=127.0.0.1 PORT=$port LOG_LEVEL=warn DATABASE_STARTUP_TIMEOUT=30 \
  target/debug/task-api serve >"$server_log" 2>&1 &
server=$!
for _ in $(seq 100); do
  PORT=$port target/debug/task-api healthcheck --ready --timeout 1 >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "schemathesis.sh: the server exited" >&2; exit 1; }
  sleep 0.3
done
PORT=$port target/debug/task-api healthcheck --ready

# Every check; a fixed seed, no example database and no cache (it would write
# .schemathesis/ into the work tree and feed earlier runs' requests into this one),
# so one run repeats the last.
# Two answers to schema-valid requests are right and not refusals of valid input: 422
# for an Idempotency-Key already used with another body (the generator reuses keys),
# and 412 for an If-Match naming a version the task no longer has.
cat >"$work/schemathesis.toml" <<'TOML'
[cache]
enabled = false

[[operations]]
include-name = "POST /tasks"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "422"]

[[operations]]
include-name-regex = "^(PATCH|DELETE) /tasks/\\{id\\}$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "412"]
TOML
command=("$schemathesis" --config-file "$work/schemathesis.toml" run
  "http://127.0.0.1:$port/openapi.json" --checks all --max-examples "$examples" --seed "$seed"
  --generation-database none --request-timeout 10 --no-color "$@")
echo "+ ${command[*]}"
started=$SECONDS
status=0
timeout --kill-after 10 "$budget" "${command[@]}" | tee "$work/run.log" || status=${PIPESTATUS[0]}
if ((status == 124 || status == 137)); then
  echo "schemathesis.sh: schemathesis did not finish within ${budget}s" >&2
fi
cases=$(grep -Eo '[0-9]+ generated' "$work/run.log" | tail -n 1 || true)
echo "schemathesis.sh: schemathesis $SCHEMATHESIS_VERSION, ${cases:-no} cases," \
  "$( ((status == 0)) && echo passed || echo "FAILED (exit $status)") in $((SECONDS - started))s"
exit "$status"
