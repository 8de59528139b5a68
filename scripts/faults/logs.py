"""Fault scenarios of the log: request bodies at debug level, and log lines a hostile path
or request id would forge."""

import asyncio
import re
import uuid

from harness.http import call, request, request_bytes, tally

from .context import gather, scenario


@scenario("debug-log")
def debug_log(ctx):
    """LOG_LEVEL=debug, then RUST_LOG=debug: POST, GET and PATCH a task whose title and
    description hold a unique marker

    Target: 0 markers in stdout and stderr"""
    parts, ok = [], True
    for i, env in enumerate(({"LOG_LEVEL": "debug"}, {"RUST_LOG": "debug"})):
        server = ctx.server(ctx.cluster.url(ctx.database(f"_{i}")), env=env)
        marker, marker2 = uuid.uuid4().hex, uuid.uuid4().hex
        created = request(server.port, "POST", "/tasks",
                          {"title": f"t-{marker}", "description": f"d-{marker}"})
        task_id = created.json()["id"] if created.status == 201 else 0
        fetched = request(server.port, "GET", f"/tasks/{task_id}")
        patched = request(server.port, "PATCH", f"/tasks/{task_id}",
                          {"title": f"t-{marker2}", "description": f"d-{marker2}"})
        server.process.stop()
        text = server.output()
        found = text.count(marker) + text.count(marker2)
        debug_lines = text.count(" DEBUG ")
        answers = f"{created.outcome()}/{fetched.outcome()}/{patched.outcome()}"
        var = next(iter(env))
        parts.append(f"{var}=debug: {found} markers in {text.count(chr(10))} lines "
                     f"({debug_lines} at debug; answers {answers})")
        ok = ok and found == 0 and answers == "201/200/200"
    return "; ".join(parts), ok



HOSTILE = [
    b"GET /tasks/\xe2\x80\xa8status=500 HTTP/1.1",  # U+2028, raw
    b"GET /tasks/\xc2\x85status=500 HTTP/1.1",  # U+0085, raw
    b"GET /tasks/\x85\x9b\x9d HTTP/1.1",  # C1 bytes, not even UTF-8
    b"GET /tasks/%E2%80%A8x%C2%85y HTTP/1.1",
    b"GET /tasks/x%0D%0AINFO%20access:%20GET%20/%20200 HTTP/1.1",
    b'GET /tasks/a"b%22 HTTP/1.1',
    b'GET /tasks/x"%20status=500%20user="admin HTTP/1.1',
    b"GET /tasks/a\rb HTTP/1.1",
    b"GET /tasks/a b status=500 HTTP/1.1",
    b'GET /tasks/x" status=500 user="admin HTTP/1.1',
    b"GET /health\x0bstatus=500 HTTP/1.1",
    b'G"ET /health HTTP/1.1',
]
HOSTILE_IDS = ["1 status=500 user=admin", '" user=admin status=500 "', "x\\\" status=500"]


@scenario("log-forging")
def log_forging(ctx):
    """raw paths with U+2028, U+0085, C1 bytes, CR, quotes and spaces; x-request-id: 1
    status=500 user=admin

    Target: every access line is 5 logfmt fields; 0 forged status=/user= fields; 0 raw control
    characters"""
    server = ctx.server(ctx.cluster.url(ctx.database()))
    raws = [line + b"\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n" for line in HOSTILE]
    raws += [request_bytes("GET", "/health", headers={"x-request-id": rid}) for rid in HOSTILE_IDS]
    calls = asyncio.run(gather(*(call(server.port, "GET", "/", raw=raw, timeout=5) for raw in raws)))
    server.process.stop()
    lines, forged, raw_chars = access_lines(server.log_path.read_bytes())
    answered = sum(k.status is not None for k in calls)
    figure = (f"{len(raws)} hostile requests ({answered} answered: {tally(calls)}); {lines} access lines, "
              f"{forged} forged or malformed, {raw_chars} raw control or separator characters (target 0)")
    return figure, forged == 0 and raw_chars == 0 and lines > 0


def access_lines(log):
    """(access lines, lines with forged or malformed fields, raw control characters) in a log."""
    text = log.decode("utf-8", errors="surrogateescape")
    raw_chars = len(re.findall(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]", text))
    lines = forged = 0
    for line in text.split("\n"):
        if " access: " not in line:
            continue
        lines += 1
        try:
            tokens = logfmt_tokens(line.split(" access: ", 1)[1])
        except ValueError:
            forged += 1
            continue
        well_formed = (len(tokens) == 5 and tokens[2].isdigit() and re.fullmatch(r"[\d.]+ms", tokens[3])
                       and tokens[4].startswith("request_id="))
        bare_fields = [t for t in tokens if '"' not in t and re.match(r"(status|user)=", t)]
        forged += not well_formed or bool(bare_fields)
    return lines, forged, raw_chars


def logfmt_tokens(text):
    """Splits logfmt: bare tokens, and `"…"` or `key="…"` with backslash escapes. ValueError on a
    quote inside a bare token, an unterminated quote, or text glued to a closing quote."""
    tokens, i = [], 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        j = i
        while j < len(text) and text[j] not in ' "':
            j += 1
        if j < len(text) and text[j] == '"':
            if j > i and text[j - 1] != "=":
                raise ValueError("quote inside a bare value")
            j += 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise ValueError("unterminated quote")
            j += 1
            if j < len(text) and text[j] != " ":
                raise ValueError("text after a closing quote")
        tokens.append(text[i:j])
        i = j
    return tokens


# Malformed DATABASE_URLs, each with the password fragments no message may show.
