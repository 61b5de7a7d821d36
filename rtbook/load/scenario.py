"""What a load run does, typed and bounded at the boundary.

Every number has a range: a run is an experiment on someone's server, and a typo (``--rate 1e9``)
must be refused with the range, never attempted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rtbook.exceptions import ConfigError

__all__ = ["KINDS", "LIMITS", "Mix", "Scenario"]

Kind = Literal["connect", "broadcast", "presence", "postgres_changes"]
KINDS: tuple[str, ...] = ("connect", "broadcast", "presence", "postgres_changes")

# name -> (lowest, highest) accepted; documented in the README's load section.
LIMITS: dict[str, tuple[float, float]] = {
    "connections": (1, 20_000),
    "senders": (1, 1_000),
    "receivers": (0, 10_000),
    "topics": (1, 1_000),
    "rate": (0.1, 200_000),
    "join_rate": (0.1, 10_000),
    "duration_s": (0.5, 3_600),
    "ramp_s": (0, 600),
    "payload_bytes": (0, 256 * 1024),
    "late_ms": (1, 60_000),
    "processes": (1, 64),
}


@dataclass(frozen=True)
class Scenario:
    """One load scenario.

    Attributes:
        kind: ``connect`` (``connections`` sockets joined at ``join_rate`` and held);
            ``broadcast`` (per topic, ``senders`` send and ``receivers`` listen; ``rate`` messages
            per second in total, spread evenly over the senders); ``presence`` (per topic,
            ``senders`` track a changed state ``rate`` times a second in total and every member,
            trackers included, must get each diff); ``postgres_changes`` (one writer INSERTs
            ``rate`` rows a second into the probe table ``rtbook_probe.events``, never another
            table; every receiver of every topic subscribes to it and must get each row).
        duration_s: how long messages are sent (connect: how long sockets are held).
        ramp_s: joins are spread over this long before sending starts (0: at ``join_rate``).
        ack: senders ask Realtime to acknowledge each broadcast (``config.broadcast.ack``).
        late_ms: a delivery slower than this counts as late (it still counts as delivered).
        processes: generator processes on this machine (one per core is the useful maximum).
    """

    kind: Kind = "broadcast"
    connections: int = 10
    senders: int = 1
    receivers: int = 4
    topics: int = 1
    rate: float = 10.0
    join_rate: float = 20.0
    duration_s: float = 10.0
    ramp_s: float = 0.0
    payload_bytes: int = 64
    ack: bool = False
    late_ms: float = 1_000.0
    processes: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"scenario {self.kind!r} is unknown; choose one of {', '.join(KINDS)}")
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ConfigError(f"--{name.replace('_', '-')} {value!r} is out of range; give {low:g} to {high:g}")
        if self.kind == "connect" and self.processes > self.connections:
            raise ConfigError(f"--processes {self.processes} is more than --connections {self.connections}")
        if self.kind == "postgres_changes" and self.processes > 1:
            raise ConfigError(
                "--processes must be 1 for postgres_changes: every subscriber receives every row, so the "
                "subscribers cannot be split over processes without splitting the accounting"
            )
        if self.kind != "connect" and self.processes > self.topics:
            raise ConfigError(
                f"--processes {self.processes} is more than --topics {self.topics}; each process drives whole "
                "topics (so a message's sender and receivers share one clock), give at most one per topic"
            )

    @property
    def sockets(self) -> int:
        """How many WebSockets the scenario opens."""
        if self.kind == "connect":
            return self.connections
        if self.kind == "postgres_changes":
            return self.topics * self.receivers
        return self.topics * (self.senders + self.receivers)

    @property
    def messages(self) -> int:
        """How many broadcasts are scheduled in all (0 for connect)."""
        return 0 if self.kind == "connect" else int(self.rate * self.duration_s)

    def share(self, index: int, count: int) -> Scenario:
        """The part process ``index`` of ``count`` runs: whole topics (or sockets), rate in proportion."""
        from dataclasses import replace

        if self.kind == "connect":
            base, extra = divmod(self.connections, count)
            n = base + (1 if index < extra else 0)
            return replace(self, connections=n, join_rate=max(self.join_rate * n / self.connections, 0.1), processes=1)
        base, extra = divmod(self.topics, count)
        topics = base + (1 if index < extra else 0)
        return replace(self, topics=topics, rate=max(self.rate * topics / self.topics, 0.1), processes=1)


MAX_MIX_PARTS = 8


@dataclass(frozen=True)
class Mix:
    """A weighted mix of scenarios run at once (``--scenario-file``), each part in a process of its own.

    The file (YAML or JSON)::

        duration_s: 30
        rate: 200            # in all, split by weight
        parts:
          - {kind: broadcast, weight: 3, senders: 1, receivers: 8, topics: 2}
          - {kind: presence, weight: 1, senders: 4, receivers: 4}
          - {kind: connect, connections: 200}
    """

    parts: tuple[Scenario, ...]
    weights: tuple[float, ...]

    @classmethod
    def from_mapping(cls, data: object, source: str) -> Mix:
        from dataclasses import fields

        if not isinstance(data, dict) or not isinstance(data.get("parts"), list) or not data["parts"]:
            raise ConfigError(f"{source}: a scenario file needs 'parts:', a list of scenarios (see rtbook load --help)")
        if len(data["parts"]) > MAX_MIX_PARTS:
            raise ConfigError(f"{source}: {len(data['parts'])} parts; at most {MAX_MIX_PARTS}")
        allowed = {f.name for f in fields(Scenario)} - {"processes"}
        shared = {k: v for k, v in data.items() if k != "parts"}
        unknown = set(shared) - allowed
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
        total = shared.pop("rate", None)
        parts, weights = [], []
        for i, raw in enumerate(data["parts"], 1):
            if not isinstance(raw, dict):
                raise ConfigError(f"{source}: part {i} is not a mapping")
            raw = dict(raw)
            weight = raw.pop("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1000:
                raise ConfigError(f"{source}: part {i} weight {weight!r}; give a number above 0, at most 1000")
            bad = set(raw) - allowed
            if bad:
                raise ConfigError(f"{source}: part {i}: unknown key(s) {', '.join(sorted(bad))}")
            parts.append({**shared, **raw})
            weights.append(float(weight))
        rated = [i for i, p in enumerate(parts) if p.get("kind", "broadcast") != "connect"]
        if total is not None:
            share = sum(weights[i] for i in rated) or 1.0
            for i in rated:
                parts[i]["rate"] = float(total) * weights[i] / share
        try:
            scenarios = tuple(Scenario(**p) for p in parts)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        return cls(scenarios, tuple(weights))

    @classmethod
    def load(cls, path: str) -> Mix:
        """Read a scenario file through the bounded reader (regular file, at most 64 KiB)."""
        from rtbook.bounded import read_text
        from rtbook.config.yamlfile import load_yaml

        return cls.from_mapping(load_yaml(read_text(path, "load scenario file"), path), path)
