"""What the tools print and write: the line each scenario ends with, the markdown table of
scenarios, and docs/results/<tool>.md, which the tool that measured it writes whole (a
title, one line for the date, machine, binary and command, then the table)."""

import datetime
import os
import platform
import re
import shlex
import threading
from pathlib import Path

from . import ROOT

RESULTS = ROOT / "docs/results"
PRINT = threading.Lock()


def say(text):
    with PRINT:
        print(text, flush=True)


def escaped(text):
    """A log excerpt made safe for a terminal: control and separator characters escaped."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", lambda m: f"\\u{ord(m[0]):04x}", text)


def tail(path, lines=12):
    """The last lines of a log that are not access lines (those hide the warnings)."""
    text = path.read_bytes().decode(errors="backslashreplace").splitlines()
    interesting = [line for line in text if not re.search(r' INFO +access: |"target": ?"access"', line)]
    return interesting[-lines:]


def finished(name, ok, figure, seconds, logs=(), width=2):
    """Says how a scenario ended, with `logs` ([(file name, lines)]) when it failed."""
    lines = [f"{name:<{width}} {'PASS' if ok else 'FAIL'}  {figure}  ({seconds:.1f} s)"]
    if not ok:
        for log_name, tail in logs:
            lines += [f"    | {log_name}:"] + [f"    | {escaped(line)}" for line in tail]
    say("\n".join(lines))


def table(rows):
    """The markdown table of scenarios: rows of (name, what was done, figure, target, ok)."""
    lines = ["| scenario | what was done | figure | target | result |", "|---|---|---|---|---|"]
    for name, what, figure, target, ok in rows:
        lines.append(f"| {name} | {what} | {escaped(figure).replace('|', '/')} | {target} | "
                     f"{'PASS' if ok else '**FAIL**'} |")
    return lines


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine():
    """`2 cores (AMD EPYC 7B13)`: for headings printed beside the numbers."""
    return f"{os.cpu_count()} cores ({cpu_model()})"


def memory_gib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def command(target, variables):
    """The command that ran this tool: its make target, or its module when run without make
    (`test-faults`: `faults`, `bench-curve`: `bench curve`), after the tool's variables that are set."""
    module = target.removeprefix("test-").replace("-", " ")
    tool = f"make {target}" if "MAKELEVEL" in os.environ else f"PYTHONPATH=scripts python3 -m {module}"
    given = [f"{name}={shlex.quote(os.environ[name])}" for name in variables if os.environ.get(name)]
    return " ".join([*given, tool])


def write(name, title, binary, how, lines, seconds=None):
    """Writes docs/results/`name` whole: `title`, the line saying when, where, what and how
    (the command `how`, in `seconds`) it was measured, then `lines`. Returns its path."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    binary = Path(binary).resolve()
    shown = binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary
    size = binary.stat().st_size if binary.exists() else 0
    when = (f"Measured {now} on {cpu_model()} ({os.cpu_count()} cores, {memory_gib():.1f} GiB memory, Linux "
            f"{platform.release()}, {platform.machine()}); binary `{shown}` ({size:,} bytes); made by "
            f"`{how}`{f' in {seconds:.0f} s' if seconds is not None else ''}.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text("\n".join([f"# {title}", "", when, "", *lines]).rstrip("\n") + "\n")
    return path


def conclude(tool, selected, results, seconds, heading, title, binary, how, subset=""):
    """Prints `heading` and the table of the `selected` scenarios' `results` ({name: (figure,
    ok)}), and writes them to docs/results/<tool>.md, made by the command `how`; not when
    `subset` names what made this run a subset of the scenarios."""
    rows = []
    for s in selected:
        figure, ok = results.get(s.name, ("did not run", False))
        rows.append((s.name, s.what, figure, s.target, ok))
    lines = table(rows)
    print(f"\n{heading}\n")
    print("\n".join(lines))
    if subset:
        print(f"\n{tool}: {subset} runs a subset: docs/results/{tool}.md is left as it was")
    else:
        print(f"\n{tool}: wrote {write(f'{tool}.md', title, binary, how, lines, seconds).relative_to(ROOT)}")
