"""The fleets the scenarios run against, all on loopback: a PostgreSQL primary and its
streaming standbys (Clusters), task-api replicas (Replica), HAProxy in front of them (Fleet),
and the settings they share. A fleet is of one of two kinds: `failover` (one synchronous
standby the replicas fail over to) or `reads` (two asynchronous standbys the replicas read
from, DATABASE_READ_URL). Its clusters are its own, or shared with other fleets, each on a
database of its own (make test-upgrade's mixed fleets, scripts/upgrade/mixed.py)."""

import collections
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from harness import BINARY as BUILT
from harness.cluster import Cluster, as_owner
from harness.net import free_port
from harness.process import STARTED, Process, install, stop_all
from harness.server import Server

BINARY = Path(os.environ.get("FLEET_BINARY", BUILT))
PASSWORD = "fleet-pw"
DATABASE = "tasks"
REPLICAS = 3
SHUTDOWN_DELAY = 2.0
SHUTDOWN_TIMEOUT = 8.0
READ_MAX_LAG = 1.0  # the default, given explicitly: scenario g waits past it
# HAProxy's health checks: every INTER s; down after FALL failures, up after RISE successes.
INTER, FALL, RISE = 0.5, 1, 2
# The clusters of a fleet's own, by its kind: `failover`, a pair the replicas fail over in;
# `reads`, two asynchronous standbys the replicas read from (DATABASE_READ_URL).
KINDS = {"failover": {"standbys": 1, "synchronous": True}, "reads": {"standbys": 2, "synchronous": False}}
# Every cluster: streaming replication, synchronous where synchronous_standby_names names the
# standby (set with ALTER SYSTEM once it streams, so the base backup does not carry it). fsync
# is off: the faults here kill processes, not the machine, and the page cache outlives them.
PG_OPTIONS = ["-c", "wal_level=replica", "-c", "max_wal_senders=10", "-c", "hot_standby=on",
              "-c", "synchronous_commit=on", "-c", "max_connections=300", "-c", "fsync=off",
              "-c", "wal_sender_timeout=5s", "-c", "wal_receiver_status_interval=1s"]


class Clusters:
    """A primary and `standbys` streaming standbys made from it with pg_basebackup, the first
    of them synchronous when `synchronous` (by default a pair: one synchronous standby, which a
    failover promotes). `tag` goes into the clusters' process titles. The databases are the
    fleets': each creates its own on them."""

    def __init__(self, work, standbys=1, synchronous=True, tag="fleet"):
        def cluster(name):
            return Cluster(work, name, PASSWORD, PG_OPTIONS, app="fleet", tag=tag)

        self.primary = cluster("primary")
        self.standbys = [cluster(f"standby{i + 1}") for i in range(standbys)]
        self.synchronous = synchronous
        self.bindir = self.primary.bindir

    @property
    def standby(self):
        """The standby a failover promotes."""
        return self.standbys[0]

    def start(self):
        p = self.primary
        p.start()
        for s in self.standbys:
            p.base_backup(s)
            s.start()
        sync = "'async'"
        if self.synchronous:
            p.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{self.standby.name}'")
            p.psql("SELECT pg_reload_conf()")
            sync = f"CASE application_name WHEN '{self.standby.name}' THEN 'sync' ELSE 'async' END"
        names = ", ".join(f"'{s.name}'" for s in self.standbys)
        if not p.wait_until(f"count(*) = {len(self.standbys)} FROM pg_stat_replication WHERE application_name "
                            f"IN ({names}) AND state = 'streaming' AND sync_state = {sync}", 30,
                            tolerate_errors=True):
            raise RuntimeError("the standbys did not all stream (the first synchronously, if so set) within 30 s")

    def heal(self):
        """While the primary runs: every standby running (started again after a SIGKILL),
        replaying (resumed after a pause) and caught up with the primary's position now."""
        if self.primary.killed:
            return  # after a failover: the standby is the primary
        lsn = self.primary.psql("SELECT pg_current_wal_lsn()")
        for s in self.standbys:
            if s.killed:
                s.close()  # waits for the processes the SIGKILL left: their shared memory blocks a start
                (s.dir / "postmaster.pid").unlink(missing_ok=True)  # stale; pg_ctl would warn of it
                s.start()
                s.killed = False
            s.psql("SELECT pg_wal_replay_resume()")
            if not s.wait_until(f"pg_last_wal_replay_lsn() >= '{lsn}'", 30, tolerate_errors=True):
                raise RuntimeError(f"{s.name} did not catch up with the primary within 30 s")

    def pause(self, *standbys):
        """Pauses replay on `standbys` (pg_wal_replay_pause); returns once it has stopped."""
        for s in standbys:
            s.psql("SELECT pg_wal_replay_pause()")
            if not s.wait_until("pg_get_wal_replay_pause_state() = 'paused'", 10):
                raise RuntimeError(f"{s.name}'s replay did not pause within 10 s")

    def writable(self):
        """The cluster that takes writes now: the primary, or the standby once promoted."""
        return self.standby if self.primary.killed else self.primary

    def url(self, db):
        """DATABASE_URL: every host, the one that takes writes chosen (target_session_attrs)."""
        hosts = ",".join(f"127.0.0.1:{c.port}" for c in [self.primary, *self.standbys])
        return f"postgresql://postgres:{PASSWORD}@{hosts}/{db}?target_session_attrs=read-write&sslmode=disable"

    def read_url(self, db):
        """DATABASE_READ_URL: every standby, each a pool of its own."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.standbys)
        return f"postgresql://postgres:{PASSWORD}@{hosts}/{db}?sslmode=disable"

    def promote(self):
        subprocess.run(as_owner([self.bindir / "pg_ctl", "promote", "-D", self.standby.dir, "-w", "-t", "30"]),
                       check=True, stdout=subprocess.DEVNULL, timeout=40)

    def close(self):
        for c in [*self.standbys, self.primary]:
            c.close()


class Replica(Server):
    """One `task-api serve` (`binary`, else the build's) on 127.0.0.1:`port`, its output in a log
    of the work directory."""

    numbers = collections.Counter()

    def __init__(self, work, name, url, port=None, env=None, binary=None):
        Replica.numbers[name] += 1
        log = work / f"{name}-{Replica.numbers[name]}.log"
        super().__init__(binary or BINARY, log, url, port, name=name, env={
            "DATABASE_STARTUP_TIMEOUT": "30", "SHUTDOWN_DELAY": f"{SHUTDOWN_DELAY:g}",
            "SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT:g}", **(env or {})})

    def wait_ready(self, limit=30):
        """Polls /ready until 200; the seconds it took. RuntimeError when it exits or runs out of time."""
        started = time.monotonic()
        return self.wait("/ready", limit, timeout=2) - started


class HAProxy:
    """HAProxy in the foreground, in front of `servers` ({name: port}); its stats on a socket."""

    def __init__(self, work, servers):
        self.port = free_port()
        self.cfg = work / "haproxy.cfg"
        self.socket = work / "haproxy.sock"
        if len(str(self.socket)) > 100:  # sun_path holds 108 bytes
            self.socket = Path(tempfile.mkdtemp(prefix="fleet-")) / "haproxy.sock"
        self.log_path = work / "haproxy.log"
        lines = "\n".join(f"    server {name} 127.0.0.1:{port} check" for name, port in servers.items())
        ms = int(INTER * 1000)
        self.cfg.write_text(f"""\
global
    maxconn 4096
    stats socket {self.socket} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 30s
    timeout server 10s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout check 2s
    # A connection refused or closed without an answer (a replica restarting) is retried on
    # another server. POSTs carry an Idempotency-Key, so a retried create is not stored twice.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend api
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter {ms}ms fastinter {ms}ms downinter {ms}ms fall {FALL} rise {RISE}
{lines}
""")
        binary = install("haproxy", "haproxy", "fleet")
        check = subprocess.run([binary, "-c", "-q", "-f", self.cfg], capture_output=True, text=True, timeout=30)
        if check.returncode:
            raise RuntimeError(f"haproxy -c: {(check.stdout + check.stderr).strip()}")
        with open(self.log_path, "ab") as log:
            self.process = Process([binary, "-f", str(self.cfg), "-db"], os.environ.copy(), stdout=log, stderr=log)
        STARTED.append(self)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if not self.process.running() or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {self.log_path.read_text()[-500:]}")
            time.sleep(0.05)

    def stats(self):
        """`show stat`: {svname: {column: value}} of the replicas backend."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "replicas":
                rows[row["svname"]] = row
        return rows

    def wait_up(self, name, limit=15, status="UP"):
        """Waits until HAProxy has `name` UP (or `status`); the seconds it took (RuntimeError after
        `limit`)."""
        started = time.monotonic()
        while time.monotonic() < started + limit:
            if self.stats().get(name, {}).get("status") == status:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"HAProxy did not mark {name} {status} within {limit} s")

    def counters(self):
        backend = self.stats().get("BACKEND", {})
        return {k: int(backend.get(k) or 0) for k in ("wretr", "wredis")}

    def close(self):
        self.process.close()


# --- the fleet ------------------------------------------------------------------------------

class Fleet:
    """A fleet of `kind` in the directory `work`: the replicas r1, r2, … of `binary` on the
    database `database` of the clusters (its own, made for `kind`; or `pg`, shared with other
    fleets, each on a database of its own), and HAProxy in front of them. `spares` name servers
    HAProxy has with no replica yet (their ports in `ports`), for a replica to join later."""

    def __init__(self, work, kind="failover", pg=None, database=DATABASE, binary=BINARY, spares=()):
        self.kind = kind
        self.work = work
        self.work.mkdir(exist_ok=True)
        self.work.chmod(0o755)  # as root, the clusters inside run as `postgres`
        self.own_pg = pg is None
        self.pg = pg or Clusters(work, **KINDS[kind], tag=f"fleet{kind}")
        self.database = database
        self.binary = binary
        self.spares = list(spares)
        self.replicas = {}
        self.ports = {}
        self.haproxy = None

    @property
    def url(self):
        """The replicas' DATABASE_URL."""
        return self.pg.url(self.database)

    def replica(self, name, port=None, db=None, binary=None, **env):
        """A replica of `binary` (else the fleet's) started on `port` (or a free one) with this
        fleet's URLs for `db` (else the fleet's database) and `env` on top."""
        db = db or self.database
        if self.kind == "reads":
            env = {"DATABASE_READ_URL": self.pg.read_url(db), "READ_MAX_LAG": f"{READ_MAX_LAG:g}", **env}
        return Replica(self.work, name, self.pg.url(db), port, env, binary or self.binary)

    def start(self):
        if self.own_pg:
            self.pg.start()
        self.pg.writable().psql(f'CREATE DATABASE "{self.database}"')
        self.ports = {name: free_port() for name in [f"r{i + 1}" for i in range(REPLICAS)] + self.spares}
        self.replicas = {name: self.replica(name, port) for name, port in self.ports.items()
                         if name not in self.spares}
        for r in self.replicas.values():
            r.wait_ready(60)
        self.haproxy = HAProxy(self.work, self.ports)
        for name in self.ports:
            self.haproxy.wait_up(name, status="DOWN" if name in self.spares else "UP")

    def heal(self):
        """The standbys healed (Clusters.heal); any replica that is not running started again;
        then waits until HAProxy has all UP."""
        self.pg.heal()
        for name, r in list(self.replicas.items()):
            if not r.process.running():
                self.replicas[name] = self.replica(name, r.port)
                self.replicas[name].wait_ready(30)
        for name in self.replicas:
            self.haproxy.wait_up(name, 30)

    def logs(self):
        return [r.log_path for r in self.replicas.values()] + [self.haproxy.log_path]

    def close(self):
        """Stops the replicas (at once: the next fleet needs the cores) and HAProxy; the clusters
        too when they are the fleet's own."""
        stop_all([r.process for r in self.replicas.values()], SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT + 5)
        if self.haproxy:
            self.haproxy.close()
        if self.own_pg:
            self.pg.close()
