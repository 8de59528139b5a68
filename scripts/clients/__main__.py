"""`make test-clients`, its last step: flows.py (the openapi-python-client package), flows.mjs
(openapi-fetch, typed by openapi-typescript), generator_flows.py and generator_flows.js
(openapi-generator's python and typescript-fetch clients) and browser.mjs (/docs in headless Chromium,
which saves docs/images/docs.png) against one live debug server and a throwaway PostgreSQL.
mk/clients.mk generates and type-checks the clients first.

    PYTHONPATH=scripts python3 -m clients [--keep]

Prints each program's lines, then `N passed, N failed` over all; exit 1 when a flow failed.
"""

import os
import re
import subprocess
import sys
import time

from harness import ROOT
from harness.cluster import Cluster
from harness.server import Server
from harness.suite import workdir

BINARY = ROOT / "target/debug/task-api"  # cargo build --locked, as make test-openapi runs it
OUT = ROOT / "target/clients"
PASSWORD = "postgres"


def ready(server, limit=30):
    """Waits until the binary's own probe, `task-api healthcheck --ready`, says the server is ready."""
    deadline = time.monotonic() + limit
    env = dict(os.environ, PORT=str(server.port))
    while time.monotonic() < deadline:
        if not server.process.running():
            raise RuntimeError("the server exited before it was ready")
        probe = [BINARY, "healthcheck", "--ready", "--timeout", "1"]
        if subprocess.run(probe, env=env, capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {limit} s")


def flows(base_url):
    """Each client's program, as (name, argv, extra environment)."""
    return [
        ("python", [OUT / "venv/bin/python", ROOT / "scripts/clients/flows.py", base_url],
         {"PYTHONPATH": str(OUT / "python")}),
        ("typescript", ["node", OUT / "typescript/out/flows.mjs", base_url], {}),
        ("openapi-generator python", [OUT / "venv/bin/python", ROOT / "scripts/clients/generator_flows.py", base_url],
         {"PYTHONPATH": str(OUT / "generator/python")}),
        ("openapi-generator typescript-fetch",
         ["node", OUT / "generator/typescript/out/scripts/clients/generator_flows.js", base_url], {}),
        ("browser", ["node", ROOT / "scripts/clients/browser.mjs", base_url, ROOT / "docs/images/docs.png"], {}),
    ]


def main():
    keep = "--keep" in sys.argv[1:]
    passed = failed = 0
    with workdir("clients", keep=keep, grace=5) as work:
        cluster = Cluster(work, "pg", PASSWORD, options=["-c", "fsync=off", "-c", "synchronous_commit=off"],
                          app="clients")
        cluster.start()
        server = Server(BINARY, work / "server.log", cluster.createdb("tasks"), env={"LOG_LEVEL": "warn"})
        ready(server)
        base_url = f"http://127.0.0.1:{server.port}"
        for name, argv, env in flows(base_url):
            print(f"+ {' '.join(map(str, argv))}", flush=True)
            run = subprocess.run(list(map(str, argv)), env=dict(os.environ, **env), capture_output=True,
                                 text=True, timeout=120)
            sys.stdout.write(run.stdout)
            sys.stderr.write(run.stderr)
            counts = re.search(r"(\d+) passed, (\d+) failed\s*$", run.stdout)
            if counts is None:
                print(f"FAIL  {name}: exited {run.returncode} without its closing line", flush=True)
                failed += 1
                continue
            passed += int(counts[1])
            failed += int(counts[2]) + (1 if run.returncode and not int(counts[2]) else 0)
        if failed:
            print("--- server log, last 30 lines", file=sys.stderr)
            print("\n".join(server.output().splitlines()[-30:]), file=sys.stderr)
    print(f"clients: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
