"""`make chaos`: the load. Referral lifecycles at a fixed rate through the HTTP APIs of two replicas
of every service, with the retries a real client makes.

- Every request goes to the next replica in turn (a round-robin load balancer). A request that fails
  in transit (connection refused or reset, a timeout: the replica was killed, stopped or frozen) or
  answers 5xx is sent again, to the other replica, after a short growing pause.
- A create carries an `Idempotency-Key`, and a retry sends the same key: it must answer the same
  referral, never make a second one.
- A retried accept or decline that already took effect answers 409 "already accepted/declined"; a
  retried outcome answers 409 naming the baseline already recorded: both count as done.
- What each lifecycle does is drawn from the run's seed: about 10% are declined, about 10% of
  outcomes are `engaged` (not a qualifying status: no outcome fee), about 10% are corrected (the
  same status, sessions recounted). Settlements are posted every few seconds as it goes.

What the run did (`Lifecycle`, `Settlement`) is the expectation the invariants are checked against:
the fees owed are computed from it, not read from the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import date

import httpx

from socialrx_bench.bench_driver import FEE_OUTCOME_PENCE, FEE_REFERRAL_PENCE, PERSON, World

TRANSIENT_STATUSES = {500, 502, 503, 504}
BASELINE = [{"instrument": "SWEMWBS", "phase": "baseline", "answers": [3, 3, 3, 3, 3, 3, 3]}]
EXISTING_OUTCOME = re.compile(r"\(outcome ([0-9a-f-]{36})\)")


@dataclass
class Plan:
    organisation: int
    decline: bool
    outcome_status: str  # completed (qualifies for the outcome fee) or engaged (does not)
    correct: bool


def plan_for(seed: int, index: int, organisations: int) -> Plan:
    rng = random.Random(f"{seed}:{index}")
    decline = rng.random() < 0.10
    return Plan(
        organisation=index % organisations,
        decline=decline,
        outcome_status="engaged" if rng.random() < 0.10 else "completed",
        correct=not decline and rng.random() < 0.10,
    )


@dataclass
class Lifecycle:
    index: int
    plan: Plan
    key: str
    started: float = 0.0
    finished: float | None = None
    referral_id: str | None = None
    accepted: bool = False
    declined: bool = False
    outcome_id: str | None = None
    corrected: bool = False
    error: str | None = None
    step: str = "new"  # where it is now (the progress line counts them: a stall shows where)

    @property
    def expected_fees(self) -> list[str]:
        """The payments this lifecycle must cause, once each (computed from what the run did)."""
        fees = []
        if self.accepted:
            fees.append("referral_accepted")
            if self.outcome_id and self.plan.outcome_status == "completed":
                fees.append("outcome_recorded")
        return fees


@dataclass
class Settlement:
    organisation_id: str
    reference: str
    amount_pence: int
    settlement_id: str | None = None


@dataclass
class LoadStats:
    requests: int = 0
    retries_in_transit: int = 0  # connection refused/reset, timeouts: sent again
    retries_not_yet_known: int = 0  # 404 / 409 before an event reached the next service
    retries_5xx: dict[int, int] = field(default_factory=dict)
    already_done: dict[str, int] = field(default_factory=dict)  # a retry that found its effect already there
    refusals: dict[str, int] = field(default_factory=dict)  # unexpected 4xx: a lifecycle given up

    def bump(self, table: dict, key) -> None:
        table[key] = table.get(key, 0) + 1


IN_FLIGHT_MAX = 128


class Balancer:
    """Round-robin over a service's replicas; what fails in transit or with 5xx is sent again."""

    def __init__(
        self, client: httpx.AsyncClient, urls: dict[str, list[str]], stats: LoadStats, give_up_at: float
    ) -> None:
        self.client, self.urls, self.stats, self.give_up_at = client, urls, stats, give_up_at
        self.turn = {service: 0 for service in urls}
        # A real client fleet has a bounded number of requests in flight. Unbounded, a stall (PostgreSQL
        # restarting) piles thousands of waiting requests into httpx's pool, whose bookkeeping is linear
        # in them per event: the driver then starves its own event loop, faults and monitor included.
        self.in_flight = asyncio.Semaphore(IN_FLIGHT_MAX)

    async def send(self, service: str, method: str, path: str, *, headers: dict, json=None) -> httpx.Response:
        pause = 0.1
        while True:
            replicas = self.urls[service]
            self.turn[service] = (self.turn[service] + 1) % len(replicas)
            url = replicas[self.turn[service]] + path
            self.stats.requests += 1
            try:
                async with self.in_flight:
                    answer = await self.client.request(method, url, headers=headers, json=json)
                if answer.status_code not in TRANSIENT_STATUSES:
                    return answer
                self.stats.bump(self.stats.retries_5xx, answer.status_code)
            except httpx.TransportError:
                self.stats.retries_in_transit += 1
            if time.time() > self.give_up_at:
                raise TimeoutError(f"{method} {path} still failing at the load's deadline")
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 2.0)


class Load:
    def __init__(self, balancer: Balancer, world: World, seed: int) -> None:
        self.http, self.world, self.seed = balancer, world, seed
        self.stats = balancer.stats
        self.lifecycles: list[Lifecycle] = []
        self.extra: list[Lifecycle] = []  # the concurrency probes' referrals: expected effects too
        self.settlements: list[Settlement] = []

    @property
    def everything(self) -> list[Lifecycle]:
        return self.extra + self.lifecycles

    async def _until(
        self, what: str, service: str, path: str, headers: dict, json, done, not_yet, life: Lifecycle | None = None
    ) -> httpx.Response:
        """Send until `done(answer)`; `not_yet(answer)` is an eventual-consistency wait, anything else gives up."""
        if life is not None:
            life.step = what
        pause = 0.05
        while True:
            answer = await self.http.send(service, "POST", path, headers=headers, json=json)
            if done(answer):
                return answer
            if not_yet(answer) and time.time() < self.http.give_up_at:
                self.stats.retries_not_yet_known += 1
                await asyncio.sleep(pause)
                pause = min(pause * 1.6, 1.0)
                continue
            self.stats.bump(self.stats.refusals, f"{what} {answer.status_code}")
            raise RuntimeError(f"{what} answered {answer.status_code}: {answer.text[:200]}")

    async def lifecycle(self, life: Lifecycle) -> None:
        w = self.world
        org = w.organisations[life.plan.organisation]
        charity = w.charities[org]
        life.started = time.time()
        try:
            body = {
                "service_id": w.services[life.plan.organisation],
                "needs": ["loneliness"],
                "person": PERSON,
                "consent": {"given": True, "recorded_at": "2026-11-01T10:00:00Z"},
            }
            created = await self._until(
                "create",
                "referral-intake",
                "/referrals",
                {**w.link_worker, "Idempotency-Key": life.key},
                body,
                lambda a: a.status_code in (200, 201),
                lambda a: a.status_code in (404, 409) and "Idempotency-Key" not in a.text,
                life,
            )
            life.referral_id = rid = created.json()["id"]
            if life.plan.decline:
                await self._until(
                    "decline",
                    "directory",
                    f"/referrals/{rid}/decline",
                    charity,
                    {"reason": "person_declined"},
                    lambda a: self._decided(a, "declined"),
                    lambda a: a.status_code == 404,
                    life,
                )
                life.declined = True
            else:
                await self._until(
                    "accept",
                    "directory",
                    f"/referrals/{rid}/accept",
                    charity,
                    None,
                    lambda a: self._decided(a, "accepted"),
                    lambda a: a.status_code == 404,
                    life,
                )
                life.accepted = True
                outcome = {"status": life.plan.outcome_status, "sessions_attended": 6, "measures": BASELINE}
                recorded = await self._until(
                    "outcome",
                    "outcomes",
                    f"/referrals/{rid}/outcomes",
                    charity,
                    outcome,
                    lambda a: a.status_code == 201 or (a.status_code == 409 and "baseline is already" in a.text),
                    lambda a: a.status_code == 404 or (a.status_code == 409 and "only for accepted" in a.text),
                    life,
                )
                if recorded.status_code == 409:
                    self.stats.bump(self.stats.already_done, "outcome")
                    life.outcome_id = EXISTING_OUTCOME.search(recorded.text).group(1)
                else:
                    life.outcome_id = recorded.json()["outcome_id"]
                if life.plan.correct:
                    correction = {**outcome, "sessions_attended": 5, "reason": "chaos run: sessions recounted"}
                    await self._until(
                        "correction",
                        "outcomes",
                        f"/referrals/{rid}/outcomes/{life.outcome_id}/corrections",
                        charity,
                        correction,
                        lambda a: a.status_code in (200, 201),
                        lambda a: a.status_code == 404,
                        life,
                    )
                    life.corrected = True
            life.finished = time.time()
            life.step = "done"
        except Exception as exc:
            life.error = f"{type(exc).__name__}: {exc}"[:300]
            life.step = "failed"

    def _decided(self, answer: httpx.Response, decision: str) -> bool:
        if answer.status_code == 200:
            return True
        if answer.status_code == 409 and f"already {decision}" in answer.text:
            self.stats.bump(self.stats.already_done, decision)
            return True
        return False

    async def run(self, n: int, rate: float, *, settle_every_s: float = 5.0) -> None:
        """`n` lifecycles, one started every 1/rate seconds whatever happened to the ones before (open loop)."""
        tasks: list[asyncio.Task] = []
        settling = asyncio.create_task(self._settle_while(settle_every_s))
        first = time.time()
        for i in range(n):
            wait = first + i / rate - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            life = Lifecycle(i, plan_for(self.seed, i, len(self.world.organisations)), str(uuid.uuid4()))
            self.lifecycles.append(life)
            tasks.append(asyncio.create_task(self.lifecycle(life)))
        await asyncio.gather(*tasks)
        settling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await settling

    async def _settle_while(self, every_s: float) -> None:
        rng = random.Random(f"{self.seed}:settlements")
        k = 0
        while True:
            await asyncio.sleep(every_s)
            k += 1
            org = self.world.organisations[k % len(self.world.organisations)]
            settlement = Settlement(org, f"chaos-{self.world.pcn_id}-{k}", rng.randrange(1_000, 60_000))
            try:
                answer = await self._until(
                    "settlement",
                    "funding-ledger",
                    "/settlements",
                    {**self.world.finance, "Idempotency-Key": settlement.reference},
                    {
                        "organisation_id": org,
                        "amount_pence": settlement.amount_pence,
                        "paid_on": date.today().isoformat(),
                        "reference": settlement.reference,
                    },
                    lambda a: a.status_code in (200, 201),
                    lambda a: False,
                )
                settlement.settlement_id = answer.json().get("settlement_id")
                self.settlements.append(settlement)
            except (RuntimeError, TimeoutError):
                pass  # counted in stats.refusals; a settlement not acknowledged is not expected in the ledger


def nominal_fee_pence(basis: str) -> int:
    return FEE_REFERRAL_PENCE if basis == "referral_accepted" else FEE_OUTCOME_PENCE
