"""Read models for finance and charities: arrears, statements, cap use, the lists behind the API's GETs.
Reads only; each in a session of its own (`read`), so the HTTP layer holds no SQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.errors import NotFound
from socialrx_shared.runtime import ServiceRuntime

from . import commands, domain, ledger
from .store import (
    agreements,
    credit_movements,
    journal_lines,
    open_movements,
    payments,
    settlements,
    statement_days,
)


async def read(rt: ServiceRuntime, report: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Run one report in a session of its own."""
    async with rt.sessionmaker() as session:
        return await report(session, *args, **kwargs)


async def agreements_listed(session: AsyncSession, *, pcn_id: str | None, organisation_id: str | None) -> dict:
    query = _scoped(select(agreements.c.id), agreements, pcn_id, organisation_id).order_by(agreements.c.starts_on)
    ids = (await session.execute(query)).scalars().all()
    return {"items": [await commands.agreement_view(session, agreement_id) for agreement_id in ids]}


PAYMENT_FIELDS = (
    "payment_id",
    "agreement_id",
    "pcn_id",
    "organisation_id",
    "referral_id",
    "basis",
    "amount_pence",
    "open_pence",
    "period",
    "due_date",
    "business_date",
    "refused_over_cap_pence",
    "reversed_pence",
)


async def payments_listed(
    session: AsyncSession,
    *,
    pcn_id: str | None,
    organisation_id: str | None,
    status: str | None,
    referral_id: str | None,
    page: int,
    per_page: int,
) -> dict:
    query = _scoped(select(payments), payments, pcn_id, organisation_id)
    if status == "open":
        query = query.where(payments.c.open_pence > 0)
    elif status == "settled":  # paid in full (a payment taken back is not settled: status=reversed)
        query = query.where(payments.c.open_pence == 0, payments.c.reversed_pence == 0)
    elif status == "reversed":
        query = query.where(payments.c.reversed_pence > 0)
    if referral_id:
        query = query.where(payments.c.referral_id == referral_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = (
        (
            await session.execute(
                query.order_by(payments.c.due_date, payments.c.business_date, payments.c.payment_id)
                .offset((page - 1) * per_page)
                .limit(per_page)
            )
        )
        .mappings()
        .all()
    )
    items = [{k: r[k] for k in PAYMENT_FIELDS} | {"currency": "GBP"} for r in rows]
    return {"items": items, "page": page, "per_page": per_page, "total": total}


async def cap_use_of(
    session: AsyncSession, agreement_id: str, on: date, *, pcn_id: str | None, organisation_id: str | None
) -> dict:
    row = (
        (
            await session.execute(
                _scoped(select(agreements), agreements, pcn_id, organisation_id).where(agreements.c.id == agreement_id)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"no agreement {agreement_id} in your scope")
    terms = await ledger.terms_on(session, ledger.agreement_from_row(dict(row)), on)  # the cap then in force
    return await cap_use(session, terms, on)


async def settlements_listed(session: AsyncSession, *, pcn_id: str | None, organisation_id: str | None) -> dict:
    query = _scoped(select(settlements.c.settlement_id), settlements, pcn_id, organisation_id)
    ids = (await session.execute(query.order_by(settlements.c.paid_on, settlements.c.settlement_id))).scalars().all()
    return {"items": [await commands.settlement_view(session, sid) for sid in ids]}


async def trial_balance(session: AsyncSession, pcn_id: str | None) -> dict:
    query = select(
        func.coalesce(func.sum(journal_lines.c.debit_pence), 0),
        func.coalesce(func.sum(journal_lines.c.credit_pence), 0),
    )
    if pcn_id:
        # Every account is `<kind>:<pcn>[:<org>]`: a finance officer sees only its own PCN's books
        # (each entry stays within one PCN, so they balance on their own).
        query = query.where(func.split_part(journal_lines.c.account, ":", 2) == pcn_id)
    debits, credits = (await session.execute(query)).one()
    return {
        "pcn_id": pcn_id,
        "debits_pence": int(debits),
        "credits_pence": int(credits),
        "balanced": debits == credits,
        "currency": "GBP",
    }


async def cap_use(session: AsyncSession, agreement: domain.Agreement, on: date) -> dict:
    fy_start = domain.financial_year_start(on)
    accrued, refused = (
        await session.execute(
            select(
                func.coalesce(func.sum(payments.c.amount_pence - payments.c.reversed_pence), 0),
                func.coalesce(func.sum(payments.c.refused_over_cap_pence), 0),
            ).where(
                payments.c.agreement_id == agreement.id,
                payments.c.business_date >= fy_start,
                payments.c.business_date < date(fy_start.year + 1, 4, 1),
            )
        )
    ).one()
    cap = agreement.cap_pence_per_year
    return {
        "agreement_id": agreement.id,
        "financial_year": domain.financial_year_label(on),
        "cap_pence_per_year": cap,
        "accrued_pence": int(accrued),
        "refused_over_cap_pence": int(refused),
        "remaining_pence": None if cap is None else max(cap - int(accrued), 0),
        "currency": "GBP",
    }


def _scoped(query, table, pcn_id: str | None, organisation_id: str | None):
    if pcn_id:
        query = query.where(table.c.pcn_id == pcn_id)
    if organisation_id:
        query = query.where(table.c.organisation_id == organisation_id)
    return query


async def arrears(session: AsyncSession, as_of: date, *, pcn_id: str | None, organisation_id: str | None) -> dict:
    """Open amounts as they stood at the end of `as_of`: work done by then, less payments made by then."""
    # Read from the projection (projection.py), kept by the code that posts the journal: a few rows
    # per organisation and pair of dates, however many payments there are. Ageing depends only on
    # the dates and is linear in pence, so the domain's rules give the same figures over these sums
    # as over every payment.
    open_pence = func.sum(
        open_movements.c.accrued_pence - open_movements.c.paid_pence - open_movements.c.cancelled_pence
    )
    query = _scoped(
        select(
            open_movements.c.organisation_id,
            open_movements.c.due_date,
            open_movements.c.business_date,
            open_pence.label("open_pence"),
        )
        .where(open_movements.c.effective_on <= as_of)
        .group_by(open_movements.c.organisation_id, open_movements.c.due_date, open_movements.c.business_date)
        .having(open_pence > 0),
        open_movements,
        pcn_id,
        organisation_id,
    )
    items_by_org: dict[str, list[domain.OpenItem]] = {}
    for row in (await session.execute(query)).all():
        items_by_org.setdefault(row.organisation_id, []).append(
            domain.OpenItem(int(row.open_pence), row.due_date, row.business_date)
        )
    credits = await credits_by_organisation(session, as_of, pcn_id=pcn_id, organisation_id=organisation_id)
    organisations = sorted(set(items_by_org) | {org for org, pence in credits.items() if pence})
    by_org = [
        {"organisation_id": org, **_summary(items_by_org.get(org, []), as_of, int(credits.get(org) or 0))}
        for org in organisations
    ]
    everything = [item for items in items_by_org.values() for item in items]
    total_credit = sum(int(v or 0) for v in credits.values())
    return {
        "as_of": as_of.isoformat(),
        "currency": "GBP",
        "total": _summary(everything, as_of, total_credit),
        "by_organisation": by_org,
    }


async def credits_by_organisation(
    session: AsyncSession, as_of: date | None, *, pcn_id: str | None, organisation_id: str | None
) -> dict[str, int]:
    """Credit held for each organisation: money paid beyond what was open, and fees already paid
    that a correction took back. Shown, never lost; not yet applied to later payments by itself."""
    query = _scoped(
        select(credit_movements.c.organisation_id, func.sum(credit_movements.c.credit_pence)).group_by(
            credit_movements.c.organisation_id
        ),
        credit_movements,
        pcn_id,
        organisation_id,
    )
    if as_of is not None:
        query = query.where(credit_movements.c.effective_on <= as_of)
    return {org: int(pence or 0) for org, pence in (await session.execute(query)).all()}


def _summary(items: list[domain.OpenItem], as_of: date, credit_pence: int) -> dict:
    buckets = domain.age_open_items(items, as_of)
    return {
        **buckets,
        "owed_pence": sum(buckets.values()),
        "overdue_pence": sum(v for k, v in buckets.items() if k != "not_due"),
        "credit_held_pence": credit_pence,
        **domain.days_outstanding(items, as_of),
    }


# Every line of a statement in one ordered read: accruals (dated by the work), fees taken back and
# payments made, each with the running sum of what it moved. The window sums over every line of the
# range, so a page's balances are the whole statement's, and LIMIT/OFFSET only cut what is returned.
# Ids sort byte-wise (COLLATE "C"): the order is the same on any database locale.
STATEMENT_LINES = text(
    """
    WITH lines AS (
        SELECT 'accrual' AS type, p.payment_id AS line_id, p.business_date, NULL::date AS paid_on,
               p.pcn_id, p.basis, p.referral_id, p.period, p.due_date, p.payment_id,
               NULL::text AS settlement_id, NULL::text AS reference, p.amount_pence,
               0::bigint AS reversed_pence, p.refused_over_cap_pence, p.open_pence,
               NULL::bigint AS overpaid_pence, NULL::text AS reason, p.amount_pence AS moved_pence
          FROM payments p
         WHERE p.organisation_id = :organisation_id AND (CAST(:pcn_id AS text) IS NULL OR p.pcn_id = :pcn_id)
           AND p.business_date BETWEEN :from_ AND :to
        UNION ALL
        SELECT 'reversal', r.payment_id, r.business_date, NULL, r.pcn_id, p.basis, p.referral_id, p.period,
               NULL, r.payment_id, NULL, NULL, 0, r.reversed_pence, 0, NULL, r.overpaid_pence, r.reason,
               -r.reversed_pence
          FROM payment_reversals r JOIN payments p ON p.payment_id = r.payment_id
         WHERE r.organisation_id = :organisation_id AND (CAST(:pcn_id AS text) IS NULL OR r.pcn_id = :pcn_id)
           AND r.business_date BETWEEN :from_ AND :to
        UNION ALL
        SELECT 'payment', s.settlement_id, s.paid_on, s.paid_on, s.pcn_id, NULL, NULL, NULL, NULL, NULL,
               s.settlement_id, s.reference, s.amount_pence, 0, 0, NULL, NULL, NULL, -s.amount_pence
          FROM settlements s
         WHERE s.organisation_id = :organisation_id AND (CAST(:pcn_id AS text) IS NULL OR s.pcn_id = :pcn_id)
           AND s.paid_on BETWEEN :from_ AND :to
    )
    SELECT *,
           (sum(moved_pence) OVER running)::bigint AS running_pence,
           count(*) OVER () AS lines_in_range
      FROM lines
    WINDOW running AS (ORDER BY business_date, type COLLATE "C", line_id COLLATE "C" ROWS UNBOUNDED PRECEDING)
     ORDER BY business_date, type COLLATE "C", line_id COLLATE "C"
     LIMIT :limit OFFSET :offset
    """
)


async def statement(
    session: AsyncSession,
    organisation_id: str,
    pcn_id: str | None,
    from_: date,
    to: date,
    *,
    page: int = 1,
    per_page: int | None = None,
) -> dict:
    """Work accrued (dated by the work) and payments made (dated paid_on), with a running balance:
    what the PCN(s) owe the organisation net of any credit held. Every line of the range, or with
    `per_page` one page of them (each line's balance still the statement's running balance)."""
    assert page >= 1 and (per_page is None or per_page >= 1), (page, per_page)
    # The opening balance and the range's totals from the daily sums (statement_days), whatever the page.
    before, in_range = _day_sums(from_, to)
    opening = int(await session.scalar(_scoped(before, statement_days, pcn_id, organisation_id)))
    charged, paid = (await session.execute(_scoped(in_range, statement_days, pcn_id, organisation_id))).one()
    scope = {"organisation_id": organisation_id, "pcn_id": pcn_id, "from_": from_, "to": to}

    async def lines_read(limit: int | None, offset: int) -> list:
        query = await session.execute(STATEMENT_LINES, scope | {"limit": limit, "offset": offset})
        return list(query.mappings().all())

    rows = await lines_read(per_page, (page - 1) * (per_page or 0))
    lines = [LINE_OF[row["type"]](row) | {"balance_pence": opening + row["running_pence"]} for row in rows]
    body = {
        "organisation_id": organisation_id,
        "pcn_id": pcn_id,
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "currency": "GBP",
        "opening_balance_pence": opening,
        "closing_balance_pence": opening + int(charged) - int(paid),
        "charged_pence": int(charged),
        "paid_pence": int(paid),
        "lines": lines,
    }
    if per_page is None:
        return body
    # A page past the end holds no line to carry the count: the first line of the range does.
    counted = rows or await lines_read(1, 0)
    total = counted[0]["lines_in_range"] if counted else 0
    return body | {"page": page, "per_page": per_page, "total": total}


def _day_sums(from_: date, to: date):
    moved = statement_days.c.charged_pence - statement_days.c.reversed_pence - statement_days.c.paid_pence
    before = select(func.coalesce(func.sum(moved), 0)).where(statement_days.c.on_date < from_)
    in_range = select(
        func.coalesce(func.sum(statement_days.c.charged_pence - statement_days.c.reversed_pence), 0),
        func.coalesce(func.sum(statement_days.c.paid_pence), 0),
    ).where(statement_days.c.on_date >= from_, statement_days.c.on_date <= to)
    return before, in_range


def _accrual_line(p) -> dict:
    return {
        "date": p["business_date"].isoformat(),
        "type": "accrual",
        "pcn_id": p["pcn_id"],
        "basis": p["basis"],
        "referral_id": p["referral_id"],
        "period": p["period"],
        "due_date": p["due_date"].isoformat(),
        "payment_id": p["payment_id"],
        "settlement_id": None,
        "reference": None,
        "charged_pence": p["amount_pence"],
        "paid_pence": 0,
        "refused_over_cap_pence": p["refused_over_cap_pence"],
        "open_pence": p["open_pence"],
    }


def _reversal_line(r) -> dict:
    """A fee taken back: a negative charge, so a fee already paid leaves a credit (negative balance)."""
    return {
        "date": r["business_date"].isoformat(),
        "type": "reversal",
        "pcn_id": r["pcn_id"],
        "basis": r["basis"],
        "referral_id": r["referral_id"],
        "period": r["period"],
        "due_date": None,
        "payment_id": r["payment_id"],
        "settlement_id": None,
        "reference": None,
        "charged_pence": -r["reversed_pence"],
        "paid_pence": 0,
        "refused_over_cap_pence": 0,
        "open_pence": None,
        "overpaid_pence": r["overpaid_pence"],
        "reason": r["reason"],
    }


def _payment_line(s) -> dict:
    return {
        "date": s["paid_on"].isoformat(),
        "type": "payment",
        "pcn_id": s["pcn_id"],
        "basis": None,
        "referral_id": None,
        "period": None,
        "due_date": None,
        "payment_id": None,
        "settlement_id": s["settlement_id"],
        "reference": s["reference"],
        "charged_pence": 0,
        "paid_pence": s["amount_pence"],
        "refused_over_cap_pence": 0,
        "open_pence": None,
    }


LINE_OF = {"accrual": _accrual_line, "reversal": _reversal_line, "payment": _payment_line}


CSV_COLUMNS = (
    "date",
    "type",
    "pcn_id",
    "basis",
    "referral_id",
    "period",
    "due_date",
    "payment_id",
    "settlement_id",
    "reference",
    "charged_pence",
    "charged_gbp",
    "paid_pence",
    "paid_gbp",
    "refused_over_cap_pence",
    "balance_pence",
    "balance_gbp",
)


def statement_csv(body: dict) -> str:
    """Plain columns a spreadsheet opens as is: ISO dates, pence and pounds (two decimals) side by side,
    an opening and a closing row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    edge = {column: "" for column in CSV_COLUMNS}
    writer.writerow(
        _csv_row(
            edge | {"date": body["from"], "type": "opening_balance", "balance_pence": body["opening_balance_pence"]}
        )
    )
    for line in body["lines"]:
        writer.writerow(_csv_row(line))
    writer.writerow(
        _csv_row(edge | {"date": body["to"], "type": "closing_balance", "balance_pence": body["closing_balance_pence"]})
    )
    return out.getvalue()


def _csv_row(line: dict) -> list[str]:
    money = {
        f"{name}_gbp": domain.pounds(line[f"{name}_pence"])
        for name in ("charged", "paid", "balance")
        if isinstance(line.get(f"{name}_pence"), int)
    }
    merged = {**line, **money}
    return [_cell(column, merged.get(column)) for column in CSV_COLUMNS]


NUMBER_COLUMNS = frozenset(c for c in CSV_COLUMNS if c.endswith(("_pence", "_gbp")))


def _cell(column: str, value) -> str:
    """Figures we compute go out as they are (-500 is a number); any text, above all a reference
    someone typed, is made safe to open in a spreadsheet."""
    if value is None:
        return ""
    if column in NUMBER_COLUMNS:
        return str(value)
    return domain.spreadsheet_safe(str(value))
