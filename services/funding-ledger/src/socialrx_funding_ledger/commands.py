"""Commands finance teams give over HTTP (or the CLI): settlements, block grants, reconciliation.

Each runs in one transaction: a refusal (`Refused`) changes nothing. Each is keyed by its cause,
so asking twice does it once.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.events import Allocation, PaymentSettled
from socialrx_shared.runtime import ServiceRuntime

from . import domain, ledger, reports
from .store import agreements, allocations, organisations, payments, settlements

SETTLEMENT_NAMESPACE = uuid.UUID("0d9a4f7e-2b55-4a8e-9c61-3f1e7a2c5b90")
MAX_RECONCILIATION_LINES = 10_000


class Refused(Exception):
    """A command refused for a reason the caller can fix; nothing was changed."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class SettlementRequest:
    organisation_id: str
    amount_pence: int
    paid_on: date
    reference: str
    allocations: list[tuple[str, int]] | None = None
    idempotency_key: str | None = None

    def cause_key(self, pcn_id: str) -> str:
        if self.idempotency_key:
            return f"settlement:key:{pcn_id}:{self.idempotency_key}"
        return f"settlement:ref:{pcn_id}:{self.organisation_id}:{self.reference}"


async def _lock(session: AsyncSession, name: str) -> None:
    """Serialise commands on one thing (until commit): they read open amounts, then change them."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))


async def settle(rt: ServiceRuntime, pcn_id: str, request: SettlementRequest) -> tuple[dict, bool]:
    """(the settlement, created?): the same request again answers the first one, created False."""
    async with rt.transaction() as session:
        return await settle_in(rt, session, pcn_id, request)


async def settle_in(rt: ServiceRuntime, session: AsyncSession, pcn_id: str, request: SettlementRequest) -> tuple[dict, bool]:
    await _lock(session, f"settle:{pcn_id}:{request.organisation_id}")
    existing = (await session.execute(select(settlements).where(or_(
        settlements.c.cause_key == request.cause_key(pcn_id),
        # A reference is the PCN's own: another PCN paying this organisation may use the same one.
        (settlements.c.pcn_id == pcn_id) & (settlements.c.organisation_id == request.organisation_id)
        & (settlements.c.reference == request.reference),
    )))).mappings().first()
    if existing is not None:
        same = (existing["pcn_id"], existing["organisation_id"], existing["amount_pence"], existing["paid_on"],
                existing["reference"]) == (pcn_id, request.organisation_id, request.amount_pence, request.paid_on,
                                           request.reference)
        if not same:
            raise Refused(409, f"settlement {existing['settlement_id']} already used this reference or "
                               "Idempotency-Key with other details: use a new reference or key")
        return await settlement_view(session, existing["settlement_id"]), False
    await _require_agreement(session, pcn_id, request.organisation_id)
    await require_organisation(session, request.organisation_id)  # agreements made before this check
    open_rows = (await session.execute(
        select(payments.c.payment_id, payments.c.open_pence, payments.c.due_date, payments.c.business_date,
               payments.c.caused_at)
        .where(payments.c.pcn_id == pcn_id, payments.c.organisation_id == request.organisation_id,
               payments.c.open_pence > 0).with_for_update())).all()
    open_payments = [domain.OpenPayment(r.payment_id, r.open_pence, r.due_date, r.business_date, r.caused_at)
                     for r in open_rows]
    if request.allocations is not None:
        problem = domain.check_allocations(request.amount_pence, request.allocations,
                                           {p.payment_id: p.open_pence for p in open_payments})
        if problem:
            raise Refused(422, problem)
        chosen = request.allocations
    else:
        chosen = domain.allocate_oldest_first(request.amount_pence, open_payments).allocations
    cause_key = request.cause_key(pcn_id)
    settled = PaymentSettled(
        settlement_id=str(uuid.uuid5(SETTLEMENT_NAMESPACE, cause_key)), pcn_id=pcn_id,
        organisation_id=request.organisation_id, amount_pence=request.amount_pence, paid_on=request.paid_on,
        reference=request.reference, allocations=[Allocation(payment_id=p, amount_pence=a) for p, a in chosen],
    )
    # Never inside an assert: `python -O` drops asserts, and the settlement would go with it.
    recorded = await ledger.record_settlement(rt, session, settled, cause_key=cause_key)
    if not recorded:
        # A concurrent request with the same Idempotency-Key for another organisation (a lock of
        # its own) won the race to the same key: a clear 409, never a 500.
        raise Refused(409, "another settlement with this Idempotency-Key or reference was recorded at the same "
                           "moment; ask again to see it, or use a new key")
    return await settlement_view(session, settled.settlement_id), True


async def require_organisation(session: AsyncSession, organisation_id: str) -> None:
    """Only organisations the directory announced: a typo (or "0") must not be funded or paid."""
    if not await session.scalar(select(organisations.c.organisation_id)
                                .where(organisations.c.organisation_id == organisation_id)):
        raise Refused(422, f"no organisation with id {organisation_id!r} is known to the ledger: organisations "
                           "are added in the directory (POST /organizations), and a new one reaches the ledger "
                           "within seconds; check the id")


async def _require_agreement(session: AsyncSession, pcn_id: str, organisation_id: str) -> None:
    found = await session.scalar(select(func.count()).select_from(agreements).where(
        agreements.c.pcn_id == pcn_id, agreements.c.organisation_id == organisation_id))
    if not found:
        raise Refused(422, f"your PCN has no funding agreement with organisation {organisation_id!r}: "
                           "nothing can be owed to it, so no payment to it can be recorded")


async def settlement_view(session: AsyncSession, settlement_id: str) -> dict:
    row = (await session.execute(select(settlements).where(settlements.c.settlement_id == settlement_id))).mappings().one()
    allocated = (await session.execute(
        select(allocations.c.payment_id, allocations.c.amount_pence, payments.c.open_pence, payments.c.amount_pence.label("payment_amount_pence"))
        .join(payments, payments.c.payment_id == allocations.c.payment_id)
        .where(allocations.c.settlement_id == settlement_id).order_by(allocations.c.id))).mappings().all()
    credit = await credit_held_pence(session, row["pcn_id"], row["organisation_id"])
    return {
        "settlement_id": row["settlement_id"], "pcn_id": row["pcn_id"], "organisation_id": row["organisation_id"],
        "amount_pence": row["amount_pence"], "currency": "GBP", "paid_on": row["paid_on"].isoformat(),
        "reference": row["reference"], "allocated_pence": row["amount_pence"] - row["unallocated_pence"],
        "unallocated_pence": row["unallocated_pence"], "credit_held_pence": credit,
        "allocations": [{"payment_id": a["payment_id"], "amount_pence": a["amount_pence"],
                         "payment_amount_pence": a["payment_amount_pence"], "open_pence": a["open_pence"]}
                        for a in allocated],
    }


async def credit_held_pence(session: AsyncSession, pcn_id: str, organisation_id: str, as_of: date | None = None) -> int:
    credits = await reports.credits_by_organisation(session, as_of, pcn_id=pcn_id, organisation_id=organisation_id)
    return credits.get(organisation_id, 0)


async def accrue_block_grants(rt: ServiceRuntime, pcn_id: str, on: date, agreement_id: str | None = None) -> list[dict]:
    """The block grant of the period holding `on`, for each of the PCN's agreements with one."""
    async with rt.transaction() as session:
        query = select(agreements).where(agreements.c.pcn_id == pcn_id, agreements.c.block_grant_pence_per_period > 0)
        if agreement_id:
            query = query.where(agreements.c.id == agreement_id)
        rows = (await session.execute(query.order_by(agreements.c.organisation_id, agreements.c.starts_on))).mappings().all()
        if agreement_id and not rows:
            raise Refused(404, f"no agreement {agreement_id} with a block grant in your PCN")
        return [await _grant_one(rt, session, ledger.agreement_from_row(dict(row)), on) for row in rows]


async def _grant_one(rt: ServiceRuntime, session: AsyncSession, agreement: domain.Agreement, on: date) -> dict:
    period = domain.period_of(on, agreement.period)
    result = {"agreement_id": agreement.id, "organisation_id": agreement.organisation_id, "period": period.label}
    if domain.grant_business_date(agreement, on) is None:
        return result | {"status": "not_in_force"}
    payment = await ledger.accrue_block_grant(rt, session, agreement, on)
    cause_key = f"block_grant:{agreement.id}:{period.label}"
    row = (await session.execute(select(payments).where(payments.c.cause_key == cause_key))).mappings().one()
    return result | {"status": "accrued" if payment else "already_accrued", "payment_id": row["payment_id"],
                     "amount_pence": row["amount_pence"], "refused_over_cap_pence": row["refused_over_cap_pence"],
                     "due_date": row["due_date"].isoformat()}


def parse_remittance(text: str) -> list[domain.RemittanceLine | domain.MalformedLine]:
    rows = _read_rows(text)
    header = rows[0] if rows else None
    if not isinstance(header, list) or tuple(cell.strip() for cell in header) != domain.REMITTANCE_HEADER:
        raise Refused(422, "the CSV's first line must be the header " + ",".join(domain.REMITTANCE_HEADER))
    if len(rows) - 1 > MAX_RECONCILIATION_LINES:
        raise Refused(413, f"at most {MAX_RECONCILIATION_LINES} lines per file; split the remittance")
    return [domain.MalformedLine(number, None, row) if isinstance(row, str)
            else domain.parse_remittance_row(number, row)
            for number, row in enumerate(rows[1:], start=2) if row]


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
                    request = SettlementRequest(result["organisation_id"], result["amount_pence"],
                                                date.fromisoformat(result["paid_on"]), result["reference"])
                    view, _ = await settle_in(rt, session, pcn_id, request)
                    result["posted_settlement_id"] = view["settlement_id"]
    counts = {status: sum(1 for r in results if r["status"] == status)
              for status in ("matched", "part_matched", "unmatched", "duplicate", "malformed")}
    return {"posted": post, "counts": counts, "lines": results}


async def _classify(session: AsyncSession, pcn_id: str, lines: list) -> list[dict]:
    organisations = {line.organisation_id for line in lines if isinstance(line, domain.RemittanceLine)}
    recorded_rows = (await session.execute(select(settlements).where(
        settlements.c.pcn_id == pcn_id, settlements.c.organisation_id.in_(organisations)))).mappings().all()
    recorded = {(r["organisation_id"], r["reference"]): domain.Recorded(r["settlement_id"], r["amount_pence"])
                for r in recorded_rows}
    open_rows = (await session.execute(select(payments).where(
        payments.c.pcn_id == pcn_id, payments.c.organisation_id.in_(organisations), payments.c.open_pence > 0,
    ))).mappings().all()
    open_by_org: dict[str, list[domain.OpenPayment]] = {}
    for r in open_rows:
        open_by_org.setdefault(r["organisation_id"], []).append(
            domain.OpenPayment(r["payment_id"], r["open_pence"], r["due_date"], r["business_date"], r["caused_at"]))
    return domain.reconcile(lines, recorded, open_by_org)
