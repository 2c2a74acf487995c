"""referral-intake's use cases: each one transaction, given what it needs (a way to open a
transaction, a `stage` function for events), refusing with the shared typed refusals.

The request models live here too: they are the commands' input, whether they came as one JSON
body (`POST /referrals`) or as one line of a bulk upload (`POST /referrals/bulk`), so both are
validated and refused by exactly the same rules.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.auth import Principal
from socialrx_shared.errors import Conflict, Forbidden, Invalid, NotFound
from socialrx_shared.events import (
    REFERRAL_CREATED,
    REFERRAL_REFUSED,
    Envelope,
    EventSpec,
    NeedCode,
    OdsCode,
    ReferralCreated,
    ReferralRefused,
    Strict,
)
from socialrx_shared.upload import validation_message

from . import domain
from .store import contact_access_audit, person_details, referrals, services_view, timeline

Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]
Stage = Callable[[AsyncSession, EventSpec, Strict], Awaitable[Envelope]]
StageMany = Callable[[AsyncSession, EventSpec, Sequence[Strict]], Awaitable[None]]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nhs_number: Annotated[str, StringConstraints(strip_whitespace=True, max_length=12)]
    given_name: Name
    family_name: Name
    date_of_birth: date
    postcode: Annotated[str, StringConstraints(strip_whitespace=True, max_length=10)]
    phone: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ()-]{6,20}$")] | None = None
    email: Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    accessibility_needs: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=20
    )

    @field_validator("nhs_number")
    @classmethod
    def _nhs(cls, value: str) -> str:
        problem = domain.nhs_number_problem(value)
        if problem:
            raise ValueError(f"invalid NHS number: {problem}")
        return domain.normalise_nhs_number(value)

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str) -> str:
        normalised = domain.normalise_postcode(value)
        if normalised is None:
            raise ValueError("not a UK postcode (e.g. 'LS1 4AP')")
        return normalised

    @field_validator("date_of_birth")
    @classmethod
    def _dob(cls, value: date) -> date:
        if value > date.today() or value.year < 1900:
            raise ValueError("date of birth must be a real past date")
        return value


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    given: bool
    recorded_at: AwareDatetime


class NewReferral(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    needs: list[NeedCode] = Field(min_length=1, max_length=20)
    person: Person
    consent: Consent
    practice_id: OdsCode | None = Field(
        None, description="The GP practice's ODS code; defaults to the token's practice_id claim"
    )


def request_hash(body: NewReferral) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def request_problem(body: NewReferral, principal: Principal, now: datetime) -> str | None:
    """The rules a request breaks before any service is looked at (consent, the practice), or None."""
    if not body.consent.given:
        return "consent.given must be true: a person must consent before they are referred"
    consent = domain.consent_problem(body.consent.recorded_at, now)
    if consent:
        return consent
    if (body.practice_id or principal.practice_id) is None:
        return "practice_id is needed: the GP practice's ODS code, e.g. 'B82005'"
    return None


@dataclass(frozen=True)
class Created:
    referral_id: str
    replayed: bool


async def create_referral(
    transaction: Transaction,
    stage: Stage,
    ref_key: bytes,
    principal: Principal,
    body: NewReferral,
    idempotency_key: str | None,
) -> Created:
    """Refer a person; with an Idempotency-Key, a retry answers with the referral already made."""
    now = datetime.now(timezone.utc)
    problem = request_problem(body, principal, now)
    if problem:
        raise Invalid(problem)
    practice_id = body.practice_id or principal.practice_id
    assert practice_id is not None
    hashed = request_hash(body)
    link_worker_id = domain.link_worker_ref(ref_key, principal.sub)
    if idempotency_key:
        existing = await _replay(transaction, principal, link_worker_id, idempotency_key, hashed)
        if existing is not None:
            return Created(existing, replayed=True)
    referral_id = str(uuid.uuid4())
    try:
        async with transaction() as session:
            service = (
                (await session.execute(select(services_view).where(services_view.c.service_id == body.service_id)))
                .mappings()
                .first()
            )
            refusal = domain.service_refusal(dict(service) if service else None)
            if service is None:
                raise NotFound(refusal or "unknown service")
            if refusal:
                refused = _refusal_event(principal, body, dict(service), now, idempotency_key)
            else:
                refused = None
                known_needs = await _known_needs(session, sorted(set(body.needs) - set(service["needs"])))
                needs_problem = domain.needs_problem(body.needs, service["needs"], known_needs)
                if needs_problem:
                    raise Invalid(needs_problem)
                row = _rows(
                    ref_key,
                    principal,
                    link_worker_id,
                    body,
                    dict(service),
                    referral_id,
                    practice_id,
                    idempotency_key,
                    hashed,
                    now,
                )
                await session.execute(insert(referrals).values(row.referral))
                await session.execute(insert(person_details).values(row.person))
                await session.execute(insert(timeline).values(row.timeline))
                await stage(session, REFERRAL_CREATED, row.event)
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the race: answer with its referral.
        existing = (
            await _replay(transaction, principal, link_worker_id, idempotency_key, hashed) if idempotency_key else None
        )
        if existing is None:
            raise
        return Created(existing, replayed=True)
    if refused is not None:
        # Published as unmet need in its own transaction: the referral itself is not made.
        if refused.needs:
            async with transaction() as session:
                await stage(session, REFERRAL_REFUSED, refused)
        raise Conflict(refusal or "service refuses referrals")
    return Created(referral_id, replayed=False)


async def _known_needs(session: AsyncSession, unserved: list[str]) -> set[str]:
    # Only a refused request pays for looking further: which of the unserved needs any service has.
    if not unserved:
        return set()
    return set(
        await session.scalars(
            select(func.jsonb_array_elements_text(services_view.c.needs))
            .distinct()
            .where(services_view.c.needs.has_any(pg_array(unserved)))
        )
    )


async def _replay(
    transaction: Transaction, principal: Principal, link_worker_id: str, key: str, hashed: str
) -> str | None:
    async with transaction() as session:
        row = (
            await session.execute(
                select(referrals.c.id, referrals.c.request_hash)
                # Rows written before link workers were pseudonymised hold the raw subject.
                .where(
                    referrals.c.link_worker_id.in_([link_worker_id, principal.sub]), referrals.c.idempotency_key == key
                )
            )
        ).first()
    if row is None:
        return None
    if row.request_hash != hashed:
        raise Conflict("this Idempotency-Key was used for a different referral: use a new key")
    return str(row.id)


@dataclass(frozen=True)
class _Rows:
    referral: dict[str, Any]
    person: dict[str, Any]
    timeline: dict[str, Any]
    event: ReferralCreated


def _rows(
    ref_key: bytes,
    principal: Principal,
    link_worker_id: str,
    body: NewReferral,
    service: dict,
    referral_id: str,
    practice_id: str,
    idempotency_key: str | None,
    hashed: str,
    now: datetime,
) -> _Rows:
    """The rows and the event one accepted request makes (the same for one request or one upload line)."""
    person = body.person
    event = ReferralCreated(
        referral_id=referral_id,
        pcn_id=principal.pcn_id,
        practice_id=practice_id,
        link_worker_id=link_worker_id,  # never the subject itself: it may be an email
        organisation_id=service["organisation_id"],
        service_id=body.service_id,
        needs=body.needs,
        person_ref=domain.person_ref(ref_key, person.nhs_number),
        age_band=domain.age_band(person.date_of_birth, now.date()),
        postcode_district=domain.postcode_district(person.postcode),
        accessibility_needs=person.accessibility_needs,
        consent_to_share=True,
        created_at=now,
    )
    return _Rows(
        referral=dict(
            id=referral_id,
            pcn_id=event.pcn_id,
            practice_id=practice_id,
            link_worker_id=link_worker_id,
            organisation_id=event.organisation_id,
            service_id=event.service_id,
            needs=event.needs,
            accessibility_needs=event.accessibility_needs,
            person_ref=event.person_ref,
            age_band=event.age_band,
            postcode_district=event.postcode_district,
            status="created",
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
            request_hash=hashed,
        ),
        person=dict(
            referral_id=referral_id,
            nhs_number=person.nhs_number,
            given_name=person.given_name,
            family_name=person.family_name,
            date_of_birth=person.date_of_birth,
            postcode=person.postcode,
            phone=person.phone,
            email=person.email,
            consent_recorded_at=body.consent.recorded_at,
        ),
        timeline=dict(referral_id=referral_id, status="created", at=now, detail={"service_id": body.service_id}),
        event=event,
    )


REFUSALS = uuid.UUID("6f1d2c55-5b8e-4d8c-9a61-2f0e7c1b9d40")


def _refusal_event(
    principal: Principal, body: NewReferral, service: dict, now: datetime, idempotency_key: str | None
) -> ReferralRefused:
    """The refusal as unmet need. Only needs the service serves count: asking a service for what it
    never offers is not unmet need (an event with no needs is not published)."""
    needs = [need for need in body.needs if need in service["needs"]]
    # A retry of the same request (same link worker and Idempotency-Key) keeps its id: counted once.
    refusal_id = uuid.uuid5(REFUSALS, f"{principal.sub}:{idempotency_key}") if idempotency_key else uuid.uuid4()
    return ReferralRefused(
        refusal_id=str(refusal_id),
        pcn_id=principal.pcn_id,
        organisation_id=service["organisation_id"],
        service_id=service["service_id"],
        needs=needs,
        age_band=domain.age_band(body.person.date_of_birth, now.date()),
        postcode_district=domain.postcode_district(body.person.postcode),
        reason=domain.refusal_reason(service, now.date()),
        refused_at=now,
    )


@dataclass(frozen=True)
class Contact:
    referral_id: str
    given_name: str
    family_name: str
    phone: str | None
    email: str | None
    postcode: str
    accessibility_needs: list[str]


async def read_contact(transaction: Transaction, principal: Principal, referral_id: str) -> Contact:
    """The person's contact details for the charity that accepted the referral; the reading is audited."""
    async with transaction() as session:
        row = (
            (
                await session.execute(
                    select(
                        referrals.c.status, referrals.c.organisation_id, person_details, referrals.c.accessibility_needs
                    )
                    .join(person_details, person_details.c.referral_id == referrals.c.id)
                    .where(referrals.c.id == referral_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None or row["organisation_id"] != principal.organisation_id:
            raise NotFound("no such referral")
        if row["status"] not in ("accepted", "outcome_recorded"):
            raise Forbidden("contact details are available only after your organisation accepted the referral")
        await session.execute(
            insert(contact_access_audit).values(
                referral_id=referral_id,
                sub=principal.sub,
                role=principal.role,
                organisation_id=principal.organisation_id,
            )
        )
    return Contact(
        referral_id=referral_id,
        given_name=row["given_name"],
        family_name=row["family_name"],
        phone=row["phone"],
        email=row["email"],
        postcode=row["postcode"],
        accessibility_needs=row["accessibility_needs"],
    )


# --- Bulk: many referrals from one upload (a PCN moving from another system) ------------------------

BULK_REFERRALS = uuid.UUID("0b6f3f7e-2f36-4d1e-9a3c-5a2b8f3d6c11")


@dataclass(frozen=True)
class LineResult:
    line: int
    status: str  # created | already_created | refused
    referral_id: str | None = None
    error: str | None = None


# Lines are committed a chunk at a time: the directory and outcomes start on the first referrals while
# the rest are written (on two cores an upload of 20,000 took 11.8 s to be seen downstream in one
# transaction). A failure part-way leaves the chunks before it; sending the file again creates only the
# rest, as every line is idempotent by its content.
BULK_LINES_PER_TRANSACTION = 1000


@dataclass
class _MadeInThisFile:
    """What earlier lines of this upload made, across its chunks: a line's key to its referral."""

    first_of: dict[str, str] = field(default_factory=dict)
    known_needs: set[str] | None = None


async def _create_chunk(
    session: AsyncSession,
    stage_many: StageMany,
    ref_key: bytes,
    principal: Principal,
    link_worker_id: str,
    valid: list[tuple[int, NewReferral, str]],
    made: _MadeInThisFile,
    now: datetime,
) -> dict[int, LineResult]:
    results: dict[int, LineResult] = {}
    service_ids = sorted({body.service_id for _, body, _ in valid})
    services = {
        row["service_id"]: dict(row)
        for row in (
            await session.execute(select(services_view).where(services_view.c.service_id.in_(service_ids)))
        ).mappings()
    }
    keys = [f"bulk:{hashed}" for _, _, hashed in valid]
    already = {
        row.idempotency_key: str(row.id)
        for row in (
            await session.execute(
                select(referrals.c.id, referrals.c.idempotency_key).where(
                    referrals.c.link_worker_id.in_([link_worker_id, principal.sub]),
                    referrals.c.idempotency_key.in_(keys),
                )
            )
        ).all()
    }
    to_create: list[tuple[int, _Rows]] = []
    refused_events: list[ReferralRefused] = []
    for number, body, hashed in valid:
        key = f"bulk:{hashed}"
        if key in already or key in made.first_of:
            # Sent before (or twice in this file): the referral that line made, not a second one.
            results[number] = LineResult(number, "already_created", referral_id=already.get(key) or made.first_of[key])
            continue
        service = services.get(body.service_id)
        refusal = domain.service_refusal(service)
        if service is None:
            results[number] = LineResult(number, "refused", error=refusal)
            continue
        if refusal:
            event = _refusal_event(principal, body, service, now, key)
            if event.needs:
                refused_events.append(event)
            results[number] = LineResult(number, "refused", error=refusal)
            continue
        if set(body.needs) - set(service["needs"]):
            if made.known_needs is None:
                made.known_needs = set(
                    await session.scalars(select(func.jsonb_array_elements_text(services_view.c.needs)).distinct())
                )
            needs_problem = domain.needs_problem(body.needs, service["needs"], made.known_needs)
            if needs_problem:
                results[number] = LineResult(number, "refused", error=needs_problem)
                continue
        referral_id = str(uuid.uuid5(BULK_REFERRALS, f"{link_worker_id}:{hashed}"))
        practice_id = body.practice_id or principal.practice_id
        assert practice_id is not None
        to_create.append(
            (
                number,
                _rows(ref_key, principal, link_worker_id, body, service, referral_id, practice_id, key, hashed, now),
            )
        )
        made.first_of[key] = referral_id
    created: set[str] = set()
    if to_create:
        # ON CONFLICT: a concurrent upload of the same lines made them first; theirs stand.
        created = set(
            await session.scalars(
                pg_insert(referrals).on_conflict_do_nothing().returning(referrals.c.id),
                [rows.referral for _, rows in to_create],
            )
        )
        fresh = [rows for _, rows in to_create if rows.referral["id"] in created]
        if fresh:
            await session.execute(insert(person_details), [rows.person for rows in fresh])
            await session.execute(insert(timeline), [rows.timeline for rows in fresh])
            await stage_many(session, REFERRAL_CREATED, [rows.event for rows in fresh])
    if refused_events:
        await stage_many(session, REFERRAL_REFUSED, refused_events)
    for number, rows in to_create:
        referral_id = rows.referral["id"]
        results[number] = LineResult(
            number, "created" if referral_id in created else "already_created", referral_id=referral_id
        )
    return results


async def bulk_create_referrals(
    transaction: Transaction,
    stage_many: StageMany,
    ref_key: bytes,
    principal: Principal,
    lines: Sequence[tuple[int, dict[str, Any] | None, str | None]],
) -> list[LineResult]:
    """Create the referrals of an upload, a chunk of lines per transaction: each line validated and
    refused by the same rules as `POST /referrals`; a refused line is reported with its number and
    changes nothing, the others go on.

    Idempotent per line by its content: a line's key is the hash of the referral it asks for, so the
    same line sent again (the whole file re-sent after fixing a bad line) answers with the referral it
    made. Staged with multi-row INSERTs and one `referral.created` per referral through the outbox."""
    now = datetime.now(timezone.utc)
    link_worker_id = domain.link_worker_ref(ref_key, principal.sub)
    results: dict[int, LineResult] = {}
    valid: list[tuple[int, NewReferral, str]] = []
    for number, record, error in lines:
        if record is None:
            results[number] = LineResult(number, "refused", error=error or "cannot be read")
            continue
        try:
            body = NewReferral.model_validate(record)
        except ValidationError as exc:
            results[number] = LineResult(number, "refused", error=validation_message(exc))
            continue
        problem = request_problem(body, principal, now)
        if problem:
            results[number] = LineResult(number, "refused", error=problem)
            continue
        valid.append((number, body, request_hash(body)))

    made = _MadeInThisFile()
    for first in range(0, len(valid), BULK_LINES_PER_TRANSACTION):
        chunk = valid[first : first + BULK_LINES_PER_TRANSACTION]
        async with transaction() as session:
            results |= await _create_chunk(session, stage_many, ref_key, principal, link_worker_id, chunk, made, now)
    return [results[number] for number in sorted(results)]
