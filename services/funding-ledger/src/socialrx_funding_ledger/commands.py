"""Commands finance teams give over HTTP (or the CLI): settlements, block grants, reconciliation.

Each runs in one transaction: a refusal (a typed `socialrx_shared.errors.Refused`: `Invalid`,
`Conflict`, `NotFound`, `Forbidden`, `TooLarge`) changes nothing. Each is keyed by its cause,
so asking twice does it once.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.consumer import take_batch_lock
from socialrx_shared.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from socialrx_shared.events import Allocation, PaymentSettled
from socialrx_shared.runtime import ServiceRuntime

from . import domain, handlers, ledger, reports
from .store import (
    accepted_referrals,
    agreement_versions,
    agreements,
    allocations,
    organisations,
    payments,
    settlements,
)

SETTLEMENT_NAMESPACE = uuid.UUID("0d9a4f7e-2b55-4a8e-9c61-3f1e7a2c5b90")
MAX_RECONCILIATION_LINES = 10_000


@dataclass(frozen=True)
class SettlementRequest:
    organisation_id: str
    amount_pence: int
    paid_on: date
    reference: str
    allocations: list[tuple[str, int]] | None = None
    idempotency_key: str | None = None

    def cause_key(self, pcn_id: str) -> str:
        return domain.settlement_request_key(pcn_id, self.organisation_id, self.reference, self.idempotency_key)


async def _lock(session: AsyncSession, name: str) -> None:
    """Serialise commands on one thing (until commit): they read open amounts, then change them."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))


async def settle(rt: ServiceRuntime, pcn_id: str, request: SettlementRequest) -> tuple[dict, bool]:
    """(the settlement, created?): the same request again answers the first one, created False."""
    async with rt.transaction() as session:
        return await settle_in(rt, session, pcn_id, request)


async def settle_in(
    rt: ServiceRuntime, session: AsyncSession, pcn_id: str, request: SettlementRequest
) -> tuple[dict, bool]:
    await _lock(session, f"settle:{pcn_id}:{request.organisation_id}")
    existing = (
        (
            await session.execute(
                select(settlements).where(
                    or_(
                        settlements.c.cause_key == request.cause_key(pcn_id),
                        # A reference is the PCN's own: another PCN paying this organisation may use the same one.
                        (settlements.c.pcn_id == pcn_id)
                        & (settlements.c.organisation_id == request.organisation_id)
                        & (settlements.c.reference == request.reference),
                    )
                )
            )
        )
        .mappings()
        .first()
    )
    if existing is not None:
        same = (
            existing["pcn_id"],
            existing["organisation_id"],
            existing["amount_pence"],
            existing["paid_on"],
            existing["reference"],
        ) == (pcn_id, request.organisation_id, request.amount_pence, request.paid_on, request.reference)
        if not same:
            raise Conflict(
                f"settlement {existing['settlement_id']} already used this reference or "
                "Idempotency-Key with other details: use a new reference or key"
            )
        return await settlement_view(session, existing["settlement_id"]), False
    await _require_agreement(session, pcn_id, request.organisation_id)
    await require_organisation(session, request.organisation_id)  # agreements made before this check
    open_rows = (
        await session.execute(
            select(
                payments.c.payment_id,
                payments.c.open_pence,
                payments.c.due_date,
                payments.c.business_date,
                payments.c.caused_at,
            )
            .where(
                payments.c.pcn_id == pcn_id,
                payments.c.organisation_id == request.organisation_id,
                payments.c.open_pence > 0,
            )
            .with_for_update()
        )
    ).all()
    open_payments = [
        domain.OpenPayment(r.payment_id, r.open_pence, r.due_date, r.business_date, r.caused_at) for r in open_rows
    ]
    if request.allocations is not None:
        problem = domain.check_allocations(
            request.amount_pence, request.allocations, {p.payment_id: p.open_pence for p in open_payments}
        )
        if problem:
            raise Invalid(problem)
        chosen = request.allocations
    else:
        chosen = domain.allocate_oldest_first(request.amount_pence, open_payments).allocations
    cause_key = request.cause_key(pcn_id)
    settled = PaymentSettled(
        settlement_id=str(uuid.uuid5(SETTLEMENT_NAMESPACE, cause_key)),
        pcn_id=pcn_id,
        organisation_id=request.organisation_id,
        amount_pence=request.amount_pence,
        paid_on=request.paid_on,
        reference=request.reference,
        allocations=[Allocation(payment_id=p, amount_pence=a) for p, a in chosen],
    )
    # Never inside an assert: `python -O` drops asserts, and the settlement would go with it.
    recorded = await ledger.record_settlement(rt, session, settled, cause_key=cause_key)
    if not recorded:
        # A concurrent request with the same Idempotency-Key for another organisation (a lock of
        # its own) won the race to the same key: a clear 409, never a 500.
        raise Conflict(
            "another settlement with this Idempotency-Key or reference was recorded at the same "
            "moment; ask again to see it, or use a new key"
        )
    return await settlement_view(session, settled.settlement_id), True


async def require_organisation(session: AsyncSession, organisation_id: str) -> None:
    """Only organisations the directory announced: a typo (or "0") must not be funded or paid."""
    if not await session.scalar(
        select(organisations.c.organisation_id).where(organisations.c.organisation_id == organisation_id)
    ):
        raise Invalid(
            f"no organisation with id {organisation_id!r} is known to the ledger: organisations "
            "are added in the directory (POST /organizations), and a new one reaches the ledger "
            "within seconds; check the id"
        )


async def _require_agreement(session: AsyncSession, pcn_id: str, organisation_id: str) -> None:
    found = await session.scalar(
        select(func.count())
        .select_from(agreements)
        .where(agreements.c.pcn_id == pcn_id, agreements.c.organisation_id == organisation_id)
    )
    if not found:
        raise Invalid(
            f"your PCN has no funding agreement with organisation {organisation_id!r}: "
            "nothing can be owed to it, so no payment to it can be recorded"
        )


async def settlement_view(session: AsyncSession, settlement_id: str) -> dict:
    row = (
        (await session.execute(select(settlements).where(settlements.c.settlement_id == settlement_id)))
        .mappings()
        .one()
    )
    allocated = (
        (
            await session.execute(
                select(
                    allocations.c.payment_id,
                    allocations.c.amount_pence,
                    payments.c.open_pence,
                    payments.c.amount_pence.label("payment_amount_pence"),
                )
                .join(payments, payments.c.payment_id == allocations.c.payment_id)
                .where(allocations.c.settlement_id == settlement_id)
                .order_by(allocations.c.id)
            )
        )
        .mappings()
        .all()
    )
    credit = await credit_held_pence(session, row["pcn_id"], row["organisation_id"])
    return {
        "settlement_id": row["settlement_id"],
        "pcn_id": row["pcn_id"],
        "organisation_id": row["organisation_id"],
        "amount_pence": row["amount_pence"],
        "currency": "GBP",
        "paid_on": row["paid_on"].isoformat(),
        "reference": row["reference"],
        "allocated_pence": row["amount_pence"] - row["unallocated_pence"],
        "unallocated_pence": row["unallocated_pence"],
        "credit_held_pence": credit,
        "allocations": [
            {
                "payment_id": a["payment_id"],
                "amount_pence": a["amount_pence"],
                "payment_amount_pence": a["payment_amount_pence"],
                "open_pence": a["open_pence"],
            }
            for a in allocated
        ],
    }


async def credit_held_pence(session: AsyncSession, pcn_id: str, organisation_id: str, as_of: date | None = None) -> int:
    credits = await reports.credits_by_organisation(session, as_of, pcn_id=pcn_id, organisation_id=organisation_id)
    return credits.get(organisation_id, 0)


async def accrue_block_grants(rt: ServiceRuntime, pcn_id: str, on: date, agreement_id: str | None = None) -> list[dict]:
    """The block grant of the period holding `on`, for each of the PCN's agreements with one."""
    async with rt.transaction() as session:
        with_grant = select(agreement_versions.c.agreement_id).where(
            agreement_versions.c.block_grant_pence_per_period > 0
        )  # in any version of its terms
        query = select(agreements).where(
            agreements.c.pcn_id == pcn_id,
            (agreements.c.block_grant_pence_per_period > 0) | agreements.c.id.in_(with_grant),
        )
        if agreement_id:
            query = query.where(agreements.c.id == agreement_id)
        rows = (
            (await session.execute(query.order_by(agreements.c.organisation_id, agreements.c.starts_on)))
            .mappings()
            .all()
        )
        if agreement_id and not rows:
            raise NotFound(f"no agreement {agreement_id} with a block grant in your PCN")
        return [await _grant_one(rt, session, ledger.agreement_from_row(dict(row)), on) for row in rows]


async def _grant_one(rt: ServiceRuntime, session: AsyncSession, agreement: domain.Agreement, on: date) -> dict:
    period = domain.period_of(on, agreement.period)
    result = {"agreement_id": agreement.id, "organisation_id": agreement.organisation_id, "period": period.label}
    if domain.grant_business_date(agreement, on) is None:
        return result | {"status": "not_in_force"}
    payment = await ledger.accrue_block_grant(rt, session, agreement, on)
    cause_key = domain.block_grant_key(agreement.id, period.label)
    row = (await session.execute(select(payments).where(payments.c.cause_key == cause_key))).mappings().first()
    if row is None:  # the terms in force then had no grant (amended to 0)
        return result | {"status": "no_grant_in_force"}
    return result | {
        "status": "accrued" if payment else "already_accrued",
        "payment_id": row["payment_id"],
        "amount_pence": row["amount_pence"],
        "refused_over_cap_pence": row["refused_over_cap_pence"],
        "due_date": row["due_date"].isoformat(),
    }


def parse_remittance(text: str) -> list[domain.RemittanceLine | domain.MalformedLine]:
    rows = _read_rows(text)
    header = rows[0] if rows else None
    if not isinstance(header, list) or tuple(cell.strip() for cell in header) != domain.REMITTANCE_HEADER:
        raise Invalid("the CSV's first line must be the header " + ",".join(domain.REMITTANCE_HEADER))
    if len(rows) - 1 > MAX_RECONCILIATION_LINES:
        raise TooLarge(f"at most {MAX_RECONCILIATION_LINES} lines per file; split the remittance")
    return [
        domain.MalformedLine(number, None, row) if isinstance(row, str) else domain.parse_remittance_row(number, row)
        for number, row in enumerate(rows[1:], start=2)
        if row
    ]


def _read_rows(text: str) -> list[list[str] | str]:
    """Each record's cells, or why the csv module could not read it (a NUL byte, say): one bad
    line is reported as malformed, the others go on."""
    reader = csv.reader(io.StringIO(text))
    rows: list[list[str] | str] = []
    while True:
        try:
            rows.append(next(reader))
        except StopIteration:
            return rows
        except csv.Error as exc:
            rows.append(f"unreadable CSV line: {exc}")


async def reconcile(rt: ServiceRuntime, pcn_id: str, text: str, post: bool) -> dict:
    lines = parse_remittance(text)
    async with rt.transaction() as session:
        results = await _classify(session, pcn_id, lines)
        if post:
            for result in results:
                if result["status"] in ("matched", "part_matched") and not result["recorded"]:
                    request = SettlementRequest(
                        result["organisation_id"],
                        result["amount_pence"],
                        date.fromisoformat(result["paid_on"]),
                        result["reference"],
                    )
                    view, _ = await settle_in(rt, session, pcn_id, request)
                    result["posted_settlement_id"] = view["settlement_id"]
    counts = {
        status: sum(1 for r in results if r["status"] == status)
        for status in ("matched", "part_matched", "unmatched", "duplicate", "malformed")
    }
    return {"posted": post, "counts": counts, "lines": results}


async def _classify(session: AsyncSession, pcn_id: str, lines: list) -> list[dict]:
    organisations = {line.organisation_id for line in lines if isinstance(line, domain.RemittanceLine)}
    recorded_rows = (
        (
            await session.execute(
                select(settlements).where(
                    settlements.c.pcn_id == pcn_id, settlements.c.organisation_id.in_(organisations)
                )
            )
        )
        .mappings()
        .all()
    )
    recorded = {
        (r["organisation_id"], r["reference"]): domain.Recorded(r["settlement_id"], r["amount_pence"])
        for r in recorded_rows
    }
    open_rows = (
        (
            await session.execute(
                select(payments).where(
                    payments.c.pcn_id == pcn_id,
                    payments.c.organisation_id.in_(organisations),
                    payments.c.open_pence > 0,
                )
            )
        )
        .mappings()
        .all()
    )
    open_by_org: dict[str, list[domain.OpenPayment]] = {}
    for r in open_rows:
        open_by_org.setdefault(r["organisation_id"], []).append(
            domain.OpenPayment(r["payment_id"], r["open_pence"], r["due_date"], r["business_date"], r["caused_at"])
        )
    return domain.reconcile(lines, recorded, open_by_org)


# --- agreements -------------------------------------------------------------------------------

FAR_FUTURE = date(9999, 12, 31)
TERMS = (
    "per_referral_pence",
    "per_outcome_pence",
    "outcome_statuses",
    "block_grant_pence_per_period",
    "cap_pence_per_year",
)


async def _lock_pair(session: AsyncSession, pcn_id: str, organisation_id: str) -> None:
    # No consumed batch decides fees while an agreement changes: a batch reads the agreements and the
    # uncovered referrals once, at its start (handlers_batch), and this change covers past work.
    # Taken first, before any row lock, as a batch takes it.
    await take_batch_lock(session, handlers.BATCH_LOCK)
    # Serialise agreements of one pair (even the first, when there is no row to lock) so two
    # overlapping requests cannot both pass the check.
    await _lock(session, f"agreement:{pcn_id}:{organisation_id}")


async def _refuse_overlap(
    session: AsyncSession,
    pcn_id: str,
    organisation_id: str,
    starts_on: date,
    ends_on: date | None,
    other_than: str | None = None,
) -> None:
    query = select(agreements.c.id, agreements.c.starts_on, agreements.c.ends_on).where(
        agreements.c.pcn_id == pcn_id, agreements.c.organisation_id == organisation_id
    )
    if other_than:
        query = query.where(agreements.c.id != other_than)
    for other in (await session.execute(query.with_for_update())).all():
        if starts_on <= (other.ends_on or FAR_FUTURE) and other.starts_on <= (ends_on or FAR_FUTURE):
            raise Conflict(
                f"overlaps agreement {other.id} ({other.starts_on} to "
                f"{other.ends_on or 'open-ended'}); end it first (PATCH /agreements/{other.id} "
                "with ends_on) or change the dates"
            )


async def create_agreement(rt: ServiceRuntime, pcn_id: str, created_by: str, terms: dict) -> dict:
    """A new agreement (version 1 of its terms); if it starts in the past, it covers the work
    already accepted inside its dates that no agreement covered."""
    async with rt.transaction() as session:
        await require_organisation(session, terms["organisation_id"])
        await _lock_pair(session, pcn_id, terms["organisation_id"])
        await _refuse_overlap(session, pcn_id, terms["organisation_id"], terms["starts_on"], terms.get("ends_on"))
        row = {"id": str(uuid.uuid4()), "pcn_id": pcn_id, **terms, "created_by": created_by}
        await session.execute(insert(agreements).values(**row))
        await session.execute(
            insert(agreement_versions).values(
                agreement_id=row["id"],
                version=1,
                effective_from=row["starts_on"],
                ends_on=row.get("ends_on"),
                reason="agreed",
                changed_by=created_by,
                **{k: row[k] for k in TERMS},
            )
        )
        covered = await handlers.cover_past_work(rt, session, ledger.agreement_from_row(await _row(session, row["id"])))
        return await agreement_view(session, row["id"]) | {"covered_past_work": covered}


async def _row(session: AsyncSession, agreement_id: str) -> dict:
    return dict((await session.execute(select(agreements).where(agreements.c.id == agreement_id))).mappings().one())


async def agreement_view(session: AsyncSession, agreement_id: str) -> dict:
    row = await _row(session, agreement_id)
    versions = (
        (
            await session.execute(
                select(agreement_versions)
                .where(agreement_versions.c.agreement_id == agreement_id)
                .order_by(agreement_versions.c.version)
            )
        )
        .mappings()
        .all()
    )
    return row | {"versions": [{k: v for k, v in version.items() if k != "agreement_id"} for version in versions]}


@dataclass(frozen=True)
class AgreementChange:
    ends_on: date | None = None
    ends_on_given: bool = False  # ends_on: null (open-ended again) differs from not given
    effective_from: date | None = None
    terms: dict | None = None  # the fees, statuses, grant or cap that change
    reason: str | None = None


async def change_agreement(
    rt: ServiceRuntime, pcn_id: str, changed_by: str, agreement_id: str, change: AgreementChange
) -> dict:
    """End an agreement, or amend its terms from a date onwards: a new version, kept with the others.
    Work already accrued keeps the terms it was accrued under."""
    async with rt.transaction() as session:
        found = (
            await session.execute(
                select(agreements.c.pcn_id, agreements.c.organisation_id).where(agreements.c.id == agreement_id)
            )
        ).first()
        if found is None:
            raise NotFound(f"no agreement {agreement_id}")
        if found.pcn_id != pcn_id:
            raise Forbidden(f"agreement {agreement_id} belongs to another PCN")
        await _lock_pair(session, pcn_id, found.organisation_id)
        row = dict(
            (await session.execute(select(agreements).where(agreements.c.id == agreement_id).with_for_update()))
            .mappings()
            .one()
        )
        ends_on = change.ends_on if change.ends_on_given else row["ends_on"]
        if ends_on is not None and ends_on < row["starts_on"]:
            raise Invalid(f"ends_on {ends_on} is before the agreement starts ({row['starts_on']})")
        if ends_on is not None and (row["ends_on"] is None or ends_on < row["ends_on"]):
            await _refuse_ending_before_accrued_work(session, agreement_id, ends_on)
        await _refuse_overlap(
            session, pcn_id, row["organisation_id"], row["starts_on"], ends_on, other_than=agreement_id
        )
        current = (
            (
                await session.execute(
                    select(agreement_versions)
                    .where(agreement_versions.c.agreement_id == agreement_id)
                    .order_by(agreement_versions.c.version.desc())
                    .limit(1)
                )
            )
            .mappings()
            .first()
        )
        latest_terms = {k: (current or row)[k] for k in TERMS}
        effective_from = row["starts_on"]
        if change.terms:
            effective_from = change.effective_from
            if effective_from is None:
                raise Invalid("say from which date the new terms apply (effective_from)")
            if effective_from < row["starts_on"] or (ends_on is not None and effective_from > ends_on):
                raise Invalid(
                    f"effective_from {effective_from} is outside the agreement "
                    f"({row['starts_on']} to {ends_on or 'open-ended'})"
                )
            latest_terms = latest_terms | change.terms
            if not (
                latest_terms["per_referral_pence"]
                or latest_terms["per_outcome_pence"]
                or latest_terms["block_grant_pence_per_period"]
            ):
                raise Invalid(
                    "an agreement must fund something: keep a per-referral fee, a per-outcome fee "
                    "or a block grant, or end the agreement instead"
                )
        elif not change.ends_on_given:
            raise Invalid("nothing to change: give ends_on, or effective_from with new fees or cap")
        else:
            effective_from = max(row["starts_on"], current["effective_from"]) if current else row["starts_on"]
        version = (current["version"] if current else 0) + 1
        await session.execute(
            insert(agreement_versions).values(
                agreement_id=agreement_id,
                version=version,
                effective_from=effective_from,
                ends_on=ends_on,
                reason=change.reason or ("amended" if change.terms else "ended" if ends_on else "end removed"),
                changed_by=changed_by,
                **latest_terms,
            )
        )
        # The agreement row holds the newest terms and its end; versions hold the history.
        await session.execute(
            update(agreements).where(agreements.c.id == agreement_id).values(ends_on=ends_on, **latest_terms)
        )
        if ends_on is not None:  # referrals after the new end were never paid under it (checked above)
            await session.execute(
                update(accepted_referrals)
                .where(accepted_referrals.c.agreement_id == agreement_id, accepted_referrals.c.accepted_on > ends_on)
                .values(agreement_id=None)
            )
        covered = await handlers.cover_past_work(
            rt, session, ledger.agreement_from_row(await _row(session, agreement_id))
        )
        return await agreement_view(session, agreement_id) | {"covered_past_work": covered}


async def _refuse_ending_before_accrued_work(session: AsyncSession, agreement_id: str, ends_on: date) -> None:
    accepted_after = await session.scalar(
        select(func.max(accepted_referrals.c.accepted_on))
        .select_from(accepted_referrals)
        .join(
            payments,
            (payments.c.referral_id == accepted_referrals.c.referral_id) & (payments.c.agreement_id == agreement_id),
        )
        .where(accepted_referrals.c.agreement_id == agreement_id, accepted_referrals.c.accepted_on > ends_on)
    )
    granted_after = await session.scalar(
        select(func.max(payments.c.business_date)).where(
            payments.c.agreement_id == agreement_id,
            payments.c.basis == "block_grant",
            payments.c.business_date > ends_on,
        )
    )
    last = max(d for d in (accepted_after, granted_after, date.min) if d is not None)
    if last > ends_on:
        raise Conflict(
            f"work on {last} is already accrued under this agreement: it cannot end before that "
            f"(ends_on {ends_on}); end it on {last} or later"
        )
