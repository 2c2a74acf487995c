"""`make chaos`: which faults, when, against what, all drawn from one seed.

The schedule is a pure function of (seed, duration, faults per kind): the same seed replays the
same faults at the same offsets against the same targets. Injecting them needs the running stack
(see chaos.py); this module only decides and records.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

KINDS = ("kill9", "sigterm", "broker_restart", "postgres_restart", "freeze", "duplicates", "poison")
# aiokafka's default session timeout (the services keep it): a member frozen longer is evicted and
# its partitions handed to the other replica; when it wakes it is a zombie that must rejoin.
CONSUMER_SESSION_TIMEOUT_S = 10.0


@dataclass
class Fault:
    kind: str
    at_s: float  # offset from the start of the load
    service: str | None = None  # kill9, sigterm, freeze: which service ...
    replica: int | None = None  # ... and which of its replicas
    broker: int | None = None  # broker_restart: which node (0-based)
    down_s: float = 0.0  # how long the target stays away (killed, stopped or frozen)
    count: int = 0  # duplicates, poison: how many records
    # Filled in while it runs:
    injected_at: float | None = None  # wall time
    ended_at: float | None = None  # wall time the target was back (restarted, resumed, records sent)
    recovered_at: float | None = None  # wall time the platform was healthy again (see chaos.Monitor)
    notes: list[str] = field(default_factory=list)

    @property
    def recovery_s(self) -> float | None:
        if self.injected_at is None or self.recovered_at is None:
            return None
        return round(self.recovered_at - self.injected_at, 2)

    def describe(self) -> str:
        target = {
            "kill9": f"{self.service}#{self.replica}",
            "sigterm": f"{self.service}#{self.replica}",
            "freeze": f"{self.service}#{self.replica}",
            "broker_restart": f"broker {self.broker}",
            "postgres_restart": "postgresql",
            "duplicates": f"{self.count} records",
            "poison": f"{self.count} records",
        }[self.kind]
        away = f", away {self.down_s:.1f}s" if self.down_s else ""
        return f"t+{self.at_s:6.1f}s {self.kind:<17} {target}{away}"

    def to_json(self) -> dict:
        out = asdict(self)
        out["recovery_s"] = self.recovery_s
        return out


# A fault must be worked off within this long after the last fault that struck while it was still being
# worked off (its storm), and never later than STORM_CAP_S after it struck.
RECOVER_AFTER_LAST_S = 180.0
STORM_CAP_S = 600.0


def recovery_deadline(fault: Fault, faults: list[Fault]) -> float:
    """Wall time by which `fault` must have recovered. Faults overlap: a second fault that strikes
    while the first is being worked off (both ledger replicas killed within seconds, PostgreSQL
    restarted a minute later) adds its own backlog, and the first cannot be judged apart from it.
    So a fault is judged from the end of the last fault of its storm: that one's end + 180 s, at most
    600 s after the fault itself. A storm that keeps coming still fails at the cap."""
    assert fault.injected_at is not None, "a fault is judged once injected"
    storm_end = max(
        (f.ended_at or f.injected_at or 0.0)
        for f in faults
        if f.injected_at is not None and f.injected_at >= fault.injected_at
    )
    storm_end = max(storm_end, fault.ended_at or fault.injected_at)
    return min(storm_end + RECOVER_AFTER_LAST_S, fault.injected_at + STORM_CAP_S)


def schedule(
    seed: int,
    duration_s: float,
    services: tuple[str, ...],
    *,
    replicas: int = 2,
    brokers: int = 3,
    per_kind: int = 1,
    records: int = 1000,
) -> list[Fault]:
    """`per_kind` faults of every kind at random offsets within the load's middle (10%-75% of it),
    in random order. They may overlap (chaos.Injector runs each in its own task); two on one target
    wait for each other."""
    rng = random.Random(seed)
    kinds = [kind for kind in KINDS for _ in range(per_kind)]
    rng.shuffle(kinds)
    offsets = sorted(rng.uniform(0.10, 0.75) * duration_s for _ in kinds)
    faults = []
    for kind, at_s in zip(kinds, offsets, strict=False):
        fault = Fault(kind, round(at_s, 2))
        if kind in ("kill9", "sigterm", "freeze"):
            fault.service = rng.choice(services)
            fault.replica = rng.randrange(replicas)
        if kind == "kill9":
            fault.down_s = round(rng.uniform(1.0, 4.0), 1)
        elif kind == "sigterm":
            fault.down_s = round(rng.uniform(1.0, 3.0), 1)
        elif kind == "freeze":
            fault.down_s = round(CONSUMER_SESSION_TIMEOUT_S + rng.uniform(2.0, 5.0), 1)
        elif kind == "broker_restart":
            fault.broker = rng.randrange(brokers)
            fault.down_s = round(rng.uniform(3.0, 8.0), 1)
        elif kind == "postgres_restart":
            fault.down_s = round(rng.uniform(1.0, 4.0), 1)
        else:
            fault.count = records
        faults.append(fault)
    return faults
