"""One `task-api serve` as the tools run it: the release binary on a port of its own,
its stdout and stderr in a log file, waited for until /health (or /ready) answers 200."""

import asyncio
import os
import socket
import time

from .http import call
from .net import free_port
from .process import Proc, Process


class Server:
    """`binary serve` on 127.0.0.1:`port` (every address when `host` is None); `prefix`
    goes before the binary (prlimit ...); `env` adds to or overrides the defaults."""

    def __init__(self, binary, log_path, url, port=None, env=None, host="127.0.0.1", prefix=(),
                 name="server"):
        self.name = name
        self.port = port or free_port(socket.AF_INET6 if host is None else socket.AF_INET)
        self.log_path = log_path
        full = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url, "PORT": str(self.port),
                "LOG_LEVEL": "info"}
        if host:
            full["HOST"] = host
        full.update(env or {})
        with open(log_path, "ab") as log:
            self.process = Process([*prefix, str(binary), "serve"], full, stdout=log, stderr=log)
        self.proc = Proc(self.process.pid)

    @property
    def pid(self):
        return self.process.pid

    def wait(self, path="/health", limit=20, every=0.05, timeout=1):
        """Asks `path` until it answers 200; the monotonic time it did. RuntimeError when the
        server exits first, or after `limit` s."""

        async def ask():
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                if not self.process.running():
                    raise RuntimeError(f"{self.name} exited with {self.process.popen.returncode} before {path}")
                if (await call(self.port, "GET", path, timeout=timeout)).status == 200:
                    return time.monotonic()
                await asyncio.sleep(every)
            raise RuntimeError(f"{self.name} did not answer {path} 200 within {limit} s")

        return asyncio.run(ask())

    def output(self):
        return self.log_path.read_bytes().decode(errors="backslashreplace")

    def metrics(self):
        return asyncio.run(call(self.port, "GET", "/metrics", timeout=3)).body.decode(errors="replace")
