"""A throwaway PostgreSQL on 127.0.0.1, in a directory of the tool's work directory,
started and stopped by scripts/pg.sh (which installs PostgreSQL as root and runs it as
`postgres`); psql for everything asked of it."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import ROOT
from .net import free_port
from .process import STARTED

PG_SH = ROOT / "scripts/pg.sh"


def pg_bindir():
    return Path(subprocess.run([PG_SH, "bindir"], check=True, capture_output=True, text=True).stdout.strip())


def as_owner(argv):
    """A PostgreSQL command run as the clusters' owner: `postgres` when we are root."""
    return ["runuser", "-u", "postgres", "--", *map(str, argv)] if os.geteuid() == 0 else list(map(str, argv))


class Cluster:
    """One PostgreSQL cluster. Its processes carry `cluster_name` (`tag` + name) in their
    titles, so that what a SIGKILL left behind can be found; `app` is the application_name
    of the tool's own sessions."""

    def __init__(self, work, name, password, options=(), app="harness", tag="pg"):
        self.dir = work / name
        self.name = f"{tag}{os.getpid()}{name.replace('-', '')}"  # its cluster_name
        self.port = free_port()
        self.password = password
        self.options = list(options)
        self.app = app
        self.bindir = pg_bindir()
        self.killed = False
        STARTED.append(self)

    def start(self):
        options = self.options + ["-c", f"cluster_name={self.name}"]
        subprocess.run([PG_SH, "start", self.dir, str(self.port), "--", *options], check=True,
                       env=dict(os.environ, PG_PASSWORD=self.password), stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run([PG_SH, "stop", self.dir], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)

    def url(self, db, user="postgres", password=None, port=None):
        return (f"postgres://{user}:{password or self.password}@127.0.0.1:{port or self.port}/{db}"
                "?sslmode=disable")

    def env(self, app=None):
        return dict(os.environ, PGPASSWORD=self.password, PGCONNECT_TIMEOUT="5", PGAPPNAME=app or self.app)

    def psql_argv(self, db):
        return [self.bindir / "psql", "-X", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db]

    def psql(self, sql, db="postgres", timeout=30):
        """Runs `sql` (read from stdin: it may be long, and hold several statements); its
        output (unaligned, tuples only), stripped."""
        out = subprocess.run([*self.psql_argv(db), "-qAt", "-v", "ON_ERROR_STOP=1", "-f", "-"],
                             input=sql, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if out.returncode:
            raise RuntimeError(f"psql on :{self.port}: {out.stderr.strip()}")
        return out.stdout.strip()

    def createdb(self, name):
        """Creates database `name`; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def base_backup(self, standby):
        """Makes `standby`'s directory a base backup of this cluster that streams from it
        (pg_basebackup -R), through a replication slot named as `standby` is."""
        hba = self.dir / "pg_hba.conf"
        rule = "host replication all 127.0.0.1/32 scram-sha-256"
        if not any(line.split() == rule.split() for line in hba.read_text().splitlines()):
            with open(hba, "a") as f:
                f.write(rule + "\n")
            self.psql("SELECT pg_reload_conf()")
        standby.dir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(standby.dir, "postgres", "postgres")
        # -R writes this into the standby's primary_conninfo: its application_name is the name
        # synchronous_standby_names gives.
        conninfo = (f"host=127.0.0.1 port={self.port} user=postgres password={self.password} "
                    f"application_name={standby.name}")
        backup = subprocess.run(as_owner([self.bindir / "pg_basebackup", "-d", conninfo, "-D", standby.dir, "-R",
                                          "-X", "stream", "-c", "fast", "-C", "-S", standby.name]),
                                env=self.env(), capture_output=True, text=True, timeout=120)
        if backup.returncode:
            raise RuntimeError(f"pg_basebackup: {backup.stderr.strip()[-500:]}")

    def wait_until(self, condition, limit, db="postgres", tolerate_errors=False):
        """Polls the SQL boolean `condition` until true; whether it became true within `limit`
        s. A failing psql raises, unless `tolerate_errors` (a server restarting)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                if self.psql(f"SELECT {condition}", db, timeout=5 if tolerate_errors else 30) == "t":
                    return True
            except (RuntimeError, subprocess.TimeoutExpired):
                if not tolerate_errors:
                    raise
            time.sleep(0.1)
        return False

    def postmaster_pid(self):
        return int((self.dir / "postmaster.pid").read_text().split()[0])

    def leftovers(self):
        """The pids of this cluster's processes still alive (their titles carry cluster_name)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline.startswith(f"postgres: {self.name}:".encode()):
                    pids.append(int(entry.name))
        return pids

    def kill(self):
        """SIGKILL to the postmaster: the machine's view of a crashed server."""
        os.kill(self.postmaster_pid(), signal.SIGKILL)
        self.killed = True

    def close(self):
        if not self.killed:
            self.stop()
            return
        # Its children leave on their own once they see the postmaster gone; the stragglers go.
        deadline = time.monotonic() + 5
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
