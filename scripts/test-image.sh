#!/usr/bin/env bash
# Proves the container image with the real thing (`make test-image`): builds it from
# `make build`'s binary (`make image-local`), checks what is in it, then runs it
# read-only, without capabilities, against a real PostgreSQL on this host: migrations,
# CRUD over HTTP, both probes, a database outage, and `docker stop`.
#
# Uses Docker when a daemon answers, else ../shared/tools/container-engine (Podman
# serving the Docker API). Podman runs no HEALTHCHECKs: the probe is run with exec.
# Removes its container, images and database cluster on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s%N)
run_id=$$
image_name=task-api-test-$run_id
container=task-api-test-$run_id
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
image=$image_name:$version
tmp=$(mktemp -d)
chmod 755 "$tmp" # pg.sh runs the server as `postgres`, which must reach its directory
pg_dir=$tmp/pgdata
passed=0
failed=0

say() { printf '\n== %s\n' "$*"; }
die() { printf 'test-image: %s\n' "$*" >&2; exit 1; }
ok() { passed=$((passed + 1)); printf '  ok    %s\n' "$1"; }
not_ok() { failed=$((failed + 1)); printf '  FAIL  %s\n' "$1" >&2; }
# expect WHAT ACTUAL WANTED
expect() { if [[ $2 == "$3" ]]; then ok "$1"; else not_ok "$1: got '$2', want '$3'"; fi; }
# check WHAT COMMAND...: passes when the command succeeds
check() { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
lacks() { ! grep -qF -- "$1" "$2"; }
# Reads the whole log first: grep -q quitting early would fail the pipe (pipefail).
log_says() { docker logs "$container" >"$tmp/container.log" 2>&1; grep -qF -- "$1" "$tmp/container.log"; }
untagged_images() { docker images -a --format '{{.ID}} {{.Repository}}' 2>/dev/null | awk '$2 == "<none>" {print $1}' | sort; }

cleanup() {
  local rc=$?
  set +e
  if docker container inspect "$container" >/dev/null 2>&1; then
    ((rc == 0)) || { echo "--- container log (last 30 lines)" >&2; docker logs "$container" 2>&1 | tail -n 30 >&2; }
    docker rm -f "$container" >/dev/null 2>&1
  fi
  for tag in "$version" latest "$revision"; do docker rmi "$image_name:$tag" >/dev/null 2>&1; done
  # The build's intermediate images: the untagged ones that were not here before it.
  if [[ -f $tmp/images.before ]]; then
    comm -13 "$tmp/images.before" <(untagged_images) | xargs -r docker rmi >/dev/null 2>&1
  fi
  scripts/pg.sh stop "$pg_dir" 2>/dev/null
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port no listener holds, below the kernel's ephemeral range: a port in that range may
# be the local end of some connection, which nothing answers but no server can bind.
free_port() {
  local port first=20000 span=40000 low high
  read -r low high </proc/sys/net/ipv4/ip_local_port_range
  if ((low > 21000)); then
    span=$((low - first))
  elif ((high < 64000)); then
    first=$((high + 1)) span=$((65535 - high))
  fi
  for _ in $(seq 100); do
    port=$((first + RANDOM % span))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  die "no free port found"
}

# http METHOD PATH [JSON]: sets $status and $body ($tmp/headers keeps the headers).
http() {
  local args=(-sS -X "$1" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' --max-time 10)
  [[ -n ${3-} ]] && args+=(-H 'content-type: application/json' --data "$3")
  status=$(curl "${args[@]}" "http://127.0.0.1:$app_port$2")
  body=$(cat "$tmp/body")
}

# probe [--ready]: the image's own HEALTHCHECK command, run the way Docker would.
probe() { docker exec "$container" /app healthcheck "$@" >"$tmp/probe.out" 2>&1; }

psql_tasks() {
  PGPASSWORD=$pg_password "$(scripts/pg.sh bindir)/psql" -h 127.0.0.1 -p "$pg_port" -U postgres \
    -d tasks -tAc "$1"
}

say "container engine"
command -v docker >/dev/null || die "needs the docker CLI (it talks to Docker, or to Podman's Docker API)"
if ! docker info >/dev/null 2>&1; then
  engine_tool=${CONTAINER_ENGINE_TOOL:-../shared/tools/container-engine}
  [[ -x $engine_tool ]] || die "no Docker daemon and no $engine_tool to start Podman"
  # From /: the Podman service it starts keeps its working directory, and conmon fails
  # ("Failed to get working directory") once a checkout it started in is deleted.
  engine_tool=$(realpath "$engine_tool")
  (cd / && "$engine_tool" up)
fi
command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
docker version --format 'client {{.Client.Version}}, server {{.Server.Version}}'

say "PostgreSQL on the host"
# A password of this run's own: it must not turn up anywhere in the image.
pg_password=img-test-$RANDOM$RANDOM$RANDOM
pg_port=$(free_port)
PG_PASSWORD=$pg_password scripts/pg.sh start "$pg_dir" "$pg_port"
app_port=$(free_port) # after the server took its port, so the two cannot collide
scripts/pg.sh createdb "$pg_dir" tasks
database_url="postgres://postgres:$pg_password@127.0.0.1:$pg_port/tasks?sslmode=disable"
echo "127.0.0.1:$pg_port"

say "build: make image-local (the prebuilt path; no builder image is pulled)"
# Built with the database URL in the environment, as a developer's shell may have it.
untagged_images >"$tmp/images.before" || rm -f "$tmp/images.before" # no list, no clean-up of them
DATABASE_URL=$database_url make --no-print-directory image-local IMAGE_NAME="$image_name"

say "what is in the image"
size=$(docker image inspect -f '{{.Size}}' "$image")
check "image is under 10 MB ($size bytes)" test "$size" -lt 10485760
mkdir "$tmp/saved"
docker save -o "$tmp/saved/image.tar" "$image"
tar -xf "$tmp/saved/image.tar" -C "$tmp/saved"
config_file=$tmp/saved/$(jq -r '.[0].Config' "$tmp/saved/manifest.json")
mapfile -t layers < <(jq -r '.[0].Layers[]' "$tmp/saved/manifest.json")
files=$(for layer in "${layers[@]}"; do tar -tf "$tmp/saved/$layer"; done | sort | paste -sd ' ')
expect "the image holds one file, /app" "$files" "app"
mkdir "$tmp/rootfs"
for layer in "${layers[@]}"; do tar -xf "$tmp/saved/$layer" -C "$tmp/rootfs"; done
expect "/app is root-owned and not writable by its user" \
  "$(stat -c '%u:%g %A' "$tmp/rootfs/app")" "0:0 -rwxr-xr-x"
check "/app is byte for byte the binary make build made" \
  cmp -s "$tmp/rootfs/app" target/x86_64-unknown-linux-musl/release/task-api
# The config as pushed to a registry: Podman's Docker API leaves Healthcheck out of
# `docker image inspect`, the saved image keeps it.
config=$(jq -c '.config' "$config_file")
expect "user is 65534:65534" "$(jq -r '.User' <<<"$config")" "65534:65534"
expect "HEALTHCHECK runs /app healthcheck every 10s, 3s timeout, 10s start, 3 retries" \
  "$(jq -c '.Healthcheck' <<<"$config")" \
  '{"Test":["CMD","/app","healthcheck"],"Interval":10000000000,"Timeout":3000000000,"StartPeriod":10000000000,"Retries":3}'
expect "docker image inspect shows the user too" "$(docker image inspect -f '{{.Config.User}}' "$image")" "65534:65534"
expect "entrypoint /app, command serve" "$(jq -c '[.Entrypoint, .Cmd]' <<<"$config")" '[["/app"],["serve"]]'
expect "exposes 8000/tcp" "$(jq -c '.ExposedPorts | keys' <<<"$config")" '["8000/tcp"]'
expect "stop signal SIGTERM" "$(jq -r '.StopSignal' <<<"$config")" "SIGTERM"
expect "environment is PATH and PORT=8000 only" "$(jq -c '[.Env[] | sub("=.*"; "")]' <<<"$config")" '["PATH","PORT"]'
check "PORT=8000 in the environment" jq -e '.Env | index("PORT=8000")' <<<"$config" >/dev/null
labels=$(docker image inspect -f '{{json .Config.Labels}}' "$image")
for key in source version revision created title description licenses; do
  value=$(jq -r --arg k "org.opencontainers.image.$key" '.[$k] // ""' <<<"$labels")
  check "label org.opencontainers.image.$key is set ($value)" test -n "$value"
done
expect "version label is Cargo.toml's" "$(jq -r '.["org.opencontainers.image.version"]' <<<"$labels")" "$version"
expect "revision label is the git commit" "$(jq -r '.["org.opencontainers.image.revision"]' <<<"$labels")" "$revision"
created=$(jq -r '.["org.opencontainers.image.created"]' <<<"$labels")
check "created label is this build's UTC time ($created)" \
  test "$(date -u -d "$created" +%s 2>/dev/null || echo 0)" -ge $((started / 1000000000 - 1))
docker history --no-trunc "$image" >"$tmp/history"
cat "$config_file" "$tmp/history" >"$tmp/metadata"
for secret in "$pg_password" "DATABASE_URL" "$PWD" "$tmp" "$HOME"; do
  check "no '$secret' in the image's history or config" lacks "$secret" "$tmp/metadata"
done
for secret in "$pg_password" "$PWD"; do
  check "no '$secret' inside /app" lacks "$secret" "$tmp/rootfs/app"
done

say "run: read-only, no capabilities, host network"
run_started=$(date +%s%N)
docker run -d --name "$container" --read-only --cap-drop ALL --security-opt no-new-privileges \
  --network host -e DATABASE_URL="$database_url" -e PORT="$app_port" "$image" >/dev/null
cold_start_ms=
for _ in $(seq 300); do
  if probe; then cold_start_ms=$(ms_since "$run_started"); break; fi
  [[ $(docker inspect -f '{{.State.Running}}' "$container") == true ]] || die "the container exited"
  sleep 0.1
done
[[ -n $cold_start_ms ]] || die "no healthy probe within 30 s"
ok "docker exec C /app healthcheck exits 0 (${cold_start_ms} ms after docker run)"
expect "the probe says OK and where" "$(cat "$tmp/probe.out")" "OK: http://127.0.0.1:$app_port/health"
check "docker exec C /app healthcheck --ready exits 0" probe --ready
pid=$(docker inspect -f '{{.State.Pid}}' "$container")
expect "the process runs as uid 65534" "$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")" "65534 65534 65534 65534"
expect "the process runs as gid 65534" "$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")" "65534 65534 65534 65534"
expect "the process has no capabilities" "$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")" "0000000000000000"
# Every migration in sql/, each applied once: one log line and one history row apiece.
migrations=$(printf '%s\n' sql/V*__*.sql | sed 's|^sql/||; s/\.sql$//' | sort -V)
versions=()
for migration in $migrations; do
  check "the log says $migration was applied" log_says "applied migration $migration"
  version=${migration%%__*}
  versions+=("${version#V}")
done
expect "refinery_schema_history holds each migration once" \
  "$(psql_tasks 'SELECT version FROM refinery_schema_history ORDER BY version' | paste -sd' ')" \
  "${versions[*]}"

say "CRUD over HTTP"
http POST /tasks '{"title":"ship the image","description":"FROM scratch"}'
expect "POST /tasks: 201" "$status" "201"
id=$(jq -r '.id' <<<"$body")
expect "POST /tasks: the task as sent, pending" "$(jq -c '[.title, .description, .status]' <<<"$body")" \
  '["ship the image","FROM scratch","pending"]'
expect "POST /tasks: location /tasks/$id" \
  "$(tr -d '\r' <"$tmp/headers" | awk -F': ' 'tolower($1) == "location" {print $2}')" "/tasks/$id"
http GET "/tasks/$id"
expect "GET /tasks/$id: 200 with the title" "$status $(jq -r '.title' <<<"$body")" "200 ship the image"
http GET /tasks
expect "GET /tasks: 200 listing it" "$status $(jq -c '[.[].id]' <<<"$body")" "200 [$id]"
http PATCH "/tasks/$id" '{"status":"completed"}'
expect "PATCH /tasks/$id: 200, completed" "$status $(jq -r '.status' <<<"$body")" "200 completed"
http POST /tasks '{"title":"   "}'
expect "POST a blank title: 422 naming the field" "$status $(jq -r '.detail' <<<"$body")" "422 title: must not be empty"
http DELETE "/tasks/$id"
expect "DELETE /tasks/$id: 204" "$status" "204"
http GET "/tasks/$id"
expect "GET after DELETE: 404" "$status $body" '404 {"detail":"Task not found"}'
expect "the table is empty again" "$(psql_tasks 'SELECT count(*) FROM tasks')" "0"
sleep 1
idle_rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")

say "database outage"
scripts/pg.sh stop "$pg_dir"
if probe --ready; then not_ok "--ready exits 1 with the database stopped"; else ok "--ready exits 1 with the database stopped"; fi
check "--ready says why: HTTP 503" grep -q "healthcheck failed: .*HTTP 503" "$tmp/probe.out"
check "liveness still exits 0 (it never touches the database)" probe
PG_PASSWORD=$pg_password scripts/pg.sh start "$pg_dir" "$pg_port"
recovered=false
for _ in $(seq 100); do if probe --ready; then recovered=true; break; fi; sleep 0.2; done
expect "--ready exits 0 again within 20 s of the database's return" "$recovered" true

say "docker stop"
stop_started=$(date +%s%N)
docker stop -t 10 "$container" >/dev/null
stop_ms=$(ms_since "$stop_started")
expect "exit code 0 after SIGTERM" "$(docker inspect -f '{{.State.ExitCode}}' "$container")" "0"
check "stopped within SHUTDOWN_TIMEOUT (8 s): ${stop_ms} ms" test "$stop_ms" -lt 8000
check "the log says SIGTERM arrived" log_says "SIGTERM received; draining"
check "the log says it stopped" log_says "INFO  task_api::http: stopped"

say "summary"
echo "image         $image: $size bytes ($(docker images --format '{{.Size}}' "$image" | awk 'NR == 1')), ${#layers[@]} layer(s)"
echo "cold start    ${cold_start_ms} ms from docker run to the first healthy probe"
echo "idle memory   ${idle_rss_kb} kB RSS"
echo "docker stop   ${stop_ms} ms"
echo "wall time     $(($(ms_since "$started") / 1000)) s"
echo "test-image: $passed passed, $failed failed"
((failed == 0))
