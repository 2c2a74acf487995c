"""The event contracts every socialrx service speaks.

One topic per event type (`<entity>.<event>.v<major>`), a CloudEvents 1.0 structured JSON envelope,
and a strict pydantic model of each type's `data`. Events carry no direct identifiers of a person:
only the pseudonymous `person_ref`, an age band, a postcode district and needs.

`parse_event` is the one door through which a consumed message enters a service: whatever it
refuses is a poison message (it goes to `<topic>.dlq`), and its error says what was wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

SPECVERSION: Literal["1.0"] = "1.0"
TYPE_PREFIX = "socialrx."
DLQ_SUFFIX = ".dlq"

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
OdsCode = Annotated[str, StringConstraints(min_length=3, max_length=12, pattern=r"^[A-Z0-9]+$")]
NeedCode = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
Pence = Annotated[int, Field(ge=0, le=10_000_000_000)]
AgeBand = Literal["0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75-84", "85+"]
PostcodeDistrict = Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")]
FinancialPeriod = Annotated[str, StringConstraints(pattern=r"^\d{4}/\d{2}-(Q[1-4]|M(0[1-9]|1[0-2]))$")]


class Strict(BaseModel):
    """Unknown fields are refused: a typo in a producer must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferralCreated(Strict):
    referral_id: Id
    pcn_id: OdsCode
    practice_id: OdsCode
    link_worker_id: Id
    organisation_id: Id
    service_id: Id
    needs: list[NeedCode] = Field(min_length=1, max_length=20)
    person_ref: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    age_band: AgeBand
    postcode_district: PostcodeDistrict
    accessibility_needs: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=20
    )
    consent_to_share: Literal[True]
    created_at: AwareDatetime


class ReferralAccepted(Strict):
    referral_id: Id
    organisation_id: Id
    service_id: Id
    pcn_id: OdsCode
    accepted_at: AwareDatetime


DeclineReason = Literal["no_capacity", "not_eligible", "unable_to_contact", "person_declined", "no_response", "other"]


class ReferralDeclined(Strict):
    referral_id: Id
    organisation_id: Id
    service_id: Id
    pcn_id: OdsCode
    reason: DeclineReason
    declined_at: AwareDatetime


Instrument = Literal["ONS4", "WEMWBS", "SWEMWBS"]
Phase = Literal["baseline", "follow_up"]
OutcomeStatus = Literal["engaged", "completed", "disengaged"]


class MeasureScore(Strict):
    instrument: Instrument
    phase: Phase
    # ONS4 has no total: its score is the per-item list; the others carry a single number.
    score: float | None = None
    item_scores: list[int] | None = None


class OutcomeRecorded(Strict):
    outcome_id: Id
    referral_id: Id
    organisation_id: Id
    service_id: Id | None = None
    pcn_id: OdsCode
    status: OutcomeStatus
    sessions_attended: Annotated[int, Field(ge=0, le=1000)]
    measures: list[MeasureScore] = Field(default_factory=list, max_length=10)
    recorded_at: AwareDatetime
    # A correction publishes the same outcome_id again with a higher revision (and when it was made),
    # so a consumer can tell a correction from a redelivery and keep the newest.
    revision: Annotated[int, Field(ge=1)] = 1
    corrected_at: AwareDatetime | None = None


PaymentBasis = Literal["referral_accepted", "outcome_recorded", "block_grant"]


class PaymentDue(Strict):
    payment_id: Id
    agreement_id: Id
    pcn_id: OdsCode
    organisation_id: Id
    referral_id: Id | None
    basis: PaymentBasis
    amount_pence: Pence
    currency: Literal["GBP"] = "GBP"
    period: FinancialPeriod
    due_date: date
    # When the work was done (accepted_at / recorded_at / the grant's period): the due date follows from it.
    business_date: date | None = None
    # What the agreement's yearly cap refused of this fee (then amount_pence is what is owed).
    refused_over_cap_pence: Pence = 0
    # The instant of the cause (accepted_at / recorded_at): settlements pay a referral's fee before
    # its outcome fee when both fall due on one business day.
    caused_at: AwareDatetime | None = None


class PaymentReversed(Strict):
    """A payment due taken back, wholly, by a new reversing entry: a correction changed what is owed
    (e.g. an outcome corrected from completed to engaged). What of it was still open is no longer
    owed; what had already been paid is held as a credit for the organisation (never lost)."""

    payment_id: Id
    agreement_id: Id
    pcn_id: OdsCode
    organisation_id: Id
    referral_id: Id | None
    basis: PaymentBasis
    reversed_pence: Pence  # the whole payment's amount
    open_cancelled_pence: Pence  # of it, what was still owed
    overpaid_pence: Pence  # of it, what had been paid: now a credit held for the organisation
    currency: Literal["GBP"] = "GBP"
    business_date: date  # the UK day of the correction
    reason: Annotated[str, StringConstraints(min_length=1, max_length=300)]


class Allocation(Strict):
    payment_id: Id
    amount_pence: Pence


class PaymentSettled(Strict):
    settlement_id: Id
    pcn_id: OdsCode
    organisation_id: Id
    amount_pence: Pence
    currency: Literal["GBP"] = "GBP"
    paid_on: date
    reference: Annotated[str, StringConstraints(min_length=1, max_length=140)]
    allocations: list[Allocation] = Field(default_factory=list)


ServiceStatus = Literal["active", "inactive", "defunct", "temporarily closed"]


class ServiceUpdated(Strict):
    service_id: Id
    organisation_id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    status: ServiceStatus
    needs: list[NeedCode] = Field(default_factory=list)
    capacity_available: Annotated[int, Field(ge=0)]
    safeguarding_policy_valid_until: date | None
    accepting_referrals: bool
    # Why the service is not accepting (None when it is): lets referral-intake refuse clearly.
    not_accepting_reason: str | None = None
    # Monotonic per service: a consumer keeps the newest view even if an older update is replayed.
    version: Annotated[int, Field(ge=1)] = 1
    updated_at: AwareDatetime


class OrganisationRegistered(Strict):
    """The directory added an organisation (a charity or community group): other services learn
    which organisation ids are real from this, not from what a form was typed with."""

    organisation_id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    registered_at: AwareDatetime


RefusalReason = Literal[
    "no_capacity", "safeguarding_policy_missing", "safeguarding_policy_expired", "not_active", "not_accepting"
]


class ReferralRefused(Strict):
    """referral-intake refused a referral for the service's sake (not for a fault in the request):
    unmet need, counted by the directory. Nothing about the person but an age band and a district;
    no referral was made, so there is no referral id and no person_ref."""

    refusal_id: Id  # the same request retried with its Idempotency-Key keeps its id: counted once
    pcn_id: OdsCode
    organisation_id: Id
    service_id: Id
    needs: list[NeedCode] = Field(min_length=1, max_length=20)
    age_band: AgeBand
    postcode_district: PostcodeDistrict
    reason: RefusalReason
    refused_at: AwareDatetime


@dataclass(frozen=True)
class EventSpec:
    """What is fixed about one event type: its topic, its `type`, its model and its key field."""

    name: str  # e.g. "referral.created"
    major: int
    model: type[Strict]
    key_field: str
    # payment.due is keyed by its referral; a block grant has none, so it falls back to the agreement.
    fallback_key_field: str | None = None

    def key_of(self, data: Strict) -> str:
        value = getattr(data, self.key_field)
        if value is None and self.fallback_key_field:
            value = getattr(data, self.fallback_key_field)
        return str(value)

    @property
    def topic(self) -> str:
        return f"{self.name}.v{self.major}"

    @property
    def dlq_topic(self) -> str:
        return self.topic + DLQ_SUFFIX

    @property
    def ce_type(self) -> str:
        return f"{TYPE_PREFIX}{self.name}.v{self.major}"


REFERRAL_CREATED = EventSpec("referral.created", 1, ReferralCreated, "referral_id")
REFERRAL_ACCEPTED = EventSpec("referral.accepted", 1, ReferralAccepted, "referral_id")
REFERRAL_DECLINED = EventSpec("referral.declined", 1, ReferralDeclined, "referral_id")
OUTCOME_RECORDED = EventSpec("outcome.recorded", 1, OutcomeRecorded, "referral_id")
PAYMENT_DUE = EventSpec("payment.due", 1, PaymentDue, "referral_id", "agreement_id")
PAYMENT_SETTLED = EventSpec("payment.settled", 1, PaymentSettled, "organisation_id")
SERVICE_UPDATED = EventSpec("service.updated", 1, ServiceUpdated, "service_id")
PAYMENT_REVERSED = EventSpec("payment.reversed", 1, PaymentReversed, "referral_id", "agreement_id")
ORGANISATION_REGISTERED = EventSpec("organisation.registered", 1, OrganisationRegistered, "organisation_id")
REFERRAL_REFUSED = EventSpec("referral.refused", 1, ReferralRefused, "service_id")

ALL_EVENTS: tuple[EventSpec, ...] = (
    REFERRAL_CREATED,
    REFERRAL_ACCEPTED,
    REFERRAL_DECLINED,
    OUTCOME_RECORDED,
    PAYMENT_DUE,
    PAYMENT_SETTLED,
    SERVICE_UPDATED,
    PAYMENT_REVERSED,
    ORGANISATION_REGISTERED,
    REFERRAL_REFUSED,
)
BY_TOPIC = {spec.topic: spec for spec in ALL_EVENTS}
BY_TYPE = {spec.ce_type: spec for spec in ALL_EVENTS}
ALL_TOPICS = tuple(spec.topic for spec in ALL_EVENTS)
ALL_DLQ_TOPICS = tuple(spec.dlq_topic for spec in ALL_EVENTS)


class Envelope(Strict):
    """CloudEvents 1.0 structured-mode JSON envelope."""

    specversion: Literal["1.0"]
    id: uuid.UUID
    source: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    type: str
    time: AwareDatetime
    subject: Id
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in BY_TYPE:
            raise ValueError(f"unknown event type {value!r}; known: {sorted(BY_TYPE)}")
        return value

    @property
    def spec(self) -> EventSpec:
        return BY_TYPE[self.type]

    def payload(self) -> Strict:
        return self.spec.model.model_validate(self.data)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class PoisonMessage(ValueError):
    """A message no retry can fix: it goes to the DLQ with this error."""


def new_event(spec: EventSpec, data: Strict, *, source: str, at: datetime | None = None) -> Envelope:
    if not isinstance(data, spec.model):
        raise TypeError(f"{spec.name} needs {spec.model.__name__}, got {type(data).__name__}")
    if at is not None and at.tzinfo is None:
        raise ValueError("an event's time must say its timezone")
    # Built, not validated: `data` was validated when it was made, and every other field is ours
    # (validating the envelope again cost a third of staging an event; parse_event validates on receipt).
    return Envelope.model_construct(
        specversion=SPECVERSION,
        id=uuid.uuid4(),
        source=source,
        type=spec.ce_type,
        time=at or datetime.now(timezone.utc),
        subject=spec.key_of(data),
        data=data.model_dump(mode="json"),
    )


def parse_event(topic: str, raw: bytes | None) -> tuple[Envelope, Strict]:
    """Decode and validate a message consumed from `topic`, or raise PoisonMessage saying why."""
    spec = BY_TOPIC.get(topic)
    if spec is None:
        raise PoisonMessage(f"no contract for topic {topic!r}")
    if not raw:
        raise PoisonMessage("empty message value")
    try:
        # Parsed and validated in one pass by pydantic-core (no json.loads, then a walk of the dict).
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise PoisonMessage(f"value is not JSON: {_errors(exc)}") from exc
        raise PoisonMessage(f"invalid CloudEvents envelope: {_errors(exc)}") from exc
    if envelope.type != spec.ce_type:
        raise PoisonMessage(f"type {envelope.type!r} does not belong on topic {topic!r} (expects {spec.ce_type!r})")
    try:
        payload = spec.model.model_validate(envelope.data)
    except ValidationError as exc:
        raise PoisonMessage(f"invalid {spec.name} data: {_errors(exc)}") from exc
    key_value = spec.key_of(payload)
    if envelope.subject != key_value:
        raise PoisonMessage(f"subject {envelope.subject!r} differs from the event's key {key_value!r}")
    return envelope, payload


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:10])


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event's envelope with its `data` model, keyed by topic."""
    schemas: dict[str, dict[str, Any]] = {}
    for spec in ALL_EVENTS:
        data_schema = spec.model.model_json_schema()
        defs = data_schema.pop("$defs", {})
        envelope = Envelope.model_json_schema()
        envelope["title"] = spec.ce_type
        envelope["properties"]["type"] = {"const": spec.ce_type, "type": "string"}
        envelope["properties"]["data"] = data_schema
        if defs:
            envelope["$defs"] = {**envelope.get("$defs", {}), **defs}
        schemas[spec.topic] = envelope
    return schemas
