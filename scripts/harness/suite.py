"""A tool's scenarios and the run around them: the registry a tool's modules add to,
the choice of scenarios by name, and the work directory whose contents are stopped and
removed on the way out, whatever happened."""

import contextlib
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import ROOT
from .process import close_started, raise_fd_limit


@dataclass
class Scenario:
    name: str
    what: str
    target: str
    run: object
    heavy: bool = False  # run alone: heavy, or its figure is a timing
    needs_db: bool = True
    setup: str = ""  # what it runs against, for a tool with more than one (fleet: failover, reads)


class Suite(list):
    """The scenarios of one tool, in the order they were registered."""

    def scenario(self, name, what=None, target=None, **flags):
        """Registers the function it decorates as scenario `name`: what it does and its target
        as given, or else from its docstring (a paragraph, then one that starts `Target: `)."""
        def register(fn):
            said, _, aim = " ".join((fn.__doc__ or "").split()).partition(" Target: ")
            self.append(Scenario(name, what or said, target or aim, fn, **flags))
            return fn
        return register

    def select(self, only, tool):
        """The scenarios named in `only` (all when it is empty); exits naming any unknown."""
        unknown = set(only) - {s.name for s in self}
        if unknown:
            sys.exit(f"{tool}: unknown scenario {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(s.name for s in self)}")
        return [s for s in self if not only or s.name in only]


def begin(tool, scenarios, only, binary):
    """What a tool does first: SIGTERM unwinds (so that everything started is still stopped), the
    descriptor limit goes up, the scenarios named in `only` are chosen, `binary` must exist. The
    chosen scenarios."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    selected = scenarios.select(only, tool)
    if not binary.exists():
        sys.exit(f"{tool}: {binary} is missing; run `make build` first")
    return selected


def attempt(run, *args):
    """(figure, ok, anything else `run` returned): a scenario that crashes is a FAIL with its
    reason, and the suite goes on."""
    try:
        figure, ok, *rest = run(*args)
        return figure, ok, rest
    except Exception as err:  # noqa: BLE001 - a crashed scenario is a FAIL
        return f"crashed: {type(err).__name__}: {err}", False, []


@contextlib.contextmanager
def workdir(tool, keep=False, grace=0.0):
    """A fresh directory under target/ for the tool's clusters and logs. On the way out
    everything started is stopped (processes get SIGTERM and `grace` s first), and the
    directory removed unless `keep`."""
    (ROOT / "target").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"task-api-{tool}-", dir=ROOT / "target"))
    work.chmod(0o755)  # as root, the clusters inside run as `postgres`
    try:
        yield work
    finally:
        # The cleanup is bounded; a second signal does not cut it short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        close_started(tool, grace)
        if keep:
            print(f"{tool}: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
