"""outcomes' use cases: record and correct an outcome (each one transaction, given a way to open a
transaction and a `stage` function for its event), and read a referral's outcomes. The rules live in
domain.py; refusals are the shared typed ones."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialrx_shared.auth import Principal
from socialrx_shared.errors import Conflict, Forbidden, Invalid, NotFound
from socialrx_shared.events import (
    OUTCOME_RECORDED,
    Envelope,
    EventSpec,
    Instrument,
    MeasureScore,
    OutcomeRecorded,
    OutcomeStatus,
    Phase,
    Strict,
)
from socialrx_shared.upload import validation_message

from . import domain
from .store import measures, outcome_corrections, outcomes, referral_view

Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]
Stage = Callable[[AsyncSession, EventSpec, Strict], Awaitable[Envelope]]
Sessions = async_sessionmaker[AsyncSession]


class MeasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instrument: Instrument
    phase: Phase
    # Typed loosely on purpose: domain.validate refuses 3.0, "3" or true with a message naming the
    # item, where pydantic would quietly coerce some of them.
    answers: list[Any] = Field(
        max_length=20,
        json_schema_extra={"items": {"type": "integer"}},
        description="ONS4: 4 answers 0-10; WEMWBS: 14 answers 1-5; SWEMWBS: 7 answers 1-5",
    )


class NewOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: OutcomeStatus
    sessions_attended: Annotated[int, Field(ge=0, le=1000)]
    measures: list[MeasureIn] = Field(default_factory=list, max_length=10)

    def as_input(self) -> OutcomeInput:
        return OutcomeInput(
            self.status, self.sessions_attended, [MeasureInput(m.instrument, m.phase, m.answers) for m in self.measures]
        )


@dataclass(frozen=True)
class MeasureInput:
    instrument: str
    phase: str
    answers: list[object]


@dataclass(frozen=True)
class OutcomeInput:
    status: str
    sessions_attended: int
    measures: list[MeasureInput]


Scored = list[tuple[MeasureInput, domain.Score]]


def score_measures(measures_in: list[MeasureInput]) -> Scored:
    """Score every measure or refuse the lot, naming the measure and the item that is wrong."""
    scored: Scored = []
    seen: set[tuple[str, str]] = set()
    for position, measure in enumerate(measures_in):
        if (measure.instrument, measure.phase) in seen:
            raise Invalid(f"measures[{position}]: a second {measure.instrument} {measure.phase} in one outcome")
        seen.add((measure.instrument, measure.phase))
        try:
            scored.append((measure, domain.score(measure.instrument, measure.answers)))
        except domain.InvalidAnswers as exc:
            raise Invalid(f"measures[{position}]: {exc}") from None
    return scored


async def record_outcome(
    transaction: Transaction, stage: Stage, principal: Principal, referral_id: str, data: OutcomeInput
) -> dict:
    scored = score_measures(data.measures)
    now = datetime.now(timezone.utc)
    outcome_id = str(uuid.uuid4())
    async with _baseline_guard(), transaction() as session:
        referral = await _accepted_referral(session, principal, referral_id)
        await _refuse_second_baseline(session, referral_id, scored, except_outcome=None)
        await session.execute(
            insert(outcomes).values(
                outcome_id=outcome_id,
                referral_id=referral_id,
                status=data.status,
                sessions_attended=data.sessions_attended,
                recorded_at=now,
                recorded_by=principal.sub,
            )
        )
        await _insert_measures(session, outcome_id, referral_id, scored, now)
        await _publish(stage, session, referral, outcome_id, data, scored, now)
        changes = await _changes_for(session, referral_id, scored)
    return _answer(outcome_id, referral_id, data, scored, now, 1, changes)


async def correct_outcome(
    transaction: Transaction,
    stage: Stage,
    principal: Principal,
    referral_id: str,
    outcome_id: str,
    data: OutcomeInput,
    reason: str,
) -> dict:
    """Replace an outcome's status, sessions and measures; keep what it replaced; publish it again.

    The outcome keeps its id and its recorded_at: it is the same observation, put right, so a
    consumer that keys by outcome_id (the ledger pays once per outcome) does not count it twice.
    """
    scored = score_measures(data.measures)
    now = datetime.now(timezone.utc)
    async with _baseline_guard(), transaction() as session:
        referral = await _accepted_referral(session, principal, referral_id)
        current = (
            (
                await session.execute(
                    select(outcomes)
                    .where(outcomes.c.outcome_id == outcome_id, outcomes.c.referral_id == referral_id)
                    .with_for_update()
                )
            )
            .mappings()
            .first()
        )
        if current is None:
            raise NotFound(f"no outcome {outcome_id} on referral {referral_id}")
        await _refuse_second_baseline(session, referral_id, scored, except_outcome=outcome_id)
        previous = await _snapshot(session, current)
        await session.execute(
            insert(outcome_corrections).values(
                outcome_id=outcome_id,
                replaced_revision=current["revision"],
                previous=previous,
                reason=reason,
                corrected_by=principal.sub,
                corrected_at=now,
            )
        )
        revision = current["revision"] + 1
        await session.execute(
            update(outcomes)
            .where(outcomes.c.outcome_id == outcome_id)
            .values(status=data.status, sessions_attended=data.sessions_attended, revision=revision, corrected_at=now)
        )
        await session.execute(delete(measures).where(measures.c.outcome_id == outcome_id))
        recorded_at = current["recorded_at"]
        await _insert_measures(session, outcome_id, referral_id, scored, recorded_at)
        await _publish(
            stage, session, referral, outcome_id, data, scored, recorded_at, revision=revision, corrected_at=now
        )
        changes = await _changes_for(session, referral_id, scored)
    return _answer(outcome_id, referral_id, data, scored, recorded_at, revision, changes)


async def list_outcomes(sessions: Sessions, principal: Principal, referral_id: str) -> dict:
    """A referral's outcomes, their scores, and per instrument the change from baseline to latest follow-up."""
    async with sessions() as session:
        referral = await _visible_referral(session, principal, referral_id)
        rows = (
            (
                await session.execute(
                    select(outcomes)
                    .where(outcomes.c.referral_id == referral_id)
                    .order_by(outcomes.c.recorded_at, outcomes.c.outcome_id)
                )
            )
            .mappings()
            .all()
        )
        measure_rows = await _measure_rows(session, referral_id)
    by_outcome: dict[str, list[dict]] = {}
    for row in measure_rows:
        by_outcome.setdefault(row["outcome_id"], []).append(_scored_json(row["phase"], _rescore(row)))
    items = [
        {
            "outcome_id": r["outcome_id"],
            "status": r["status"],
            "sessions_attended": r["sessions_attended"],
            "recorded_at": r["recorded_at"],
            "revision": r["revision"],
            "corrected_at": r["corrected_at"],
            "measures": by_outcome.get(r["outcome_id"], []),
        }
        for r in rows
    ]
    changes = [_change_json(c) for c in baseline_to_latest(measure_rows).values()]
    return {"referral_id": referral_id, "referral_status": referral["status"], "items": items, "changes": changes}


def baseline_to_latest(measure_rows: list) -> dict[str, domain.Change]:
    return domain.changes_from((r["instrument"], r["phase"], list(r["answers"])) for r in measure_rows)


@asynccontextmanager
async def _baseline_guard() -> AsyncIterator[None]:
    # Two requests racing past the explicit check both reach the unique index; the loser gets this.
    try:
        yield
    except IntegrityError:
        raise Conflict(
            "a baseline for this instrument is already recorded for this referral; record a "
            "follow_up, or correct the earlier outcome through its /corrections path"
        ) from None


async def _visible_referral(
    session: AsyncSession, principal: Principal, referral_id: str, *, lock: bool = False
) -> dict:
    query = select(referral_view).where(referral_view.c.referral_id == referral_id)
    referral = (await session.execute(query.with_for_update() if lock else query)).mappings().first()
    if referral is None or referral["organisation_id"] is None:
        raise NotFound("no such referral (a new referral may take a moment to arrive)")
    allowed = (
        principal.role == "admin"
        or (principal.role == "charity" and principal.organisation_id == referral["organisation_id"])
        or (principal.role == "link_worker" and principal.pcn_id == referral["pcn_id"])
    )
    if not allowed:
        raise Forbidden(
            "only the organisation the referral was sent to, or a link worker of its PCN, "
            "may record or read its outcomes"
        )
    return dict(referral)


async def _accepted_referral(session: AsyncSession, principal: Principal, referral_id: str) -> dict:
    # The row lock orders concurrent recordings for one referral, so the baseline check holds.
    referral = await _visible_referral(session, principal, referral_id, lock=True)
    if referral["status"] != "accepted":
        raise Conflict(f"outcomes are recorded only for accepted referrals; this one is {referral['status']}")
    return referral


async def _refuse_second_baseline(
    session: AsyncSession, referral_id: str, scored: Scored, except_outcome: str | None
) -> None:
    wanted = [m.instrument for m, _ in scored if m.phase == "baseline"]
    if not wanted:
        return
    query = select(measures.c.instrument, measures.c.outcome_id).where(
        measures.c.referral_id == referral_id, measures.c.phase == "baseline", measures.c.instrument.in_(wanted)
    )
    if except_outcome is not None:
        query = query.where(measures.c.outcome_id != except_outcome)
    existing = (await session.execute(query)).first()
    if existing is not None:
        raise Conflict(
            f"a {existing.instrument} baseline is already recorded for this referral (outcome "
            f"{existing.outcome_id}); record a follow_up, or correct that outcome with POST "
            f"/referrals/{referral_id}/outcomes/{existing.outcome_id}/corrections"
        )


async def _insert_measures(
    session: AsyncSession, outcome_id: str, referral_id: str, scored: Scored, at: datetime
) -> None:
    for measure, score in scored:
        await session.execute(
            insert(measures).values(
                outcome_id=outcome_id,
                referral_id=referral_id,
                instrument=measure.instrument,
                phase=measure.phase,
                answers=score.item_scores,
                score=score.score,
                item_scores=score.item_scores,
                recorded_at=at,
            )
        )


async def _publish(
    stage: Stage,
    session: AsyncSession,
    referral: dict,
    outcome_id: str,
    data: OutcomeInput,
    scored: Scored,
    at: datetime,
    *,
    revision: int = 1,
    corrected_at: datetime | None = None,
) -> None:
    await stage(session, OUTCOME_RECORDED, _event(referral, outcome_id, data, scored, at, revision, corrected_at))


async def _snapshot(session: AsyncSession, current: RowMapping) -> dict:
    rows = (
        (
            await session.execute(
                select(measures.c.instrument, measures.c.phase, measures.c.answers).where(
                    measures.c.outcome_id == current["outcome_id"]
                )
            )
        )
        .mappings()
        .all()
    )
    return {
        "status": current["status"],
        "sessions_attended": current["sessions_attended"],
        "measures": [dict(r) for r in rows],
    }


async def _measure_rows(session: AsyncSession, referral_id: str) -> list:
    return list(
        (
            await session.execute(
                select(measures)
                .where(measures.c.referral_id == referral_id)
                .order_by(measures.c.recorded_at, measures.c.id)
            )
        )
        .mappings()
        .all()
    )


async def _changes_for(session: AsyncSession, referral_id: str, scored: Scored) -> list[dict]:
    """The change each follow-up in this outcome shows against the referral's baseline, where there is one."""
    followed = {m.instrument for m, _ in scored if m.phase == "follow_up"}
    all_changes = baseline_to_latest(await _measure_rows(session, referral_id))
    return [_change_json(c) for i, c in all_changes.items() if i in followed]


def _rescore(row: RowMapping) -> domain.Score:
    return domain.score(row["instrument"], list(row["answers"]))


def _scored_json(phase: str, score: domain.Score) -> dict:
    return {
        "instrument": score.instrument,
        "phase": phase,
        "score": score.score,
        "item_scores": score.item_scores,
        "bands": score.bands,
    }


def _change_json(change: domain.Change) -> dict:
    answer: dict = {"instrument": change.instrument, "change": change.delta, "flag": change.flag}
    if change.item_deltas is not None:
        answer["items"] = [
            {"item": name, "change": d, "flag": f}
            for name, d, f in zip(domain.ONS4_ITEMS, change.item_deltas, change.item_flags or [], strict=False)
        ]
    return answer


def _answer(
    outcome_id: str,
    referral_id: str,
    data: OutcomeInput,
    scored: Scored,
    recorded_at: datetime,
    revision: int,
    changes: list[dict],
) -> dict:
    return {
        "outcome_id": outcome_id,
        "referral_id": referral_id,
        "status": data.status,
        "sessions_attended": data.sessions_attended,
        "recorded_at": recorded_at,
        "revision": revision,
        "measures": [_scored_json(m.phase, s) for m, s in scored],
        "changes": changes,
    }


# --- Bulk: a charity's CSV of outcomes ------------------------------------------------------------

StageMany = Callable[[AsyncSession, EventSpec, Sequence[Strict]], Awaitable[None]]
BULK_OUTCOMES = uuid.UUID("5d0c8a4e-7b1f-4c2a-8e5d-3f9a6b2c1d70")
_REFERRAL_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class LineResult:
    line: int
    status: str  # recorded | already_recorded | refused
    referral_id: str | None = None
    outcome_id: str | None = None
    error: str | None = None


def _line_hash(organisation_id: str, referral_id: str, data: OutcomeInput) -> str:
    facts = {
        "organisation_id": organisation_id,
        "referral_id": referral_id,
        "status": data.status,
        "sessions_attended": data.sessions_attended,
        "measures": [[m.instrument, m.phase, m.answers] for m in data.measures],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


async def bulk_record_outcomes(
    transaction: Transaction,
    stage_many: StageMany,
    principal: Principal,
    lines: Sequence[tuple[int, dict[str, Any] | None, str | None]],
) -> list[LineResult]:
    """Record a charity's outcomes, a chunk of lines per transaction: each line checked like
    `POST /referrals/{id}/outcomes` (the charity's own accepted referrals, measures scored, one baseline
    per instrument); a refused line is reported with its number and changes nothing, the others go on.

    Idempotent per line by its content: the outcome's id is derived from the organisation and the
    line's facts, so the same line sent again (the file re-sent after fixing a bad row) records nothing
    new. Multi-row INSERTs; one `outcome.recorded` per outcome through the outbox (the ledger accrues
    from those as from any other)."""
    now = datetime.now(timezone.utc)
    organisation_id = principal.organisation_id or principal.sub
    results: dict[int, LineResult] = {}
    valid: list[tuple[int, str, OutcomeInput, Scored, str]] = []
    for number, record, error in lines:
        if record is None:
            results[number] = LineResult(number, "refused", error=error or "cannot be read")
            continue
        referral_id = str(record.get("referral_id", ""))
        if not _REFERRAL_ID.match(referral_id):
            results[number] = LineResult(
                number,
                "refused",
                error="referral_id: not a referral id (copy it from the inbox: letters, digits and dashes)",
            )
            continue
        try:
            data = NewOutcome.model_validate({k: v for k, v in record.items() if k != "referral_id"}).as_input()
            scored = score_measures(data.measures)
        except ValidationError as exc:
            results[number] = LineResult(number, "refused", referral_id, error=validation_message(exc))
            continue
        except Invalid as exc:
            results[number] = LineResult(number, "refused", referral_id, error=exc.detail)
            continue
        hashed = _line_hash(organisation_id, referral_id, data)
        valid.append((number, referral_id, data, scored, str(uuid.uuid5(BULK_OUTCOMES, hashed))))

    # (referral, instrument) -> the row of this file that recorded its baseline, across the chunks. An
    # earlier chunk's outcomes are committed, so a repeated row finds its outcome in the database.
    baseline_line: dict[tuple[str, str], int] = {}
    for first in range(0, len(valid), BULK_LINES_PER_TRANSACTION):
        chunk = valid[first : first + BULK_LINES_PER_TRANSACTION]
        async with _baseline_guard(), transaction() as session:
            results |= await _record_chunk(session, stage_many, principal, chunk, baseline_line, now)
    return [results[number] for number in sorted(results)]


# Rows are committed a chunk at a time, so the ledger starts on the first outcomes while the rest are
# written. A failure part-way leaves the chunks before it; sending the file again records only the rest,
# as every line is idempotent by its content.
BULK_LINES_PER_TRANSACTION = 1000


async def _record_chunk(
    session: AsyncSession,
    stage_many: StageMany,
    principal: Principal,
    valid: list[tuple[int, str, OutcomeInput, Scored, str]],
    baseline_line: dict[tuple[str, str], int],
    now: datetime,
) -> dict[int, LineResult]:
    results: dict[int, LineResult] = {}
    outcome_rows: list[dict[str, Any]] = []
    measure_rows: list[dict[str, Any]] = []
    events: list[OutcomeRecorded] = []
    recorded: list[tuple[int, str, str]] = []
    referral_ids = sorted({referral_id for _, referral_id, _, _, _ in valid})
    # Row locks in one order: concurrent recordings for these referrals wait, so the baseline check holds.
    found = (
        {
            row["referral_id"]: dict(row)
            for row in (
                await session.execute(
                    select(referral_view)
                    .where(referral_view.c.referral_id.in_(referral_ids))
                    .order_by(referral_view.c.referral_id)
                    .with_for_update()
                )
            ).mappings()
        }
        if referral_ids
        else {}
    )
    outcome_ids = [outcome_id for *_, outcome_id in valid]
    already = (
        set(await session.scalars(select(outcomes.c.outcome_id).where(outcomes.c.outcome_id.in_(outcome_ids))))
        if outcome_ids
        else set()
    )
    baselines = (
        {
            (row.referral_id, row.instrument): row.outcome_id
            for row in (
                await session.execute(
                    select(measures.c.referral_id, measures.c.instrument, measures.c.outcome_id).where(
                        measures.c.referral_id.in_(referral_ids), measures.c.phase == "baseline"
                    )
                )
            ).all()
        }
        if referral_ids
        else {}
    )
    for number, referral_id, data, scored, outcome_id in valid:
        if outcome_id in already:
            results[number] = LineResult(number, "already_recorded", referral_id, outcome_id)
            continue
        referral = found.get(referral_id)
        problem = _bulk_refusal(principal, referral)
        if problem:
            results[number] = LineResult(number, "refused", referral_id, error=problem)
            continue
        assert referral is not None
        second = next(
            (
                m.instrument
                for m, _ in scored
                if m.phase == "baseline"
                and ((referral_id, m.instrument) in baselines or (referral_id, m.instrument) in baseline_line)
            ),
            None,
        )
        if second is not None:
            earlier = (
                f"row {baseline_line[(referral_id, second)]} of this file"
                if (referral_id, second) in baseline_line
                else f"outcome {baselines[(referral_id, second)]}"
            )
            results[number] = LineResult(
                number,
                "refused",
                referral_id,
                error=(
                    f"a {second} baseline is already recorded for this referral ({earlier}); record a follow_up, "
                    "or correct that outcome"
                ),
            )
            continue
        for measure, _ in scored:
            if measure.phase == "baseline":
                baseline_line[(referral_id, measure.instrument)] = number
        already.add(outcome_id)  # the same line twice in this file: recorded once
        outcome_rows.append(
            dict(
                outcome_id=outcome_id,
                referral_id=referral_id,
                status=data.status,
                sessions_attended=data.sessions_attended,
                recorded_at=now,
                recorded_by=principal.sub,
            )
        )
        measure_rows.extend(
            dict(
                outcome_id=outcome_id,
                referral_id=referral_id,
                instrument=m.instrument,
                phase=m.phase,
                answers=s.item_scores,
                score=s.score,
                item_scores=s.item_scores,
                recorded_at=now,
            )
            for m, s in scored
        )
        events.append(_event(referral, outcome_id, data, scored, now))
        recorded.append((number, referral_id, outcome_id))
    if outcome_rows:
        await session.execute(insert(outcomes), outcome_rows)
        if measure_rows:
            await session.execute(insert(measures), measure_rows)
        await stage_many(session, OUTCOME_RECORDED, events)
    for number, referral_id, outcome_id in recorded:
        results[number] = LineResult(number, "recorded", referral_id, outcome_id)
    return results


def _bulk_refusal(principal: Principal, referral: dict | None) -> str | None:
    """Why this line's referral takes no outcome from this charity (the single recording's rules)."""
    if referral is None or referral["organisation_id"] is None:
        return "no such referral (a new referral may take a moment to arrive)"
    if principal.organisation_id != referral["organisation_id"]:
        return (
            "this referral was not sent to your organisation: only the organisation it was sent to may record "
            "its outcomes"
        )
    if referral["status"] != "accepted":
        return f"outcomes are recorded only for accepted referrals; this one is {referral['status']}"
    return None


def _event(
    referral: dict,
    outcome_id: str,
    data: OutcomeInput,
    scored: Scored,
    at: datetime,
    revision: int = 1,
    corrected_at: datetime | None = None,
) -> OutcomeRecorded:
    return OutcomeRecorded(
        outcome_id=outcome_id,
        referral_id=referral["referral_id"],
        organisation_id=referral["organisation_id"],
        service_id=referral["service_id"],
        pcn_id=referral["pcn_id"],
        status=data.status,  # type: ignore[arg-type]
        sessions_attended=data.sessions_attended,
        measures=[
            MeasureScore(
                instrument=m.instrument,
                phase=m.phase,
                score=s.score,  # type: ignore[arg-type]
                item_scores=s.item_scores,
            )
            for m, s in scored
        ],
        recorded_at=at,
        revision=revision,
        corrected_at=corrected_at,
    )
