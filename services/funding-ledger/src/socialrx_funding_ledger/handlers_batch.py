"""The set-based twin of handlers.py: one consumed batch of accepted referrals and recorded outcomes
decided in memory, in the batch's order, by handlers.py's rules, and written with a few statements
per table instead of a dozen round trips per event.

How: read at once what those rules look at (the batch's referrals as accepted, their outcomes and
outcome fees, the agreements of the parties involved and their versions; a capped agreement is
locked and its year summed when an accrual first needs it, as `ledger.accrue` does), replay the
events in order against that state exactly as `handlers.on_accepted` / `on_outcome` would, then
write what they decided with ledger_batch's multi-row writers and stage the events in that order.

It must leave what handlers.py leaves, row for row and event for event: test_handlers_batch.py
runs both over random histories. Should the database disagree with what was read (a cause already
taken), `BatchDiverged` is raised, the transaction rolls back and the consumer applies the batch's
records one by one through handlers.py. Nothing else decides fees while a batch runs: the consumer
holds the ledger's batch lock, and so do the agreement commands that cover past work.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.events import (
    ORGANISATION_REGISTERED,
    OUTCOME_RECORDED,
    PAYMENT_DUE,
    PAYMENT_REVERSED,
    REFERRAL_ACCEPTED,
    SERVICE_UPDATED,
    Envelope,
    EventSpec,
    OutcomeRecorded,
    PaymentBasis,
    PaymentDue,
    PaymentReversed,
    ReferralAccepted,
    Strict,
)
from socialrx_shared.runtime import ServiceRuntime

from . import domain, ledger, ledger_batch


class BatchDiverged(RuntimeError):
    """The database holds what the batch's reading did not foresee: apply the records one by one."""


@dataclass
class _Fee:
    """An outcome fee of a referral, as `settle_outcome_fee` reads it from `payments`."""

    row: dict[str, Any]  # payment_id, agreement_id, pcn_id, organisation_id, referral_id, basis, amounts
    reversed: bool


async def apply(rt: ServiceRuntime, session: AsyncSession, records: list[tuple[str, Envelope, Any]]) -> None:
    """The consumer's batch handler (every topic the ledger reads)."""
    learnt = _Organisations()
    decided: list[ReferralAccepted | OutcomeRecorded] = []
    for topic, _, payload in records:
        if topic == ORGANISATION_REGISTERED.topic:
            learnt.named(payload.organisation_id, payload.name)
        elif topic == SERVICE_UPDATED.topic:
            learnt.seen(payload.organisation_id, "service.updated")
        elif topic == REFERRAL_ACCEPTED.topic:
            learnt.seen(payload.organisation_id, "referral.accepted")
            decided.append(payload)
        elif topic == OUTCOME_RECORDED.topic:
            decided.append(payload)
        else:
            raise ValueError(f"no batch rule for {topic!r}: add one, or the ledger's handler of it is never called")
    conn = await ledger_batch.raw_connection(session)
    await learnt.write(conn)
    if decided:
        await decide(rt, session, decided)


class _Organisations:
    """handlers.learn_organisation for a batch: per organisation, the first source that merely saw it
    (inserted if unknown) and the last registration (its name wins), as the events one by one leave it."""

    def __init__(self) -> None:
        self.first_seen: dict[str, str] = {}
        self.registered: dict[str, str | None] = {}

    def seen(self, organisation_id: str, learnt_from: str) -> None:
        if organisation_id not in self.registered:  # after a registration, a sighting changes nothing
            self.first_seen.setdefault(organisation_id, learnt_from)

    def named(self, organisation_id: str, name: str | None) -> None:
        self.registered[organisation_id] = name

    async def write(self, conn: asyncpg.Connection) -> None:
        if self.first_seen:
            ids = sorted(self.first_seen)
            await conn.execute(
                "INSERT INTO organisations (organisation_id, name, learnt_from) "
                "SELECT o, NULL, f FROM unnest($1::text[], $2::text[]) AS t(o, f) "
                "ON CONFLICT (organisation_id) DO NOTHING",
                ids,
                [self.first_seen[o] for o in ids],
            )
        if self.registered:
            ids = sorted(self.registered)
            await conn.execute(
                "INSERT INTO organisations (organisation_id, name, learnt_from) "
                "SELECT o, n, 'organisation.registered' FROM unnest($1::text[], $2::text[]) AS t(o, n) "
                "ON CONFLICT (organisation_id) DO UPDATE SET name = excluded.name, learnt_from = excluded.learnt_from",
                ids,
                [self.registered[o] for o in ids],
            )


async def decide(
    rt: ServiceRuntime | Any, session: AsyncSession, events: list[ReferralAccepted | OutcomeRecorded]
) -> None:
    batch = _Batch(await ledger_batch.raw_connection(session))
    await batch.read(events)
    for event in events:
        if isinstance(event, ReferralAccepted):
            await batch.accepted(event)
        else:
            await batch.outcome(event)
    await batch.write(session)
    await rt.stage_each(session, batch.staged)


class _Batch:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.accepted_agreement: dict[str, str | None] = {}  # referral accepted -> agreement covering it
        self.outcome_of: dict[str, tuple[str, int]] = {}  # outcome_id -> (referral_id as stored, revision)
        self.facts: defaultdict[str, dict[str, OutcomeRecorded]] = defaultdict(dict)  # referral -> outcomes
        self.fees: defaultdict[str, list[_Fee]] = defaultdict(list)  # referral -> outcome fees, oldest first
        self.agreements: dict[str, domain.Agreement] = {}
        self.versions: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.cap_used: dict[tuple[str, date], int] = {}  # (agreement, financial year) -> accrued net
        self.cap_delta: defaultdict[tuple[str, date], int] = defaultdict(int)  # this batch's part of it
        self.locked: set[str] = set()
        # What the events decided, written at the end in this order.
        self.new_accepted: list[tuple[str, str, str, date, datetime, str | None]] = []
        self.outcome_rows: dict[str, OutcomeRecorded] = {}
        self.payments: list[tuple[PaymentDue, str, date]] = []
        self.reversals: list[tuple[PaymentReversed, str]] = []
        self.staged: list[tuple[EventSpec, Strict, dict[str, str] | None]] = []

    # -- reading ---------------------------------------------------------------------------------

    async def read(self, events: list[ReferralAccepted | OutcomeRecorded]) -> None:
        referral_ids = sorted({e.referral_id for e in events})
        outcome_ids = sorted({e.outcome_id for e in events if isinstance(e, OutcomeRecorded)})
        for row in await self.conn.fetch(
            # Joined to the ids (not `= ANY`): a table whose statistics lag its growth is then hashed
            # once, not compared with every id of the batch row by row (that grew to 55 ms a batch).
            "SELECT a.referral_id, a.agreement_id FROM unnest($1::text[]) AS t(id) "
            "JOIN accepted_referrals a ON a.referral_id = t.id",
            referral_ids,
        ):
            self.accepted_agreement[row["referral_id"]] = row["agreement_id"]
        for row in await self.conn.fetch(
            "SELECT o.outcome_id, o.referral_id, o.revision, o.event::text AS event FROM unnest($1::text[]) AS t(id) "
            "JOIN outcomes o ON o.referral_id = t.id UNION "
            "SELECT o.outcome_id, o.referral_id, o.revision, o.event::text FROM unnest($2::text[]) AS t(id) "
            "JOIN outcomes o ON o.outcome_id = t.id",
            referral_ids,
            outcome_ids,
        ):
            self.outcome_of[row["outcome_id"]] = (row["referral_id"], row["revision"])
            self.facts[row["referral_id"]][row["outcome_id"]] = OutcomeRecorded.model_validate(json.loads(row["event"]))
        for row in await self.conn.fetch(
            # Locked as reverse_payment locks the one it takes back (a settlement may be paying it).
            "SELECT p.payment_id, p.agreement_id, p.pcn_id, p.organisation_id, p.referral_id, p.basis, "
            "p.amount_pence, p.open_pence, p.business_date, p.reversed_pence, r.payment_id IS NOT NULL AS reversal_recorded "
            "FROM unnest($1::text[]) AS t(id) JOIN payments p ON p.referral_id = t.id "
            "LEFT JOIN payment_reversals r ON r.payment_id = p.payment_id WHERE p.basis = 'outcome_recorded' "
            "ORDER BY p.created_at, p.payment_id FOR UPDATE OF p",
            referral_ids,
        ):
            fee = dict(row)
            reversed_ = bool(fee.pop("reversed_pence")) or fee.pop("reversal_recorded")
            self.fees[row["referral_id"]].append(_Fee(fee, reversed_))
        parties = sorted({(e.pcn_id, e.organisation_id) for e in events if isinstance(e, ReferralAccepted)})
        covering = sorted({a for a in self.accepted_agreement.values() if a is not None})
        for row in await self.conn.fetch(
            "SELECT a.* FROM agreements a WHERE a.id = ANY($1::text[]) OR (a.pcn_id, a.organisation_id) IN "
            "(SELECT * FROM unnest($2::text[], $3::text[]))",
            covering,
            [p for p, _ in parties],
            [o for _, o in parties],
        ):
            self.agreements[row["id"]] = ledger.agreement_from_row(_decoded(row))
        for row in await self.conn.fetch(
            "SELECT * FROM agreement_versions WHERE agreement_id = ANY($1::text[]) ORDER BY agreement_id, version",
            sorted(self.agreements),
        ):
            self.versions[row["agreement_id"]].append(_decoded(row))

    def in_force(self, pcn_id: str, organisation_id: str, on: date) -> domain.Agreement | None:
        return domain.agreement_in_force(self.agreements.values(), pcn_id, organisation_id, on)

    def terms_on(self, agreement: domain.Agreement, on: date) -> domain.Agreement:
        return domain.terms_on(agreement, self.versions[agreement.id], on)

    async def accrued_in_year(self, agreement_id: str, on: date) -> int:
        """`ledger.accrued_in_financial_year` (locking the agreement first, as `ledger.accrue` does),
        plus what this batch has accrued and taken back since."""
        year = (agreement_id, domain.financial_year_start(on))
        if year not in self.cap_used:
            if agreement_id not in self.locked:
                await self.conn.execute("SELECT id FROM agreements WHERE id = $1 FOR UPDATE", agreement_id)
                self.locked.add(agreement_id)
            self.cap_used[year] = await self.conn.fetchval(
                "SELECT coalesce(sum(amount_pence - reversed_pence), 0) FROM payments "
                "WHERE agreement_id = $1 AND business_date >= $2 AND business_date < $3",
                agreement_id,
                year[1],
                date(year[1].year + 1, 4, 1),
            )
        return int(self.cap_used[year]) + self.cap_delta[year]

    # -- the rules, as handlers.py applies them ---------------------------------------------------

    async def accepted(self, event: ReferralAccepted) -> None:
        """handlers.on_accepted."""
        if event.referral_id in self.accepted_agreement:
            return  # accepted before: nothing changes
        accepted_on = domain.business_date_of(event.accepted_at)
        agreement = self.in_force(event.pcn_id, event.organisation_id, accepted_on)
        self.accepted_agreement[event.referral_id] = agreement.id if agreement else None
        self.new_accepted.append(
            (
                event.referral_id,
                event.pcn_id,
                event.organisation_id,
                accepted_on,
                event.accepted_at,
                agreement.id if agreement else None,
            )
        )
        if agreement is not None:
            terms = self.terms_on(agreement, accepted_on)
            await self.accrue(
                domain.referral_accepted_key(event.referral_id),
                terms,
                "referral_accepted",
                domain.fee(terms, "referral_accepted"),
                accepted_on,
                event.referral_id,
                event.accepted_at,
            )
        await self.settle(event.referral_id)

    async def outcome(self, event: OutcomeRecorded) -> None:
        """handlers.on_outcome: the newest revision wins."""
        known = self.outcome_of.get(event.outcome_id)
        if known is not None and known[1] >= event.revision:
            return
        stored_referral = known[0] if known is not None else event.referral_id  # an upsert keeps it
        self.outcome_of[event.outcome_id] = (stored_referral, event.revision)
        self.facts[stored_referral][event.outcome_id] = event
        self.outcome_rows[event.outcome_id] = event
        await self.settle(event.referral_id)

    async def settle(self, referral_id: str) -> None:
        """handlers.settle_outcome_fee."""
        agreement_id = self.accepted_agreement.get(referral_id)
        if agreement_id is None:
            return
        agreement = self.agreements[agreement_id]
        facts = [
            domain.OutcomeFact(e.outcome_id, e.status, e.recorded_at, e.corrected_at)
            for e in self.facts[referral_id].values()
        ]
        fees = [f for f in self.fees[referral_id] if f.row["agreement_id"] == agreement.id]
        live = {f.row["payment_id"]: f for f in fees if not f.reversed}
        judged = [(fact, self.terms_on(agreement, domain.business_date_of(fact.recorded_at))) for fact in facts]
        decision = domain.outcome_fee(referral_id, agreement, judged, len(fees), list(live))
        if decision.qualifying is not None:
            assert decision.cause_key is not None and decision.terms is not None
            await self.accrue(
                decision.cause_key,
                decision.terms,
                "outcome_recorded",
                decision.terms.per_outcome_pence,
                domain.business_date_of(decision.qualifying.recorded_at),
                referral_id,
                decision.qualifying.recorded_at,
            )
        for payment_id in decision.take_back:
            assert decision.taken_back_on is not None
            self.reverse(live[payment_id], decision.taken_back_on, decision.reason)

    async def accrue(
        self,
        cause_key: str,
        terms: domain.Agreement,
        basis: PaymentBasis,
        amount_pence: int,
        business_date: date,
        referral_id: str,
        caused_at: datetime,
    ) -> None:
        """ledger.accrue."""
        if amount_pence <= 0:
            return
        owed, refused = amount_pence, 0
        if terms.cap_pence_per_year is not None:
            accrued = await self.accrued_in_year(terms.id, business_date)
            owed, refused = domain.apply_cap(amount_pence, accrued, terms.cap_pence_per_year)
        payment = ledger.payment_due(cause_key, terms, basis, owed, refused, business_date, referral_id, caused_at)
        self.payments.append((payment, cause_key, business_date))
        self.cap_delta[(terms.id, domain.financial_year_start(business_date))] += owed
        if basis == "outcome_recorded":
            row = {
                "payment_id": payment.payment_id,
                "agreement_id": payment.agreement_id,
                "pcn_id": payment.pcn_id,
                "organisation_id": payment.organisation_id,
                "referral_id": referral_id,
                "basis": basis,
                "amount_pence": owed,
                "open_pence": owed,
                "business_date": business_date,
            }
            self.fees[referral_id].append(_Fee(row, reversed=False))
        self.staged.append((PAYMENT_DUE, payment, {ledger.HEADER_CAUSE: cause_key}))

    def reverse(self, fee: _Fee, business_date: date, reason: str) -> None:
        """ledger.reverse_payment."""
        reversal = ledger.reversal_of(fee.row, business_date, reason)
        fee.reversed = True
        cause_key = domain.payment_reversal_key(reversal.payment_id)
        self.reversals.append((reversal, cause_key))
        # A payment taken back no longer counts against its year's cap.
        self.cap_delta[(reversal.agreement_id, domain.financial_year_start(fee.row["business_date"]))] -= (
            reversal.reversed_pence
        )
        self.staged.append((PAYMENT_REVERSED, reversal, {ledger.HEADER_CAUSE: cause_key}))

    # -- writing ---------------------------------------------------------------------------------

    async def write(self, session: AsyncSession) -> None:
        if self.new_accepted:
            columns = list(zip(*self.new_accepted, strict=True))
            inserted = await self.conn.fetch(
                "INSERT INTO accepted_referrals (referral_id, pcn_id, organisation_id, accepted_on, accepted_at, "
                "agreement_id) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], "
                "$5::timestamptz[], $6::text[]) ON CONFLICT (referral_id) DO NOTHING RETURNING referral_id",
                *columns,
            )
            if len(inserted) != len(self.new_accepted):
                raise BatchDiverged("a referral of this batch was accepted meanwhile")
        if self.outcome_rows:
            rows = sorted(self.outcome_rows.values(), key=lambda e: e.outcome_id)
            changed = await self.conn.fetch(
                "INSERT INTO outcomes (outcome_id, referral_id, revision, event) "
                "SELECT o, r, v, e::jsonb FROM unnest($1::text[], $2::text[], $3::int[], $4::text[]) AS t(o, r, v, e) "
                "ON CONFLICT (outcome_id) DO UPDATE SET revision = excluded.revision, event = excluded.event "
                "WHERE outcomes.revision < excluded.revision RETURNING outcome_id",
                [e.outcome_id for e in rows],
                [e.referral_id for e in rows],
                [e.revision for e in rows],
                [e.model_dump_json() for e in rows],
            )
            if len(changed) != len(rows):
                raise BatchDiverged("an outcome of this batch was revised meanwhile")
        if self.payments and await ledger_batch.record_payments(session, self.payments) != len(self.payments):
            raise BatchDiverged("a cause of this batch was accrued before")
        if self.reversals and await ledger_batch.record_reversals(session, self.reversals) != len(self.reversals):
            raise BatchDiverged("a fee of this batch was taken back before")


def _decoded(row: asyncpg.Record) -> dict[str, Any]:
    """A row read on the raw connection: JSON columns arrive as text there."""
    return {k: json.loads(v) if k == "outcome_statuses" and isinstance(v, str) else v for k, v in row.items()}
