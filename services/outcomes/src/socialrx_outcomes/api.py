"""The outcomes API: record an outcome with scored measures; report outcomes before counts."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from socialrx_shared.auth import Principal, require
from socialrx_shared.events import OUTCOME_RECORDED, Instrument, MeasureScore, OutcomeRecorded, OutcomeStatus, Phase
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import measures, outcomes, referral_view

router = APIRouter(tags=["outcomes"])


def runtime_of(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


class MeasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instrument: Instrument
    phase: Phase
    answers: list[int] = Field(max_length=20)


class NewOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: OutcomeStatus
    sessions_attended: Annotated[int, Field(ge=0, le=1000)]
    measures: list[MeasureIn] = Field(default_factory=list, max_length=10)


def _authorise(principal: Principal, referral: dict) -> None:
    """The accepting charity, or a link worker of the referring PCN: the same 404 otherwise."""
    allowed = (
        (principal.role == "charity" and principal.organisation_id == referral["organisation_id"])
        or (principal.role == "link_worker" and principal.pcn_id == referral["pcn_id"])
    )
    if not allowed:
        raise HTTPException(404, detail="no such referral")


@router.post("/referrals/{referral_id}/outcomes", status_code=201,
             summary="Record an outcome with wellbeing measures (accepting charity or the PCN's link worker)")
async def record_outcome(referral_id: str, body: NewOutcome, request: Request,
                         principal: Principal = Depends(require("charity", "link_worker"))) -> dict:
    scored: list[tuple[MeasureIn, domain.Score]] = []
    for position, measure in enumerate(body.measures):
        try:
            scored.append((measure, domain.score(measure.instrument, measure.answers)))
        except domain.InvalidAnswers as exc:
            raise HTTPException(422, detail=f"measures[{position}]: {exc}") from None
    rt = runtime_of(request)
    now = datetime.now(timezone.utc)
    outcome_id = str(uuid.uuid4())
    try:
        async with rt.transaction() as session:
            referral = (await session.execute(
                select(referral_view).where(referral_view.c.referral_id == referral_id).with_for_update()
            )).mappings().first()
            if referral is None or referral["organisation_id"] is None:
                raise HTTPException(404, detail="no such referral (a new referral may take a moment to arrive)")
            _authorise(principal, dict(referral))
            if referral["status"] != "accepted":
                raise HTTPException(409, detail=f"outcomes are recorded only for accepted referrals; this one is {referral['status']}")
            await session.execute(insert(outcomes).values(
                outcome_id=outcome_id, referral_id=referral_id, status=body.status,
                sessions_attended=body.sessions_attended, recorded_at=now, recorded_by=principal.sub))
            for measure, score in scored:
                await session.execute(insert(measures).values(
                    outcome_id=outcome_id, referral_id=referral_id, instrument=measure.instrument,
                    phase=measure.phase, answers=measure.answers, score=score.score,
                    item_scores=score.item_scores, recorded_at=now))
            event = OutcomeRecorded(
                outcome_id=outcome_id, referral_id=referral_id, organisation_id=referral["organisation_id"],
                service_id=referral["service_id"], pcn_id=referral["pcn_id"], status=body.status,
                sessions_attended=body.sessions_attended,
                measures=[MeasureScore(instrument=m.instrument, phase=m.phase, score=s.score,
                                       item_scores=s.item_scores) for m, s in scored],
                recorded_at=now,
            )
            await rt.stage(session, OUTCOME_RECORDED, event)
    except IntegrityError:
        raise HTTPException(409, detail="a baseline for this instrument is already recorded for this referral; "
                                        "record a follow_up instead") from None
    return {
        "outcome_id": outcome_id, "referral_id": referral_id, "status": body.status,
        "sessions_attended": body.sessions_attended, "recorded_at": now,
        "measures": [{"instrument": m.instrument, "phase": m.phase, "score": s.score,
                      "item_scores": s.item_scores, "bands": s.bands} for m, s in scored],
    }
