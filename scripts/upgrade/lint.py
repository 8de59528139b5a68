"""`make lint-sql`: squawk on every file of sql/ and sql/indexes/, what it finds judged by the
tables of .squawk.toml (a finding passes only where an excuse or a rule turned off gives its
reason), and the release rules of docs/upgrading.md that squawk cannot see: the compatibility
header on the first line of every migration after V4, its lock and statement timeouts first
thing after it, and one `CREATE INDEX CONCURRENTLY IF NOT EXISTS <its name>` per index file.

Exits 1 on any finding not excused, any excuse squawk no longer finds (V1–V4 never change, so
one that stops matching means the lint is out of date), and any broken rule.
"""

import fnmatch
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from harness import ROOT

CONFIG = ROOT / ".squawk.toml"
SQUAWK = Path(os.environ.get("SQUAWK", ROOT / "target/tools/bin/squawk"))
BEFORE_RECORDS = 4  # V1–V4 predate the compatibility record (src/pg/compat.rs)
HEADER = re.compile(r"-- compatibility: (expand|contract), works with task-api \d+\.\d+\.\d+ and later")
TIMEOUTS = ("lock_timeout", "statement_timeout")


def squawk(files, in_transaction):
    """squawk's findings in `files`: [(file relative to ROOT, 1-based line, rule, message)]."""
    if not files:
        return []
    argv = [SQUAWK, "--config", CONFIG, "--reporter", "json",
            "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction",
            *[f.relative_to(ROOT) for f in files]]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        sys.exit(f"lint-sql: squawk failed ({out.returncode}): {out.stderr.strip()}")
    return [(f["file"], f["line"] + 1, f["rule_name"], f["message"]) for f in json.loads(out.stdout)]


def statements(sql):
    """The statements of `sql`, comment lines left out, each on one line."""
    code = " ".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [" ".join(s.split()) for s in code.split(";") if s.strip()]


def migration_rules(path):
    """What a migration after V4 breaks of docs/upgrading.md's rules: [problem]."""
    lines = path.read_text().splitlines()
    problems = []
    if not lines or not HEADER.fullmatch(lines[0].strip()):
        problems.append("line 1 is not `-- compatibility: expand|contract, works with task-api X.Y.Z and later`")
    first = [s.lower() for s in statements(path.read_text())[:2]]
    for setting in TIMEOUTS:
        if not any(re.fullmatch(rf"set local {setting}\s*(=|to)\s*\S+", s) for s in first):
            problems.append(f"no `SET LOCAL {setting} = …` before its first other statement")
    return problems


def index_rules(path):
    """What an index file breaks of docs/upgrading.md's rule 5: [problem]."""
    name = path.stem.split("__", 1)[-1]
    found = statements(path.read_text())
    pattern = rf"create (unique )?index concurrently if not exists {re.escape(name.lower())} on .+"
    if not re.fullmatch(r"I\d+__\w+", path.stem):
        return ["its name is not I<n>__<index name>.sql"]
    if len(found) != 1 or not re.fullmatch(pattern, found[0].lower()):
        return [f"is not one `CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON …` statement"]
    return []


def main():
    config = tomllib.loads(CONFIG.read_text())
    excused = {(e["file"], e["rule"]): e for e in config.get("excused", [])}
    off = config.get("off", [])
    for entry in [*excused.values(), *off]:
        if not entry.get("reason", "").strip():
            sys.exit(f"lint-sql: .squawk.toml: {entry} has no reason")
    migrations = sorted((ROOT / "sql").glob("*.sql"))
    indexes = sorted((ROOT / "sql/indexes").glob("*.sql"))
    print(f"lint-sql: {subprocess.run([SQUAWK, '--version'], capture_output=True, text=True).stdout.strip()} "
          f"on {len(migrations)} migrations and {len(indexes)} index files")
    findings = squawk(migrations, True) + squawk(indexes, False)

    failures = []
    seen = {}
    ruled_off = 0
    for file, line, rule, message in findings:
        if any(fnmatch.fnmatch(file, o["files"]) and o["rule"] == rule for o in off):
            ruled_off += 1
            continue
        if (file, rule) in excused:
            seen.setdefault((file, rule), []).append(line)
        else:
            failures.append(f"{file}:{line}: {rule}: {message}")
    for key, entry in excused.items():
        lines = sorted(seen.get(key, []))
        if lines != sorted(entry["lines"]):
            failures.append(f"{key[0]}: {key[1]} is excused on lines {entry['lines']} but squawk finds it on "
                            f"{lines or 'none'}: bring .squawk.toml up to date")
        else:
            print(f"  excused {key[0]}:{','.join(map(str, lines))} {key[1]}: {entry['reason']}")
    for o in off:
        print(f"  off in {o['files']}: {o['rule']}: {o['reason']}")

    for path in migrations:
        match = re.fullmatch(r"V(\d+)__\w+", path.stem)
        if not match:
            failures.append(f"{path.relative_to(ROOT)}: not a migration name (V<n>__<name>.sql)")
        elif int(match[1]) > BEFORE_RECORDS:
            failures += [f"{path.relative_to(ROOT)}: {p}" for p in migration_rules(path)]
    for path in indexes:
        failures += [f"{path.relative_to(ROOT)}: {p}" for p in index_rules(path)]

    for failure in failures:
        print(f"FAIL {failure}")
    print(f"lint-sql: {len(findings)} squawk findings ({sum(map(len, seen.values()))} excused, {ruled_off} under "
          f"a rule turned off); {len(failures)} problems")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
