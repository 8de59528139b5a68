#!/usr/bin/env bash
# A PgBouncer of a test's or a benchmark's own, in transaction mode, in front of a
# PostgreSQL on loopback: what hosted "pooled" connection strings give users.
#
#   scripts/pgbouncer.sh start DIR PORT PG_PORT USER PASSWORD
#       install pgbouncer if missing (as root, from the distribution), write DIR's
#       config and start it on 127.0.0.1:PORT; any database name maps to the one of the
#       same name on 127.0.0.1:PG_PORT. As root it runs as the `postgres` user
#       (pgbouncer refuses root).
#   scripts/pgbouncer.sh stop DIR
set -euo pipefail

as_owner() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

find_bin() {
  command -v pgbouncer || { [[ -x /usr/sbin/pgbouncer ]] && echo /usr/sbin/pgbouncer; } || true
}

start() {
  local dir port pg_port user password bin
  dir=$(realpath -m "$1"); port=$2; pg_port=$3; user=$4; password=$5
  bin=$(find_bin)
  if [[ -z $bin ]]; then
    [[ $(id -u) == 0 ]] || { echo "pgbouncer.sh: install pgbouncer" >&2; exit 1; }
    # Parallel tests start PgBouncers at once: one installs, the others wait (pg.sh's lock too).
    exec 9>/tmp/task-api-apt.lock
    flock 9
    bin=$(find_bin)
    if [[ -z $bin ]]; then
      echo "pgbouncer.sh: installing pgbouncer from the distribution" >&2
      apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq pgbouncer >/dev/null
      bin=$(find_bin)
    fi
    exec 9>&-
  fi
  mkdir -p "$dir"
  printf '"%s" "%s"\n' "$user" "$password" >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 2000
max_db_connections = 40
server_lifetime = 3600
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  [[ $(id -u) == 0 ]] && chown -R postgres: "$dir" && chmod 700 "$dir"
  as_owner "$bin" -d "$dir/pgbouncer.ini"
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "pgbouncer.sh: pgbouncer did not listen on $port" >&2
  tail -n 20 "$dir/pgbouncer.log" >&2 || true
  exit 1
}

stop() {
  local dir pid
  dir=$(realpath -m "$1")
  [[ -f $dir/pgbouncer.pid ]] || return 0
  pid=$(cat "$dir/pgbouncer.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

case ${1:-} in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
