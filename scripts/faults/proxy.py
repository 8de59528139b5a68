"""A TCP proxy between task-api and PostgreSQL that can freeze, for the abandoned scenario:
what a database on a dead network path looks like to the server."""

import select
import socket
import threading
import time
from dataclasses import dataclass

from harness.net import Listener


@dataclass
class Link:
    """One connection through the Proxy: the server's side and the database's."""
    down: socket.socket
    up: socket.socket
    dropped: float | None = None  # seconds into the freeze when the server hung up
    ended: float | None = None  # when it ended, for whatever reason

    def end(self, reset=False):
        if self.ended is None:
            self.ended = time.monotonic()
            for s in (self.down, self.up):
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()


class Proxy(Listener):
    """A TCP proxy to PostgreSQL that can freeze: forward nothing, keep every socket open.

    While frozen it watches the server's side of each connection for a hang-up (POLLRDHUP)
    without reading it. reset() ends the freeze the way a replaced peer would: every old
    connection is reset, new ones are forwarded again."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.frozen = threading.Event()
        self.frozen_at = 0.0
        self.links = []
        super().__init__()

    def accepted(self, down):
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:  # PostgreSQL is not there: the server's connection fails as it would
            down.close()
            return
        link = Link(down, up)
        self.links.append(link)
        threading.Thread(target=self._pump, args=(link,), daemon=True).start()

    def _pump(self, link):
        watcher = select.poll()
        watcher.register(link.down, select.POLLRDHUP)
        try:
            while link.ended is None and not self.closed:
                if self.frozen.is_set():
                    if watcher.poll(100):
                        link.dropped = time.monotonic() - self.frozen_at
                        break
                    continue
                for s in select.select([link.down, link.up], [], [], 0.1)[0]:
                    data = s.recv(65536)
                    if not data:
                        return
                    (link.up if s is link.down else link.down).sendall(data)
        except OSError:
            pass
        finally:
            link.end()

    def freeze(self):
        self.frozen_at = time.monotonic()
        self.frozen.set()
        return self.frozen_at

    def reset(self):
        """Resets every connection; for each one open during the freeze, when the server
        dropped it (None: it held it to the end)."""
        frozen = [link for link in list(self.links) if link.ended is None or link.ended >= self.frozen_at]
        for link in frozen:
            link.end(reset=True)
        self.frozen.clear()
        return [link.dropped for link in frozen]

    def close(self):
        super().close()
        self.reset()


