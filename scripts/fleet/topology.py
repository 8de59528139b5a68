"""The fleet the scenarios run against: a PostgreSQL primary and its synchronous streaming
standby (Pair), task-api replicas (Replica) and HAProxy in front of them, all on loopback,
and the settings they share."""

import collections
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from harness import BINARY as BUILT
from harness.cluster import Cluster, as_owner
from harness.net import free_port
from harness.process import STARTED, Process, install
from harness.server import Server

BINARY = Path(os.environ.get("FLEET_BINARY", BUILT))
PASSWORD = "fleet-pw"
DATABASE = "tasks"
REPLICAS = 3
SHUTDOWN_DELAY = 2.0
SHUTDOWN_TIMEOUT = 8.0
# HAProxy's health checks: every INTER s; down after FALL failures, up after RISE successes.
INTER, FALL, RISE = 0.5, 1, 2
# Both clusters: streaming replication, synchronous (synchronous_standby_names is set with
# ALTER SYSTEM once the standby streams, so the base backup does not carry it). fsync is
# off: the faults here kill processes, not the machine, and the page cache outlives them.
PG_OPTIONS = ["-c", "wal_level=replica", "-c", "max_wal_senders=10", "-c", "hot_standby=on",
              "-c", "synchronous_commit=on", "-c", "max_connections=300", "-c", "fsync=off",
              "-c", "wal_sender_timeout=5s", "-c", "wal_receiver_status_interval=1s"]


class Pair:
    """A primary and a streaming standby made from it with pg_basebackup, synchronous."""

    def __init__(self, work):
        self.primary = Cluster(work, "primary", PASSWORD, PG_OPTIONS, app="fleet", tag="fleet")
        self.standby = Cluster(work, "standby", PASSWORD, PG_OPTIONS, app="fleet", tag="fleet")
        self.bindir = self.primary.bindir

    def start(self):
        p, s = self.primary, self.standby
        p.start()
        hba = p.dir / "pg_hba.conf"
        rule = "host replication all 127.0.0.1/32 scram-sha-256"
        if not any(line.split() == rule.split() for line in hba.read_text().splitlines()):
            with open(hba, "a") as f:
                f.write(rule + "\n")
            p.psql("SELECT pg_reload_conf()")
        s.dir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(s.dir, "postgres", "postgres")
        # -R writes this into the standby's primary_conninfo: its application_name is the name
        # synchronous_standby_names gives.
        conninfo = f"host=127.0.0.1 port={p.port} user=postgres password={PASSWORD} application_name={s.name}"
        backup = subprocess.run(as_owner([self.bindir / "pg_basebackup", "-d", conninfo, "-D", s.dir, "-R",
                                          "-X", "stream", "-c", "fast", "-C", "-S", s.name]),
                                env=p.env(), capture_output=True, text=True, timeout=120)
        if backup.returncode:
            raise RuntimeError(f"pg_basebackup: {backup.stderr.strip()[-500:]}")
        s.start()
        p.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{s.name}'")
        p.psql("SELECT pg_reload_conf()")
        if not p.wait_until(f"EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = '{s.name}' "
                            "AND state = 'streaming' AND sync_state = 'sync')", 30, tolerate_errors=True):
            raise RuntimeError("the standby did not become a synchronous streaming standby within 30 s")

    def writable(self):
        """The cluster that takes writes now: the primary, or the standby once promoted."""
        return self.standby if self.primary.killed else self.primary

    def url(self, db):
        return (f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
                f"/{db}?target_session_attrs=read-write&sslmode=disable")

    def promote(self):
        subprocess.run(as_owner([self.bindir / "pg_ctl", "promote", "-D", self.standby.dir, "-w", "-t", "30"]),
                       check=True, stdout=subprocess.DEVNULL, timeout=40)



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
    """The pair of clusters (its own, or `pair` shared with another fleet), the replicas of
    `binary` on `database`, and HAProxy in front of them; `spares` name servers HAProxy has with
    no replica yet (their ports in `ports`), for a replica to join later."""

    def __init__(self, work, pair=None, database=DATABASE, binary=BINARY, spares=()):
        self.work = work
        self.own_pair = pair is None
        self.pair = pair or Pair(work)
        self.database = database
        self.binary = binary
        self.spares = list(spares)
        self.replicas = {}
        self.ports = {}
        self.haproxy = None

    @property
    def url(self):
        return self.pair.url(self.database)

    def start(self):
        if self.own_pair:
            self.pair.start()
        self.pair.writable().psql(f'CREATE DATABASE "{self.database}"')
        self.ports = {name: free_port() for name in [f"r{i + 1}" for i in range(REPLICAS)] + self.spares}
        self.replicas = {name: Replica(self.work, name, self.url, port, binary=self.binary)
                         for name, port in self.ports.items() if name not in self.spares}
        for r in self.replicas.values():
            r.wait_ready(60)
        self.haproxy = HAProxy(self.work, self.ports)
        for name in self.ports:
            self.haproxy.wait_up(name, status="DOWN" if name in self.spares else "UP")

    def heal(self):
        """Starts again any replica that is not running, and waits until HAProxy has all UP."""
        for name, r in list(self.replicas.items()):
            if not r.process.running():
                self.replicas[name] = Replica(self.work, name, self.url, r.port, binary=self.binary)
                self.replicas[name].wait_ready(30)
        for name in self.replicas:
            self.haproxy.wait_up(name, 30)

    def logs(self):
        return [r.log_path for r in self.replicas.values()] + [self.haproxy.log_path]
