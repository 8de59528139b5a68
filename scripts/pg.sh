#!/usr/bin/env bash
# A local PostgreSQL cluster in a directory of ours, for `make run`, `make test`,
# `make bench` and the tests that need a server of their own (TLS, late start).
#
#   scripts/pg.sh start DIR PORT [--ssl CERT KEY] [-- SERVER_OPTION...]
#       install PostgreSQL if missing (as root, from the distribution), initdb DIR
#       if it is new, start the server on 127.0.0.1:PORT unless it already runs.
#       Host connections need a password: $PG_PASSWORD, default "postgres".
#   scripts/pg.sh createdb DIR NAME   create database NAME if it does not exist
#   scripts/pg.sh stop DIR            stop the server (fast shutdown)
#   scripts/pg.sh port DIR            print the running server's port
#   scripts/pg.sh bindir              print the server's bin directory
#
# initdb refuses root, so as root everything runs as the `postgres` user.
set -euo pipefail

find_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z $dir ]] && command -v pg_ctl >/dev/null; then dir=$(dirname "$(command -v pg_ctl)"); fi
  echo "$dir"
}

bindir() {
  local dir
  dir=$(find_bindir)
  if [[ -z $dir ]]; then
    if [[ $(id -u) != 0 ]]; then
      echo "pg.sh: no PostgreSQL server found; install it (sudo apt-get install postgresql)" >&2
      exit 1
    fi
    # Parallel tests start clusters at once: one installs, the others wait (pgbouncer.sh's lock too).
    exec 9>/tmp/task-api-apt.lock
    flock 9
    dir=$(find_bindir)
    if [[ -z $dir ]]; then
      echo "pg.sh: installing PostgreSQL from the distribution" >&2
      apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq postgresql >/dev/null
      dir=$(find_bindir)
    fi
    exec 9>&-
  fi
  echo "$dir"
}

# Runs a server binary as the cluster's owner.
as_owner() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local dir port bin
  dir=$(realpath -m "$1"); port=$2; shift 2
  bin=$(bindir)
  local options=(-c listen_addresses=127.0.0.1 -c "port=$port" -c "unix_socket_directories=$dir")
  mkdir -p "$dir"
  [[ $(id -u) == 0 ]] && chown postgres: "$dir" && chmod 700 "$dir"
  if [[ ! -f $dir/PG_VERSION ]]; then
    local pwfile="$dir.pw"
    printf '%s\n' "${PG_PASSWORD:-postgres}" >"$pwfile"
    [[ $(id -u) == 0 ]] && chown postgres: "$pwfile"
    as_owner "$bin/initdb" -D "$dir" -U postgres -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
  fi
  while (($#)); do
    case $1 in
      --ssl)
        install -m 600 "$2" "$dir/server.crt"
        install -m 600 "$3" "$dir/server.key"
        [[ $(id -u) == 0 ]] && chown postgres: "$dir/server.crt" "$dir/server.key"
        options+=(-c ssl=on -c "ssl_cert_file=$dir/server.crt" -c "ssl_key_file=$dir/server.key")
        shift 3 ;;
      --) shift; options+=("$@"); break ;;
      *) echo "pg.sh: unknown option $1" >&2; exit 2 ;;
    esac
  done
  if as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    echo "pg.sh: already running in $dir" >&2
    return
  fi
  as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 -o "${options[*]}" start >/dev/null \
    || { tail -n 20 "$dir/server.log" >&2; exit 1; }
}

# The running server's port: the fourth line of its postmaster.pid.
port() { sed -n 4p "$(realpath -m "$1")/postmaster.pid"; }

createdb() {
  local dir bin port
  dir=$(realpath -m "$1"); bin=$(bindir); port=$(port "$dir")
  as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$2'" | grep -q 1 \
    || as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -qc "CREATE DATABASE \"$2\""
}

stop() {
  local dir
  dir=$(realpath -m "$1")
  [[ -f $dir/postmaster.pid ]] || return 0
  as_owner "$(bindir)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
}

case ${1:-} in
  start) shift; start "$@" ;;
  createdb) shift; createdb "$@" ;;
  stop) shift; stop "$@" ;;
  port) shift; port "$@" ;;
  bindir) bindir ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
