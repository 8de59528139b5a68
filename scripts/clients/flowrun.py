"""What flows.py and generator_flows.py share: a flow's failure, and running the flows in order,
one line each, then `LABEL: N passed, N failed`."""

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class Failed(Exception):
    """A flow met an answer the document does not promise."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Failed(what)


def made(task: T | None) -> T:
    """The task the create flow made; the flows after a failed create fail too."""
    if task is None:
        raise Failed("no task: create failed")
    return task


def run(label: str, flows: object, names: Sequence[str]) -> int:
    """Runs `flows.<name>()` for each name in order; the exit code, 1 when a flow failed."""
    passed = failed = 0
    for name in names:
        flow: Callable[[], None] = getattr(flows, name)
        try:
            flow()
        except Exception as err:  # noqa: BLE001 - a flow that raises failed; the rest go on
            failed += 1
            print(f"FAIL  {label} {name}: {type(err).__name__}: {err}", flush=True)
        else:
            passed += 1
            print(f"ok    {label} {name}", flush=True)
    print(f"{label}: {passed} passed, {failed} failed")
    return 1 if failed else 0
