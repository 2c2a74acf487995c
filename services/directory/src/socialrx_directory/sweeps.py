"""Changes the clock makes: safeguarding policies expire, unanswered referrals are declined.

Both sweeps are safe to run on several replicas at once: each change locks its row and re-checks
(a referral already decided is skipped; a service is republished only while its gate differs from
what was last published). `clock` is injectable so tests can move time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from sqlalchemy import select

from socialrx_shared.logging import get_logger
from socialrx_shared.runtime import ServiceRuntime

from . import commands, domain
from .store import referral_inbox, services

log = get_logger(__name__)

Clock = Callable[[], datetime]
AUTO_DECLINER = "system:no-response"


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


async def safeguarding_sweep(rt: ServiceRuntime, now: datetime) -> list[str]:
    """Publish service.updated for every service whose gate flipped by itself (e.g. a policy expired)."""
    today = now.date()
    flipped: list[str] = []
    async with rt.transaction() as session:
        rows = (
            await session.execute(
                select(
                    services.c.id,
                    services.c.status,
                    services.c.capacity,
                    services.c.safeguarding_policy_valid_until,
                    services.c.published_accepting,
                )
            )
        ).all()
        for row in rows:
            gate = domain.gate(row.status, row.capacity, row.safeguarding_policy_valid_until, today)
            if gate.accepting_referrals != row.published_accepting:
                await commands.stage_service_updated(rt, session, row.id, today=today)
                flipped.append(row.id)
    if flipped:
        log.info("safeguarding sweep republished services", count=len(flipped))
    return flipped


async def auto_decline_sweep(rt: ServiceRuntime, now: datetime) -> list[str]:
    """Decline (reason no_response) every referral left unanswered for domain.AUTO_DECLINE_AFTER."""
    async with rt.sessionmaker() as session:
        due = (
            (
                await session.execute(
                    select(referral_inbox.c.referral_id).where(
                        referral_inbox.c.status == domain.DECIDABLE,
                        referral_inbox.c.referred_at <= now - domain.AUTO_DECLINE_AFTER,
                    )
                )
            )
            .scalars()
            .all()
        )
    declined: list[str] = []
    for referral_id in due:
        try:
            # One transaction each: a charity deciding at the same moment only loses its own race.
            async with rt.transaction() as session:
                await commands.decline(rt, session, referral_id, "no_response", AUTO_DECLINER, at=now)
            declined.append(referral_id)
        except domain.DecisionConflict:
            continue
    if declined:
        log.info("auto-declined unanswered referrals", count=len(declined))
    return declined


class Periodic:
    """Runs `job` every `interval_s` until stopped; a failing run is logged and tried again next time."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        job: Callable[[], Awaitable[object]],
        on_stop: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.job = job
        self.on_stop = on_stop  # work the job started and did not wait for (webhook calls in flight)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=15)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("background job stopped before finishing", job=self.name)
        if self.on_stop is not None:
            await self.on_stop()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.job()
            except Exception as exc:  # database away, say: the next round tries again
                log.warning("background job failed; will retry", job=self.name, error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):  # the interval passed: run again
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)
