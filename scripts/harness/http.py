"""Raw HTTP/1.1 over asyncio streams, so that a tool sends exactly the bytes it means
(hostile heads included) and times each request: `call` on a fresh connection, a
keep-alive `Connection`, and reading one response off a stream."""

import asyncio
import collections
import json
import re
import socket
import time
from dataclasses import dataclass, field

# What a request may fail with; `why` names it.
ERRORS = (OSError, TimeoutError, EOFError, ValueError, IndexError, asyncio.LimitOverrunError)
# The most of a response head or chunk line held in the reader's buffer.
READ_LIMIT = 1 << 20


@dataclass
class Call:
    """One request, and what became of it."""
    method: str
    started: float
    title: str = ""  # of a create, for the tools that look for it later
    status: int | None = None  # None: no answer; `error` says why
    error: str = ""
    sent: float | None = None  # when the request was written
    took: float = 0.0
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    @property
    def end(self):
        return self.started + self.took

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    def json(self):
        return json.loads(self.body)

    def outcome(self):
        return str(self.status) if self.status else self.error


def request_bytes(method, path, body=None, headers=None, keep_alive=False):
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    if not keep_alive:
        lines.append("connection: close")
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def read_response(reader, method="GET"):
    """(status, headers with lower-case names, body) of the next response on `reader`."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
    if status in (204, 304) or method == "HEAD":
        body = b""
    elif "chunked" in headers.get("transfer-encoding", ""):
        body = bytearray()
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        while (await reader.readline()).strip():
            pass
        body = bytes(body)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return status, headers, body


def why(err):
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, asyncio.IncompleteReadError):
        return "closed without answer"
    names = {ConnectionRefusedError: "refused", ConnectionResetError: "reset"}
    return names.get(type(err), type(err).__name__)


async def call(port, method, path, body=None, headers=None, timeout=10.0, host="127.0.0.1", raw=None):
    """One request with a time limit, on a fresh connection; never raises. `raw`: these
    bytes instead of the request the other arguments make."""
    c = Call(method, time.monotonic())
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
            writer.write(raw or request_bytes(method, path, body, headers))
            await writer.drain()
            c.sent = time.monotonic()
            c.status, c.headers, c.body = await read_response(reader, method)
    except ERRORS as err:
        c.error = why(err)
    finally:
        if writer:
            writer.close()
    c.took = time.monotonic() - c.started
    return c


def request(port, method, path, body=None, headers=None, timeout=10.0, host="127.0.0.1"):
    return asyncio.run(call(port, method, path, body, headers, timeout, host))


async def refused_early(port, raw, timeout=10.0):
    """Sends `raw` on a fresh connection while reading: for a request the server answers
    before it has read all of it (a 431). The answer is read even when the server resets
    the connection over the unread rest (Linux keeps what had arrived readable). `took`
    runs from the connection being open to the whole answer."""
    loop = asyncio.get_running_loop()
    c = Call(raw.split(b" ", 1)[0].decode("latin-1"), time.monotonic())
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    sock = socket.socket()
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            c.started = time.monotonic()

            async def send():
                try:
                    await loop.sock_sendall(sock, raw)
                    c.sent = time.monotonic()
                except OSError:
                    pass  # the server stopped reading: its answer is what counts

            async def receive():
                while True:
                    try:
                        data = await loop.sock_recv(sock, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        reader.feed_eof()
                        return
                    reader.feed_data(data)

            sending, receiving = asyncio.create_task(send()), asyncio.create_task(receive())
            try:
                c.status, c.headers, c.body = await read_response(reader, c.method)
            finally:
                sending.cancel()
                receiving.cancel()
                # Their sockets leave the event loop before the socket is closed: a closed
                # descriptor still registered breaks the next socket given its number.
                await asyncio.gather(sending, receiving, return_exceptions=True)
    except ERRORS as err:
        c.error = why(err)
    finally:
        sock.close()
    c.took = time.monotonic() - c.started
    return c


class Connection:
    """A keep-alive client connection: opened when needed, dropped after an error or
    `connection: close`."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    def drop(self):
        if self.writer:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, method, path, body=None, headers=None, title="", timeout=10.0):
        c = Call(method, time.monotonic(), title)
        try:
            async with asyncio.timeout(timeout):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port,
                                                                             limit=READ_LIMIT)
                self.writer.write(request_bytes(method, path, body, headers, keep_alive=True))
                await self.writer.drain()
                c.sent = time.monotonic()
                c.status, c.headers, c.body = await read_response(self.reader, method)
            if c.headers.get("connection", "").lower() == "close":
                self.drop()
        except ERRORS as err:
            c.error = why(err)
            self.drop()
        c.took = time.monotonic() - c.started
        return c


def tally(calls, outcome=Call.outcome):
    """How many calls ended each way: {"200": 12, "reset": 1}."""
    return dict(collections.Counter(outcome(c) for c in calls))


def metric(text, name, **labels):
    """From /metrics text, the sum of the series `name` whose labels include `labels`; 0 when
    there is none."""
    total = 0.0
    for m in re.finditer(r"^(\w+)(?:\{([^}]*)\})? (\S+)", text, re.M):
        if m[1] == name and all(f'{k}="{v}"' in (m[2] or "") for k, v in labels.items()):
            total += float(m[3])
    return total
