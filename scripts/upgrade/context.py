"""What every upgrade scenario runs in: the suite's settings and registry, the two pairs of builds
a rollout goes between (Versions), and the Context: the builds, the clusters the scenarios share
(each started when first asked for), the fleets step c carries on with, and the logs shown when
a scenario fails."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from fleet.topology import Clusters
from harness.cluster import Cluster
from harness.suite import Suite

from .builds import ours

ONLY = [name for name in os.environ.get("UPGRADE_ONLY", "").split(",") if name]
KEEP = os.environ.get("UPGRADE_KEEP") == "1"
PASSWORD = "upgrade-pw"
# The cluster of the scenarios without a fleet (durability off: it lives for one run).
PG_OPTIONS = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
              "-c", "max_connections=300"]
SCENARIOS = Suite()
scenario = SCENARIOS.scenario


@dataclass
class Versions:
    """Two builds a rollout goes between, old to new, on one database of the fleet's pair."""
    old: Path
    new: Path
    old_label: str
    new_label: str
    database: str
    old_has_records: bool  # the old build judges newer migrations by their records
    added: list = field(default_factory=list)  # the migrations the new build has and the old one has not
    changed: list = field(default_factory=list)  # those both have, with other bytes

    @property
    def old_refuses(self):
        """Whether the old build must refuse the schema the new one leaves: it predates records
        and a migration was added since, or one it knows was changed."""
        return bool(self.changed) or (bool(self.added) and not self.old_has_records)

    def sql_said(self):
        if self.changed:
            return f"changed since the old: {', '.join(self.changed)}"
        return f"added since the old: {', '.join(self.added)}" if self.added else "no migration added or changed"


class Context:
    def __init__(self, work, builds):
        self.work, self.builds = work, builds
        self.fleets = {}  # {database: Fleet}: step b's, for step c
        self.logs = []
        self._pair = self._cluster = None

    def versions(self, which):
        """`rev`: <rev> to this build; `expand`: this build to this build plus the expand variant."""
        b = self.builds
        if which == "rev":
            theirs, mine = b.old.migrations(), ours()
            return Versions(b.old.binary, b.new, b.old.label, "this build", "tasks", b.old.has_records(),
                            sorted(set(mine) - set(theirs)),
                            sorted(name for name in set(mine) & set(theirs) if mine[name] != theirs[name]))
        variant = b.variants["expand"]
        added = [path.rsplit("/", 1)[1] for path in variant.extra if path.startswith("sql/V")]
        return Versions(b.new, variant.binary, "this build", variant.label, "tasks_expand", True, added)

    def folder(self, name):
        path = self.work / name
        path.mkdir(exist_ok=True)
        return path

    def pair(self):
        """A primary and its synchronous standby (Clusters, as the fleet suite's failover fleet's):
        shared by the mixed fleets, each on a database of its own."""
        if self._pair is None:
            self._pair = Clusters(self.work)
            self._pair.start()
        return self._pair

    def cluster(self):
        """One plain cluster, shared by the scenarios without a fleet."""
        if self._cluster is None:
            self._cluster = Cluster(self.work, "pg", PASSWORD, PG_OPTIONS, app="upgrade", tag="upgrade")
            self._cluster.start()
        return self._cluster
