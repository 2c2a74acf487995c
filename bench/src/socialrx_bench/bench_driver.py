"""The bench's load driver: referral lifecycles through the public HTTP API, as people would.

A lifecycle is: link worker POST /referrals (referral-intake) -> charity POST /referrals/{id}/accept
(directory) -> charity POST /referrals/{id}/outcomes (outcomes) -> the ledger accrues two payments
due by itself from the events (referral accepted, outcome recorded). No bulk-import path is used.

Each step runs in its own pool of workers, so a referral waiting for the next service to learn of
it (events travel asynchronously) never holds back the others. A step answered "not known yet"
(404, or 409 "not accepted yet") is retried after a short, growing delay; those retries are counted.

A dropped connection (a keep-alive connection the server closed, a reset: any `httpx.TransportError`)
is retried as a real client would, with a retry that cannot double an effect: a create carries an
`Idempotency-Key` (the same on every retry, so the retry answers with the referral the first attempt
made); an accept or outcome whose retry is refused because the first attempt already took effect
(409 "already accepted" / "baseline already recorded") is done, not failed. Such retries are counted
(`http_retries_connection`), and so are the retries that found their effect already made.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import httpx

from socialrx_harness.testing import auth

FEE_REFERRAL_PENCE = 5000
FEE_OUTCOME_PENCE = 12000
OUTCOME_BODY = {
    "status": "completed",
    "sessions_attended": 6,
    "measures": [{"instrument": "SWEMWBS", "phase": "baseline", "answers": [3, 3, 3, 3, 3, 3, 3]}],
}
PERSON = {
    "nhs_number": "9434765919",
    "given_name": "Ada",
    "family_name": "Benchperson",
    "date_of_birth": "1951-03-14",
    "postcode": "LS1 4AP",
    "accessibility_needs": [],
}


@dataclass
class World:
    """Organisations with one funded service each, and the tokens of everyone who acts."""

    urls: dict[str, str]
    pcn_id: str
    organisations: list[str]
    services: list[str]
    charities: dict[str, dict[str, str]]  # organisation id -> charity token header
    link_worker: dict[str, str]
    finance: dict[str, str]
    admin: dict[str, str]


async def agree_once_known(
    client: httpx.AsyncClient, ledger_url: str, finance: dict[str, str], body: dict
) -> httpx.Response:
    """POST /agreements, retried while the ledger has not yet learnt of the organisation (it does so
    from the directory's organisation.registered, moments after the organisation is added)."""
    for _ in range(300):
        agreement = await client.post(ledger_url + "/agreements", headers=finance, json=body)
        if "no organisation with id" not in agreement.text:
            break
        await asyncio.sleep(0.1)
    agreement.raise_for_status()
    return agreement


async def make_world(
    client: httpx.AsyncClient, urls: dict[str, str], secret: str, *, organisations: int = 8, pcn_id: str | None = None
) -> World:
    pcn_id = pcn_id or "B" + uuid.uuid4().hex[:8].upper()  # a PCN of the bench's own: its figures stand apart
    admin = auth(secret, "admin")
    finance = auth(secret, "finance", pcn_id=pcn_id)
    orgs, services, charities = [], [], {}
    for i in range(organisations):
        org = await client.post(
            urls["directory"] + "/organizations", headers=admin, json={"name": f"Bench Neighbours {pcn_id} {i}"}
        )
        org.raise_for_status()
        org_id = org.json()["id"]
        charity = auth(secret, "charity", organisation_id=org_id)
        service = await client.post(
            urls["directory"] + "/services",
            headers=charity,
            json={
                "organization_id": org_id,
                "name": f"Bench walk and talk {i}",
                "needs": ["loneliness"],
                "capacity": 100_000,
                "postcode": "LS1 4AP",
                "safeguarding_policy_valid_until": "2099-01-01",
            },
        )
        service.raise_for_status()
        await agree_once_known(
            client,
            urls["funding-ledger"],
            finance,
            {
                "organisation_id": org_id,
                "per_referral_pence": FEE_REFERRAL_PENCE,
                "per_outcome_pence": FEE_OUTCOME_PENCE,
                "period": "quarterly",
                "days_after_period_end": 30,
                "starts_on": "2020-04-01",
            },
        )
        orgs.append(org_id)
        services.append(service.json()["id"])
        charities[org_id] = charity
    link_worker = auth(secret, "link_worker", pcn_id=pcn_id, practice_id="B82005", sub=f"lw-bench-{pcn_id.lower()}")
    return World(urls, pcn_id, orgs, services, charities, link_worker, finance, admin)


@dataclass
class PhaseResult:
    name: str
    offered_rate: float | None  # lifecycles/s offered (None: flat out)
    referral_ids: list[str] = field(default_factory=list)
    created_at: dict[str, float] = field(default_factory=dict)  # referral id -> wall time of its 201
    first_create_sent: float = 0.0
    last_outcome_done: float = 0.0
    requests: int = 0
    retries_not_yet_known: int = 0
    retries_connection: int = 0  # a dropped connection or reset, retried (idempotently)
    retries_already_done: int = 0  # of those, the first attempt had taken effect (409 on the retry)
    errors: dict[str, int] = field(default_factory=dict)
    lifecycle_s: list[float] = field(default_factory=list)  # POST /referrals sent -> outcome 201, as the driver saw it
    http_s: dict[str, list[float]] = field(default_factory=dict)  # step -> seconds of each request

    def timed(self, step: str, seconds: float) -> None:
        self.http_s.setdefault(step, []).append(seconds)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


@dataclass
class _Item:
    referral_id: str
    organisation_id: str
    started: float
    delay_s: float = 0.02
    attempts: int = 0
    dropped: bool = False  # a request of the current step lost its connection: it may have taken effect


class Driver:
    def __init__(self, client: httpx.AsyncClient, world: World, *, workers: int = 24, max_attempts: int = 2000) -> None:
        self.client = client
        self.world = world
        self.workers = workers
        self.max_attempts = max_attempts

    async def run(self, name: str, n: int, rate: float | None = None) -> PhaseResult:
        """`n` lifecycles; creations flat out (`rate` None) or paced at `rate` per second."""
        result = PhaseResult(name, rate)
        if n <= 0:
            return result
        to_accept: asyncio.Queue[_Item | None] = asyncio.Queue()
        to_record: asyncio.Queue[_Item | None] = asyncio.Queue()
        done = asyncio.Event()
        remaining = [n]
        pending_delayed: set[asyncio.Task] = set()

        def later(queue: asyncio.Queue, item: _Item) -> None:
            item.delay_s = min(item.delay_s * 1.6, 1.0)

            async def put() -> None:
                await asyncio.sleep(item.delay_s)
                queue.put_nowait(item)

            task = asyncio.create_task(put())
            pending_delayed.add(task)
            task.add_done_callback(pending_delayed.discard)

        def finished(item: _Item | None) -> None:
            if item is not None:
                result.lifecycle_s.append(time.time() - item.started)
            remaining[0] -= 1
            if remaining[0] == 0:
                result.last_outcome_done = time.time()
                done.set()

        async def create(i: int) -> None:
            org_index = i % len(self.world.organisations)
            body = {
                "service_id": self.world.services[org_index],
                "needs": ["loneliness"],
                "person": PERSON,
                "consent": {"given": True, "recorded_at": "2026-11-01T10:00:00Z"},
            }
            started = time.time()
            # One key per lifecycle, the same on every retry: a retry after a dropped connection answers
            # with the referral the first attempt made, never a second one.
            headers = {**self.world.link_worker, "Idempotency-Key": str(uuid.uuid4())}
            for attempt in range(self.max_attempts):
                result.requests += 1
                sent = time.perf_counter()
                try:
                    answer = await self.client.post(
                        self.world.urls["referral-intake"] + "/referrals", headers=headers, json=body
                    )
                    result.timed("POST /referrals", time.perf_counter() - sent)
                except httpx.TransportError:
                    result.retries_connection += 1
                    await asyncio.sleep(0.05)
                    continue
                except httpx.HTTPError as exc:
                    result.error(f"create {type(exc).__name__}")
                    await asyncio.sleep(0.2)
                    continue
                if answer.status_code == 201:
                    rid = answer.json()["id"]
                    result.referral_ids.append(rid)
                    result.created_at[rid] = time.time()
                    to_accept.put_nowait(_Item(rid, self.world.organisations[org_index], started))
                    return
                if answer.status_code in (404, 409):  # the service's service.updated not seen yet (start-up)
                    result.retries_not_yet_known += 1
                    await asyncio.sleep(min(0.05 * (attempt + 1), 1.0))
                    continue
                result.error(f"create {answer.status_code}")
                await asyncio.sleep(0.2)
            finished(None)

        async def step(queue: asyncio.Queue, url_of, ok: int, retry_when, already_done: str, then) -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                item.attempts += 1
                result.requests += 1
                sent = time.perf_counter()
                try:
                    answer = await self.client.post(
                        url_of(item),
                        headers=self.world.charities[item.organisation_id],
                        json=OUTCOME_BODY if ok == 201 else None,
                    )
                    result.timed("POST accept" if ok == 200 else "POST outcomes", time.perf_counter() - sent)
                except httpx.TransportError:
                    result.retries_connection += 1
                    item.dropped = True
                    later(queue, item)
                    continue
                except httpx.HTTPError as exc:
                    result.error(f"{(queue is to_accept and 'accept') or 'outcome'} {type(exc).__name__}")
                    later(queue, item)
                    continue
                if answer.status_code == ok:
                    item.dropped = False
                    then(item)
                elif item.dropped and answer.status_code == 409 and already_done in answer.text:
                    # The attempt whose connection dropped had taken effect: done, not failed.
                    result.retries_already_done += 1
                    item.dropped = False
                    then(item)
                elif retry_when(answer) and item.attempts < self.max_attempts:
                    result.retries_not_yet_known += 1
                    later(queue, item)
                else:
                    result.error(f"{(queue is to_accept and 'accept') or 'outcome'} {answer.status_code}")
                    finished(None)

        def accepted(item: _Item) -> None:
            item.delay_s = 0.02
            to_record.put_nowait(item)

        accept_workers = [
            asyncio.create_task(
                step(
                    to_accept,
                    lambda it: f"{self.world.urls['directory']}/referrals/{it.referral_id}/accept",
                    200,
                    lambda a: a.status_code == 404,
                    "already accepted",
                    accepted,
                )
            )
            for _ in range(self.workers)
        ]
        record_workers = [
            asyncio.create_task(
                step(
                    to_record,
                    lambda it: f"{self.world.urls['outcomes']}/referrals/{it.referral_id}/outcomes",
                    201,
                    lambda a: a.status_code == 404 or (a.status_code == 409 and "only for accepted" in a.text),
                    "baseline is already recorded",
                    finished,
                )
            )
            for _ in range(self.workers)
        ]

        result.first_create_sent = time.time()
        if rate is None:
            counter = iter(range(n))

            async def creator() -> None:
                for i in counter:
                    await create(i)

            await asyncio.gather(*(creator() for _ in range(self.workers)))
        else:
            # Open loop: creation i starts at first + i/rate whatever happened to the ones before.
            creations = []
            for i in range(n):
                wait = result.first_create_sent + i / rate - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                creations.append(asyncio.create_task(create(i)))
            await asyncio.gather(*creations)
        await done.wait()
        for queue, pool in ((to_accept, accept_workers), (to_record, record_workers)):
            for _ in pool:
                queue.put_nowait(None)
        await asyncio.gather(*accept_workers, *record_workers)
        return result
