"""What `make bench` runs: the settings read from the environment, the scenarios, the wrk
script of each, and its pgbench twin (the statement the server runs for it, from
src/store/sql/tasks.rs, on a copy of the table)."""

import os
from pathlib import Path
from string import Template

from harness import BINARY as BUILT

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "64 256").split()]
SCENARIOS = ["get_by_id", "get_304", "create", "keyed_create", "patch", "delete", "list",
             "list_status", "mixed", "health", "overload", "pooled", "standby"]
# Not run by the loop over SCENARIOS: runs of their own, after it.
APART = ("overload", "pooled", "standby")
# What the pooled runs measure through PgBouncer, beside the direct rows.
POOLED = ["get_by_id", "create"]
# BENCH_QUICK=1: only get_by_id and create, with their twins (for tuning runs).
ONLY = (["get_by_id", "create"] if os.environ.get("BENCH_QUICK") == "1"
        else os.environ.get("BENCH_ONLY", ",".join(SCENARIOS)).replace(",", " ").split())
CURVE = os.environ.get("BENCH_CURVE") == "1"
CURVE_SECONDS = int(os.environ.get("BENCH_CURVE_SECONDS", "5"))
BINARY = Path(os.environ.get("BENCH_BINARY", BUILT))
SEED_TASKS = 10_000
OVERLOAD = [1024, 4096]
# The overload row's targets: the most p99 (ms) and peak RSS (MiB) of get_by_id.
OVERLOAD_P99, OVERLOAD_RSS = 100, 64


def assignments(text):
    """{K: V} from "K=V K=V" (BENCH_ENV, a variant's variables)."""
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


# `python3 -m bench overload` and `memory`: ROUNDS runs, each on a server of its own, for each variant
# in turn ("label: K=V K=V; label: K=V": its server variables; BENCH_BINARY=path, another build).
VARIANTS = [(label.strip(), assignments(env))
            for label, _, env in (v.partition(":") for v in os.environ.get("BENCH_VARIANTS", "as shipped:").split(";"))
            if label.strip()]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CURVE_CONNECTIONS = [16, 64, 256, 1024, 4096]
CURVE_SCENARIOS = ["get_by_id", "create", "patch"]
# Requests a second a delete run is seeded for: well above the fastest route's rate, as
# each wrk thread takes an equal share and one thread may run faster than the other.
DELETE_CEILING = 100_000
PASSWORD = "bench-pw"
VIA_PGBOUNCER = "via PgBouncer"
VIA_STANDBY = "from a standby"
# The most server CPU per request get_by_id from a standby may take, × get_by_id's from the primary,
# and the least share of its reads the standby must serve.
STANDBY_CPU, STANDBY_SHARE = 1.10, 0.9
THREADS = str(os.cpu_count() or 2)


# The batched query (src/store/batcher.rs, `task_api_db_batch_size`) behind a scenario.
BATCHED = {"get_by_id": "find", "get_304": "find", "create": "insert", "keyed_create": "insert",
           "patch": "update", "delete": "delete", "list": "list", "list_status": "list_status"}
# The statuses a scenario's requests should get; any other is an error.
EXPECTED = {"get_by_id": {200}, "get_304": {304}, "create": {201}, "keyed_create": {201},
            "patch": {200}, "delete": {204}, "list": {200}, "list_status": {200},
            "mixed": {200, 201}, "health": {200}}
# The other task-api scenario a scenario is compared with, and the least ratio wanted.
BASELINES = {"keyed_create": ("create", 0.7), "get_304": ("get_by_id", 0.8)}
# Pairs of runs in turn, per ratio to a baseline, and the seconds of each run.
PAIRS = int(os.environ.get("BENCH_PAIRS", "5"))
PAIR_SECONDS = int(os.environ.get("BENCH_PAIR_SECONDS", "3"))

BODY = '{"title":"bench","description":"a task made by make bench"}'
LUA_GET = 'wrk.format("GET", "/tasks/" .. math.random(1, $seed))'
LUA_CREATE = f"wrk.format(\"POST\", \"/tasks\", json, '{BODY}')"
# Alternately completed and pending, per thread.
LUA_PATCH = """wrk.format("PATCH", "/tasks/" .. math.random(1, $seed), json,
    flips % 2 == 0 and '{"status":"completed"}' or '{"status":"pending"}')"""
# Each thread learns its number (tid) before its init.
LUA_THREADS = """
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
"""
# string.Template: $seed, $etags, $key, $first, $per_thread.
WRK_SCRIPTS = {
    "get_by_id": f"request = function() return {LUA_GET} end\n",
    "get_304": f"""
local etags = {{$etags}}
request = function()
  local id = math.random(1, $seed)
  return wrk.format("GET", "/tasks/" .. id, {{["If-None-Match"] = etags[id]}})
end
""",
    "create": f"""
wrk.path = "/tasks"
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
""",
    # create's request with a key of its own each time. The request is formatted once,
    # and only the key's counter spliced in per request: wrk sends create's request as
    # it is, without calling Lua, so what is compared is the server's work.
    "keyed_create": LUA_THREADS + f"""
local before, after
local sent = 0
function init()
  local slot = "KEY-SLOT"
  local headers = {{["Content-Type"] = "application/json", ["Idempotency-Key"] = slot}}
  local req = wrk.format("POST", "/tasks", headers, '{BODY}')
  local at = req:find(slot, 1, true)
  before = req:sub(1, at - 1) .. "$key-" .. tid .. "-"
  after = req:sub(at + #slot)
end
request = function()
  sent = sent + 1
  return before .. sent .. after
end
""",
    "patch": f"""
local json = {{["Content-Type"] = "application/json"}}
local flips = 0
request = function()
  flips = flips + 1
  return {LUA_PATCH}
end
""",
    # Thread t deletes $first + t * $per_thread and on, one id after the other.
    "delete": LUA_THREADS + """
local next_id
function init()
  next_id = $first + tid * $per_thread
end
request = function()
  next_id = next_id + 1
  return wrk.format("DELETE", "/tasks/" .. (next_id - 1))
end
""",
    "list": 'wrk.path = "/tasks?limit=20"\n',
    "list_status": 'wrk.path = "/tasks?status=completed&limit=20"\n',
    "mixed": f"""
local json = {{["Content-Type"] = "application/json"}}
local flips = 0
request = function()
  local pick = math.random(1, 100)
  if pick <= 70 then return {LUA_GET} end
  if pick <= 90 then return {LUA_CREATE} end
  flips = flips + 1
  return {LUA_PATCH}
end
""",
    "health": 'wrk.path = "/health"\n',
}

COLUMNS = "id, title, description, status, created_at, updated_at"
RANDOM_ID = f"\\set id random(1, {SEED_TASKS})\n"
# UPDATE of src/store/sql/tasks.rs for {"status": ...}: $1 id, $2 NULL (title), $3 false (no
# description), $4 NULL, $5 the status, $6 NULL (no If-Match).
PGBENCH_UPDATE = Template(
    "UPDATE bench_tasks SET title = COALESCE(NULL::text, title), "
    "description = CASE WHEN false THEN NULL::text ELSE description END, "
    "status = COALESCE($status::text, status), "
    "updated_at = CASE WHEN (COALESCE(NULL::text, title), "
    "CASE WHEN false THEN NULL::text ELSE description END, COALESCE($status::text, status)) "
    "IS DISTINCT FROM (title, description, status) "
    "THEN greatest(now(), updated_at + interval '1 microsecond') ELSE updated_at END "
    "WHERE id = :id AND (NULL::timestamptz[] IS NULL OR updated_at = ANY(NULL::timestamptz[])) "
    f"RETURNING {COLUMNS};\n")
PGBENCH_SCRIPTS = {
    # A row as POST /tasks makes it, returned as POST /tasks returns it.
    "insert.sql": "INSERT INTO bench_tasks (title, description, status) "
                  "VALUES ('bench', 'a task made by make bench', 'pending') "
                  f"RETURNING {COLUMNS};\n",
    "get.sql": RANDOM_ID + f"SELECT {COLUMNS} FROM bench_tasks WHERE id = :id;\n",
    "update.sql": RANDOM_ID + "\\set flip random(0, 1)\n\\if :flip\n"
                  + PGBENCH_UPDATE.substitute(status=":completed") + "\\else\n"
                  + PGBENCH_UPDATE.substitute(status=":pending") + "\\endif\n",
    # Client c deletes :first + c * :per and on, one id after the other.
    "delete.sql": "\\set id :first + :client_id * :per + :n\n\\set n :n + 1\n"
                  "DELETE FROM bench_deletes WHERE id = :id "
                  "AND (NULL::timestamptz[] IS NULL OR updated_at = ANY(NULL::timestamptz[]));\n",
    "list.sql": f"\\set after 0\n\\set limit 20\n\\set offset 0\nSELECT {COLUMNS} FROM bench_tasks "
                "WHERE id > :after ORDER BY id LIMIT :limit OFFSET :offset;\n",
    "list_status.sql": f"\\set after 0\n\\set limit 20\n\\set offset 0\nSELECT {COLUMNS} "
                       "FROM bench_tasks WHERE status = :status AND id > :after "
                       "ORDER BY id LIMIT :limit OFFSET :offset;\n",
}
# Each scenario's twin: its name in the table, and its pgbench arguments (delete adds its ids).
TWINS = {
    "get_by_id": ("pgbench -S", ["-S"]),
    "create": ("pgbench insert", ["-f", "insert.sql"]),
    "patch": ("pgbench update", ["-f", "update.sql", "-D", "completed=completed",
                                 "-D", "pending=pending"]),
    "delete": ("pgbench delete", ["-f", "delete.sql", "-D", "n=0"]),
    "list": ("pgbench list", ["-f", "list.sql"]),
    "list_status": ("pgbench list_status", ["-f", "list_status.sql", "-D", "status=completed"]),
    "mixed": ("pgbench mixed", ["-f", "get.sql@70", "-f", "insert.sql@20", "-f", "update.sql@10",
                                "-D", "completed=completed", "-D", "pending=pending"]),
}

