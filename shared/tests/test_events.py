"""The event contracts: round trips, refusals with clear errors, and the exported JSON Schemas."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone

import jsonschema
import pytest

from socialrx_shared import events as ev

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=timezone.utc)

SAMPLES: dict[str, ev.Strict] = {
    ev.REFERRAL_CREATED.topic: ev.ReferralCreated(
        referral_id="r-1",
        pcn_id="U12345",
        practice_id="B82005",
        link_worker_id="lw-1",
        organisation_id="org-1",
        service_id="svc-1",
        needs=["loneliness"],
        person_ref="a" * 64,
        age_band="65-74",
        postcode_district="LS1",
        accessibility_needs=["wheelchair"],
        consent_to_share=True,
        created_at=NOW,
    ),
    ev.REFERRAL_ACCEPTED.topic: ev.ReferralAccepted(
        referral_id="r-1", organisation_id="org-1", service_id="svc-1", pcn_id="U12345", accepted_at=NOW
    ),
    ev.REFERRAL_DECLINED.topic: ev.ReferralDeclined(
        referral_id="r-1",
        organisation_id="org-1",
        service_id="svc-1",
        pcn_id="U12345",
        reason="no_capacity",
        declined_at=NOW,
    ),
    ev.OUTCOME_RECORDED.topic: ev.OutcomeRecorded(
        outcome_id="o-1",
        referral_id="r-1",
        organisation_id="org-1",
        pcn_id="U12345",
        status="completed",
        sessions_attended=6,
        measures=[ev.MeasureScore(instrument="SWEMWBS", phase="baseline", score=19.25, item_scores=[3] * 7)],
        recorded_at=NOW,
    ),
    ev.PAYMENT_DUE.topic: ev.PaymentDue(
        payment_id="p-1",
        agreement_id="a-1",
        pcn_id="U12345",
        organisation_id="org-1",
        referral_id="r-1",
        basis="referral_accepted",
        amount_pence=5000,
        period="2026/27-Q3",
        due_date=date(2027, 1, 30),
    ),
    ev.PAYMENT_SETTLED.topic: ev.PaymentSettled(
        settlement_id="s-1",
        pcn_id="U12345",
        organisation_id="org-1",
        amount_pence=5000,
        paid_on=date(2027, 2, 1),
        reference="BACS-123",
        allocations=[ev.Allocation(payment_id="p-1", amount_pence=5000)],
    ),
    ev.SERVICE_UPDATED.topic: ev.ServiceUpdated(
        service_id="svc-1",
        organisation_id="org-1",
        name="Walking group",
        status="active",
        needs=["loneliness"],
        capacity_available=4,
        safeguarding_policy_valid_until=date(2027, 6, 1),
        accepting_referrals=True,
        version=2,
        updated_at=NOW,
    ),
    ev.PAYMENT_REVERSED.topic: ev.PaymentReversed(
        payment_id="p-2",
        agreement_id="a-1",
        pcn_id="U12345",
        organisation_id="org-1",
        referral_id="r-1",
        basis="outcome_recorded",
        reversed_pence=12000,
        open_cancelled_pence=2000,
        overpaid_pence=10000,
        business_date=date(2027, 2, 3),
        reason="outcome o-1 is now engaged",
    ),
    ev.ORGANISATION_REGISTERED.topic: ev.OrganisationRegistered(
        organisation_id="org-1", name="Leeds Walking Friends", registered_at=NOW
    ),
    ev.REFERRAL_REFUSED.topic: ev.ReferralRefused(
        refusal_id="rf-1",
        pcn_id="U12345",
        organisation_id="org-1",
        service_id="svc-1",
        needs=["loneliness"],
        age_band="75-84",
        postcode_district="LS1",
        reason="no_capacity",
        refused_at=NOW,
    ),
}


def test_every_event_has_a_sample() -> None:
    assert set(SAMPLES) == set(ev.ALL_TOPICS)
    assert len(ev.ALL_TOPICS) == 10


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_round_trip_through_json(topic: str) -> None:
    spec = ev.BY_TOPIC[topic]
    envelope = ev.new_event(spec, SAMPLES[topic], source="test")
    parsed, payload = ev.parse_event(topic, envelope.to_bytes())
    assert parsed == envelope
    assert payload == SAMPLES[topic]
    assert parsed.specversion == "1.0" and parsed.type == f"socialrx.{topic}"
    assert parsed.subject == spec.key_of(SAMPLES[topic])


def test_topic_names_and_keys() -> None:
    assert ev.REFERRAL_CREATED.topic == "referral.created.v1"
    assert ev.REFERRAL_CREATED.dlq_topic == "referral.created.v1.dlq"
    assert ev.SERVICE_UPDATED.key_of(SAMPLES[ev.SERVICE_UPDATED.topic]) == "svc-1"
    assert ev.PAYMENT_SETTLED.key_of(SAMPLES[ev.PAYMENT_SETTLED.topic]) == "org-1"
    assert ev.PAYMENT_DUE.key_of(SAMPLES[ev.PAYMENT_DUE.topic]) == "r-1"
    grant = SAMPLES[ev.PAYMENT_DUE.topic].model_copy(update={"referral_id": None, "basis": "block_grant"})
    assert ev.PAYMENT_DUE.key_of(grant) == "a-1"  # a block grant has no referral: keyed by agreement


def _envelope_dict(topic: str) -> dict:
    return json.loads(ev.new_event(ev.BY_TOPIC[topic], SAMPLES[topic], source="test").to_bytes())


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["data"].update(nhs_number="9434765919"), "nhs_number: Extra inputs are not permitted"),
        (lambda d: d["data"].update(needs="loneliness"), "needs"),
        (lambda d: d["data"].pop("pcn_id"), "pcn_id: Field required"),
        (lambda d: d.update(type="socialrx.referral.accepted.v1"), "does not belong on topic"),
        (lambda d: d.update(type="socialrx.referral.created.v9"), "unknown event type"),
        (lambda d: d.pop("id"), "id: Field required"),
        (lambda d: d.update(specversion="0.3"), "specversion"),
        (lambda d: d.update(subject="someone-else"), "differs from the event's key"),
        (lambda d: d["data"].update(consent_to_share=False), "consent_to_share"),
        (lambda d: d["data"].update(created_at="2026-11-24T10:30:00"), "timezone"),
        (lambda d: d.update(extra_field=1), "extra_field: Extra inputs are not permitted"),
    ],
)
def test_malformed_payloads_are_refused_with_a_clear_error(mutate, expected: str) -> None:
    value = _envelope_dict(ev.REFERRAL_CREATED.topic)
    mutate(value)
    with pytest.raises(ev.PoisonMessage) as refused:
        ev.parse_event(ev.REFERRAL_CREATED.topic, json.dumps(value).encode())
    assert expected in str(refused.value)


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe", b"[]", b"null"])
def test_undecodable_messages_are_poison(raw: bytes) -> None:
    with pytest.raises(ev.PoisonMessage):
        ev.parse_event(ev.REFERRAL_CREATED.topic, raw)


def test_unknown_topic_is_poison() -> None:
    with pytest.raises(ev.PoisonMessage, match="no contract"):
        ev.parse_event("referral.created.v2", b"{}")


def test_new_event_refuses_the_wrong_model() -> None:
    with pytest.raises(TypeError):
        ev.new_event(ev.REFERRAL_CREATED, SAMPLES[ev.REFERRAL_ACCEPTED.topic], source="test")


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_exported_schema_accepts_real_events_and_rejects_bad_ones(topic: str) -> None:
    schema = ev.json_schemas()[topic]
    jsonschema.Draft202012Validator.check_schema(schema)
    good = _envelope_dict(topic)
    jsonschema.validate(good, schema)
    wrong_type = {**good, "type": "socialrx.something.else.v1"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong_type, schema)
    extra = {**good, "data": {**good["data"], "unexpected": 1}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(extra, schema)


def test_schema_lists_the_same_required_fields_as_the_model() -> None:
    for spec in ev.ALL_EVENTS:
        schema = ev.json_schemas()[spec.topic]["properties"]["data"]
        required = {name for name, field in spec.model.model_fields.items() if field.is_required()}
        assert set(schema.get("required", [])) == required, spec.topic
        assert set(schema["properties"]) == set(spec.model.model_fields), spec.topic


def test_no_event_carries_direct_identifiers() -> None:
    forbidden = {
        "nhs_number",
        "given_name",
        "family_name",
        "name_of_person",
        "date_of_birth",
        "address",
        "postcode",
        "phone",
        "email",
    }
    for spec in ev.ALL_EVENTS:
        assert not forbidden & set(spec.model.model_fields), spec.topic


def test_event_ids_are_unique() -> None:
    ids = {ev.new_event(ev.REFERRAL_ACCEPTED, SAMPLES[ev.REFERRAL_ACCEPTED.topic], source="t").id for _ in range(100)}
    assert len(ids) == 100 and all(isinstance(i, uuid.UUID) for i in ids)
