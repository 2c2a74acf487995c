"""Read models for finance and charities: arrears, statements, cap use, the lists behind the API's GETs.
Reads only; each in a session of its own (`read`), so the HTTP layer holds no SQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.errors import NotFound
from socialrx_shared.runtime import ServiceRuntime

from . import commands, domain, ledger
from .store import (
    agreements,
    credit_movements,
    journal_lines,
    open_movements,
    payment_reversals,
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


async def statement(session: AsyncSession, organisation_id: str, pcn_id: str | None, from_: date, to: date) -> dict:
    """Work accrued (dated by the work) and payments made (dated paid_on), with a running balance:
    what the PCN(s) owe the organisation net of any credit held."""
    # The opening balance from the daily sums (statement_days); only the lines in the range are read,
    # through indexes on (organisation_id, date).
    opening = int(
        await session.scalar(
            _scoped(
                select(
                    func.coalesce(
                        func.sum(
                            statement_days.c.charged_pence
                            - statement_days.c.reversed_pence
                            - statement_days.c.paid_pence
                        ),
                        0,
                    )
                ).where(statement_days.c.on_date < from_),
                statement_days,
                pcn_id,
                organisation_id,
            )
        )
    )
    accrued = (
        (
            await session.execute(
                _scoped(select(payments), payments, pcn_id, organisation_id).where(
                    payments.c.business_date >= from_, payments.c.business_date <= to
                )
            )
        )
        .mappings()
        .all()
    )
    paid = (
        (
            await session.execute(
                _scoped(select(settlements), settlements, pcn_id, organisation_id).where(
                    settlements.c.paid_on >= from_, settlements.c.paid_on <= to
                )
            )
        )
        .mappings()
        .all()
    )
    taken_back = (
        (
            await session.execute(
                _scoped(
                    select(payment_reversals, payments.c.basis, payments.c.referral_id, payments.c.period).join(
                        payments, payments.c.payment_id == payment_reversals.c.payment_id
                    ),
                    payment_reversals,
                    pcn_id,
                    organisation_id,
                ).where(payment_reversals.c.business_date >= from_, payment_reversals.c.business_date <= to)
            )
        )
        .mappings()
        .all()
    )
    lines = [_accrual_line(p) for p in accrued]
    lines += [_reversal_line(r) for r in taken_back]
    lines += [_payment_line(s) for s in paid]
    lines.sort(key=lambda line: (line["date"], line["type"], line["payment_id"] or line["settlement_id"]))
    balance = opening
    for line in lines:
        balance += line["charged_pence"] - line["paid_pence"]
        line["balance_pence"] = balance
    return {
        "organisation_id": organisation_id,
        "pcn_id": pcn_id,
        "from": from_.isoformat(),
        "to": to.isoformat(),
        "currency": "GBP",
        "opening_balance_pence": opening,
        "closing_balance_pence": balance,
        "charged_pence": sum(line["charged_pence"] for line in lines),
        "paid_pence": sum(line["paid_pence"] for line in lines),
        "lines": lines,
    }


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
