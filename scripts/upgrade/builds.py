"""The builds test-upgrade compares. `<rev>` (FROM: else the newest v* tag, else 02cade1) is
checked out in a git worktree under target/upgrade/ and built by its own `make build`. The
variants are this tree (as it is on disk) plus test-only files, copied to target/upgrade/variant-*
and built in debug in one target directory of their own, target/upgrade/variants-target:
`expand` adds an expand migration and a big index (sql/indexes/), `contract` a contract migration
after those. Not this tree's target/: build.rs's output would be shared with this tree's build,
which has no sql/indexes/, and cargo could take it for the variant's. Nothing is ever written to
this tree's sql/. Every build is incremental: a second run only checks, and compiles the
variants' crate again (the two share one place in their target directory, ~15 s each)."""

import os
import re
import shutil
import subprocess
import time

from pathlib import Path

from harness import BINARY, ROOT
from harness.report import say

UPGRADE = ROOT / "target/upgrade"
# The last commit before the compatibility records (the refactor issue): what FROM defaults to
# while there is no v* tag.
BEFORE_RECORDS = "02cade1"
VERSION = re.search(r'^version = "(.+)"', (ROOT / "Cargo.toml").read_text(), re.M)[1]
VARIANTS_TARGET = UPGRADE / "variants-target"
HOME = Path.home()
# The index of the expand variant: the one the big-index scenario measures.
TEST_INDEX = "tasks_test_title_idx"
# What a variant's copy of this tree holds: what cargo reads to build the binary.
BUILT_FROM = ("Cargo.toml", "Cargo.lock", "build.rs", "src/", "sql/", "tests/")


def git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def source():
    """(the name FROM gives, its full commit, its short one)."""
    name = os.environ.get("FROM") or next(iter(git("tag", "-l", "v*", "--sort=-v:refname").split()),
                                          BEFORE_RECORDS)
    commit = git("rev-parse", "--verify", f"{name}^{{commit}}")
    return name, commit, git("rev-parse", "--short", commit)


def build_step(argv, cwd, log, env=None):
    """Runs a build command (echoed, its output in `log`); its last lines raise when it fails."""
    say(f"upgrade: {' '.join(map(str, argv))}  (in {cwd.relative_to(ROOT)}, output in {log.relative_to(ROOT)})")
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {code}:\n" + "\n".join(tail))
    say(f"upgrade:   done in {time.monotonic() - started:.0f} s")


def seed(target, profiles):
    """Copies the compiled dependencies of this tree's target/ (`profiles`, e.g. "debug") into
    another target directory that has none yet, so that another tree's build compiles its own crate
    and what its Cargo.lock changed, not all 240 crates again. cargo judges each copied artefact by
    its fingerprint: what does not match is rebuilt. task-api's own artefacts stay behind: a copied
    build-script output is newer than the other tree's sql/, and cargo would take this tree's
    sql/indexes/ for its."""
    for profile in profiles:
        for part in ("deps", "build", ".fingerprint"):
            source, copy = ROOT / "target" / profile / part, target / profile / part
            if source.is_dir() and not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-r", "--reflink=auto", source, copy], check=True)
                for own in [*copy.glob("task-api-*"), *copy.glob("task_api-*"), *copy.glob("libtask_api-*")]:
                    shutil.rmtree(own) if own.is_dir() else own.unlink()


def build_env():
    """The environment for another tree's build: none of this make's or cargo's settings."""
    return {k: v for k, v in os.environ.items()
            if k not in ("CARGO_TARGET_DIR", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "TASK_API_REVISION")}


class Release:
    """`<rev>` in its worktree, built by its own Makefile; its own tests run there (oldsuite.py)."""

    def __init__(self):
        self.name, self.commit, self.short = source()
        self.label = self.short if self.name.startswith(self.short) else f"{self.name} ({self.short})"
        self.tree = UPGRADE / self.short
        self.binary = self.tree / "target/x86_64-unknown-linux-musl/release/task-api"

    def build(self):
        UPGRADE.mkdir(parents=True, exist_ok=True)
        if not (self.tree / ".git").exists():
            git("worktree", "prune")
            git("worktree", "add", "--detach", str(self.tree), self.commit)
        elif git("rev-parse", "HEAD", cwd=self.tree) != self.commit:
            git("checkout", "--detach", self.commit, cwd=self.tree)
        seed(self.tree / "target", ("release", "x86_64-unknown-linux-musl/release", "debug"))
        # This tree's release flags, so that the seeded dependencies match (they differ only in the
        # path a panic message would show).
        flags = f"RELEASE_RUSTFLAGS=--remap-path-prefix={ROOT}=/task-api --remap-path-prefix={HOME}/.cargo=/cargo"
        build_step(["make", "build", flags], self.tree, UPGRADE / f"build-{self.short}.log", build_env())
        # Its integration tests, compiled now so that step a times only their run.
        build_step(["cargo", "test", "--locked", "--no-run", "--test", "api"], self.tree,
                   UPGRADE / f"build-{self.short}-tests.log", build_env())

    def migrations(self):
        """Its sql/ as {file name: bytes}."""
        listing = git("ls-tree", "--name-only", f"{self.commit}:sql")
        return {name: subprocess.run(["git", "show", f"{self.commit}:sql/{name}"], cwd=ROOT, check=True,
                                     capture_output=True).stdout
                for name in listing.split() if name.endswith(".sql")}

    def has_records(self):
        """Whether it judges newer migrations by their compatibility records, or refuses them all."""
        found = subprocess.run(["git", "grep", "-q", "task_api_compatibility", self.commit, "--", "src"], cwd=ROOT)
        return found.returncode == 0


def ours():
    """This tree's migrations as {file name: bytes}."""
    return {p.name: p.read_bytes() for p in sorted((ROOT / "sql").glob("*.sql"))}


def next_number(pattern, folder):
    numbers = [int(m[1]) for p in folder.glob("*.sql") if (m := re.fullmatch(pattern, p.stem))]
    return max(numbers, default=0) + 1


def test_files():
    """The test-only files of each variant, {variant: {path in the tree: text}}: numbered after this
    tree's own, so that they stay the newest."""
    v = next_number(r"V(\d+)__\w+", ROOT / "sql")
    i = next_number(r"I(\d+)__\w+", ROOT / "sql/indexes")
    timeouts = "SET LOCAL lock_timeout = '1s';\nSET LOCAL statement_timeout = '5s';\n"
    expand = {
        f"sql/V{v}__test_expand.sql": f"-- compatibility: expand, works with task-api {VERSION} and later\n"
                                      f"-- make test-upgrade's own (scripts/upgrade/builds.py), never in sql/.\n"
                                      f"{timeouts}ALTER TABLE tasks ADD COLUMN test_note text;\n",
        f"sql/indexes/I{i}__{TEST_INDEX}.sql": f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {TEST_INDEX} "
                                                "ON tasks (title, created_at);\n",
    }
    contract = dict(expand)
    contract[f"sql/V{v + 1}__test_contract.sql"] = (
        f"-- compatibility: contract, works with task-api 99.0.0 and later\n"
        f"{timeouts}ALTER TABLE tasks DROP COLUMN test_note;\n")
    return {"expand": expand, "contract": contract}


class Variant:
    """This tree plus `extra` ({path: text}), copied to target/upgrade/variant-<name> and built there
    in debug; its binary copied to target/upgrade/bin/task-api-<name>."""

    def __init__(self, name, extra):
        self.name, self.extra = name, extra
        self.tree = UPGRADE / f"variant-{name}"
        self.binary = UPGRADE / "bin" / f"task-api-{name}"
        self.label = f"this build + {', '.join(sorted(p.rsplit('/', 1)[1] for p in extra))}"

    def files(self):
        """What the copy must hold: the files of BUILT_FROM that git has or would have here, as they
        are on disk, and the extra ones."""
        listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *BUILT_FROM).split("\0")
        files = {path: (ROOT / path).read_bytes() for path in listed if path and (ROOT / path).is_file()}
        files.update({path: text.encode() for path, text in self.extra.items()})
        return files

    def sync(self):
        """Makes the copy hold exactly files(), rewriting only what differs: cargo sees unchanged
        files as unchanged."""
        files = self.files()
        for path in self.tree.rglob("*"):
            relative = path.relative_to(self.tree).as_posix()
            if path.is_file() and relative not in files:
                path.unlink()
        for relative, data in files.items():
            path = self.tree / relative
            if not path.is_file() or path.read_bytes() != data:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)

    def build(self, foreign=()):
        """Builds it; a RuntimeError when its binary misses one of its test-only files, or holds one of
        `foreign` (another variant's)."""
        self.sync()
        seed(VARIANTS_TARGET, ("debug",))
        env = dict(build_env(), CARGO_TARGET_DIR=str(VARIANTS_TARGET), TASK_API_REVISION=f"test-{self.name}")
        build_step(["cargo", "build", "--locked", "--bin", "task-api"], self.tree,
                   UPGRADE / f"build-{self.name}.log", env)
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(VARIANTS_TARGET / "debug/task-api", self.binary)
        # Each test-only file is embedded as written (refinery's migrations, build.rs's indexes):
        # a binary without one, or with another variant's, was built from something else.
        embedded = self.binary.read_bytes()
        wrong = [f"no {path}" for path, text in self.extra.items() if text.encode() not in embedded]
        wrong += [path for path, text in foreign if path not in self.extra and text.encode() in embedded]
        if wrong:
            raise RuntimeError(f"{self.binary} holds {', '.join(wrong)}: a stale build")


class Builds:
    """Everything one run compares: `old` (<rev>), `new` (this build, `make build`'s), and the
    variants."""

    def __init__(self):
        self.old = Release()
        self.new = BINARY
        self.variants = {name: Variant(name, extra) for name, extra in test_files().items()}

    def build(self):
        self.old.build()
        every = [(path, text) for variant in self.variants.values() for path, text in variant.extra.items()]
        for variant in self.variants.values():
            variant.build(every)
