"""Loopback sockets: a free port, the peers a server still holds, and a listener that
accepts connections and never says a word (a hung database or collector)."""

import socket
import threading
from pathlib import Path

from .process import STARTED


def free_port(family=socket.AF_INET):
    """A port no one listens on now, on 127.0.0.1 (or on :: for AF_INET6)."""
    with socket.socket(family) as s:
        s.bind(("::" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return s.getsockname()[1]


def held_peers(port):
    """The client ports of connections to local `port` that the server still holds open, or
    that wait in its accept queue (ESTABLISHED or CLOSE_WAIT on its side)."""
    peers = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                peers.add(int(remote.rsplit(":", 1)[1], 16))
    return peers


class Listener:
    """A TCP listener on 127.0.0.1 that hands each connection to `accepted`, in a thread of
    its own, until closed. A subclass sets its own fields before calling __init__."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        STARTED.append(self)

    def _accept(self):
        while not self.closed:
            try:
                conn = self.sock.accept()[0]
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted(conn)

    def accepted(self, conn):
        raise NotImplementedError

    def close(self):
        self.closed = True
        self.sock.close()


class Silent(Listener):
    """A TCP listener that accepts connections and never sends a byte."""

    def __init__(self):
        self.conns = []
        super().__init__()

    def accepted(self, conn):
        self.conns.append(conn)

    def close(self):
        super().close()
        for conn in self.conns:
            conn.close()
