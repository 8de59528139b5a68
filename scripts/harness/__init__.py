"""What every test tool of task-api shares (faults, fleet, bench): Python's standard library only.

  process.py   child processes stopped on exit, /proc readings (RSS, fds, CPU), installing a tool
  net.py       a free loopback port, the peers a server holds, a listener that never answers
  cluster.py   a throwaway PostgreSQL (scripts/pg.sh): start, stop, kill, psql, createdb, wait
  server.py    one `task-api serve`, its log, waiting for /health or /ready
  http.py      raw HTTP/1.1: request bytes, reading a response, `call` with timing, keep-alive
  suite.py     scenarios, the work directory, running a scenario that may crash
  report.py    the line a scenario ends with, the markdown table, docs/results/<tool>.md

Each tool is a folder beside this one, run as `python3 -m <tool>` with scripts/ on PYTHONPATH.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The binary `make build` makes: what every tool measures unless told otherwise.
BINARY = ROOT / "target/x86_64-unknown-linux-musl/release/task-api"
