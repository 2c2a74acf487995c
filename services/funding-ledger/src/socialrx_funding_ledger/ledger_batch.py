"""The rebuild's set-based twins of ledger.record_payment / record_settlement / record_reversal: a
batch of facts posted with a handful of statements (multi-row INSERT ... SELECT FROM unnest(...),
one UPDATE ... FROM unnest(...)) instead of five statements a fact.

Each must leave exactly what its one-by-one twin leaves, the projections included, given the same
facts in the same order (the first of two facts with one cause wins; a cause recorded before posts
nothing): test_rebuild_integration compares a rebuild with the live ledger, and bench_ledger compares
one with a ledger written fact by fact. The same money checks raise LedgerBroken.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared.events import PaymentDue, PaymentReversed, PaymentSettled

from .ledger import LedgerBroken, check_lines, credit_account, payable_account
from .projection import Movements


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The session's own asyncpg connection, inside the session's transaction: arrays go to PostgreSQL
    as they are. SQLAlchemy's asyncpg adapter sends BEGIN only with its first statement, so one is
    sent first if none was; without it these statements would each commit on their own."""
    raw = await (await session.connection()).get_raw_connection()
    conn: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
    if not conn.is_in_transaction():
        await session.execute(text("SELECT 1"))
    if not conn.is_in_transaction():
        raise RuntimeError("ledger_batch needs the session's transaction")
    return conn


def _first_of_each(items: list[Any], *keys: Any) -> list[Any]:
    """Keep the first fact of each key (a redelivery, or a second fact with a cause already taken)."""
    seen: list[set] = [set() for _ in keys]
    kept = []
    for item in items:
        values = [key(item) for key in keys]
        if any(v in s for v, s in zip(values, seen, strict=False)):
            continue
        for v, s in zip(values, seen, strict=False):
            s.add(v)
        kept.append(item)
    return kept


async def _post_entries(
    conn: asyncpg.Connection, entries: list[tuple[str, date, str, list[tuple[str, int, int]]]]
) -> set[str]:
    """Post balanced entries (cause_key, business_date, memo, lines); the causes posted (not posted before)."""
    if not entries:
        return set()
    for cause_key, _, _, lines in entries:
        check_lines(cause_key, lines)
    posted = await conn.fetch(
        "INSERT INTO journal_entries (cause_key, business_date, memo) "
        "SELECT * FROM unnest($1::text[], $2::date[], $3::text[]) "
        "ON CONFLICT (cause_key) DO NOTHING RETURNING id, cause_key",
        [e[0] for e in entries],
        [e[1] for e in entries],
        [e[2] for e in entries],
    )
    ids = {row["cause_key"]: row["id"] for row in posted}
    lines = [
        (ids[cause_key], account, d, c)
        for cause_key, _, _, entry_lines in entries
        if cause_key in ids
        for account, d, c in entry_lines
    ]
    await conn.execute(
        "INSERT INTO journal_lines (entry_id, account, debit_pence, credit_pence) "
        "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])",
        [line[0] for line in lines],
        [line[1] for line in lines],
        [line[2] for line in lines],
        [line[3] for line in lines],
    )
    return set(ids)


async def record_payments(session: AsyncSession, facts: list[tuple[PaymentDue, str, date]]) -> int:
    """(payment, cause_key, business_date) each; how many were recorded (the others were before)."""
    facts = _first_of_each(facts, lambda f: f[1], lambda f: f[0].payment_id)
    if not facts:
        return 0
    conn = await raw_connection(session)
    columns: list[list[Any]] = [[] for _ in range(13)]
    for p, cause_key, business_date in facts:
        for column, value in zip(
            columns,
            (
                p.payment_id,
                cause_key,
                p.agreement_id,
                p.pcn_id,
                p.organisation_id,
                p.referral_id,
                p.basis,
                p.amount_pence,
                p.period,
                p.due_date,
                business_date,
                p.caused_at,
                p.refused_over_cap_pence,
            ),
            strict=False,
        ):
            column.append(value)
    inserted = {
        row[0]
        for row in await conn.fetch(
            "INSERT INTO payments (payment_id, cause_key, agreement_id, pcn_id, organisation_id, referral_id, basis, "
            "amount_pence, open_pence, period, due_date, business_date, caused_at, refused_over_cap_pence) "
            "SELECT p, c, a, pcn, o, r, b, amount, amount, period, due, business, caused, refused FROM unnest("
            "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], "
            "$9::text[], $10::date[], $11::date[], $12::timestamptz[], $13::bigint[]) "
            "AS t(p, c, a, pcn, o, r, b, amount, period, due, business, caused, refused) "
            "ON CONFLICT (cause_key) DO NOTHING RETURNING cause_key",
            *columns,
        )
    }
    recorded = [f for f in facts if f[1] in inserted]
    owed = [(p, cause_key, business_date) for p, cause_key, business_date in recorded if p.amount_pence > 0]
    posted = await _post_entries(
        conn,
        [
            (
                cause_key,
                business_date,
                f"{p.basis} {p.referral_id or p.period}",
                [
                    (f"expense:{p.pcn_id}", p.amount_pence, 0),
                    (payable_account(p.pcn_id, p.organisation_id), 0, p.amount_pence),
                ],
            )
            for p, cause_key, business_date in owed
        ],
    )
    if len(posted) != len(owed):
        taken = sorted({cause_key for _, cause_key, _ in owed} - posted)
        raise LedgerBroken(f"journal already holds {taken[0]} but payments did not")
    moves = Movements.new()
    for p, _, business_date in owed:
        moves.accrued(p.pcn_id, p.organisation_id, p.due_date, business_date, p.amount_pence)
    await moves.write(session)
    return len(recorded)


async def record_settlements(session: AsyncSession, facts: list[tuple[PaymentSettled, str]]) -> int:
    """(settlement, cause_key) each; how many were recorded."""
    for settled, _ in facts:
        if sum(a.amount_pence for a in settled.allocations) > settled.amount_pence:
            raise LedgerBroken(f"settlement {settled.settlement_id}: allocations exceed the amount paid")
    facts = _first_of_each(
        facts,
        lambda f: f[0].settlement_id,
        lambda f: f[1],
        lambda f: (f[0].pcn_id, f[0].organisation_id, f[0].reference),
    )
    if not facts:
        return 0
    conn = await raw_connection(session)
    unallocated = [s.amount_pence - sum(a.amount_pence for a in s.allocations) for s, _ in facts]
    inserted = {
        row[0]
        for row in await conn.fetch(
            "INSERT INTO settlements (settlement_id, cause_key, pcn_id, organisation_id, amount_pence, unallocated_pence, "
            "paid_on, reference) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
            "$6::bigint[], $7::date[], $8::text[]) ON CONFLICT DO NOTHING RETURNING settlement_id",
            [s.settlement_id for s, _ in facts],
            [c for _, c in facts],
            [s.pcn_id for s, _ in facts],
            [s.organisation_id for s, _ in facts],
            [s.amount_pence for s, _ in facts],
            unallocated,
            [s.paid_on for s, _ in facts],
            [s.reference for s, _ in facts],
        )
    }
    recorded = [(s, left) for (s, _), left in zip(facts, unallocated, strict=False) if s.settlement_id in inserted]
    # Every allocation of the batch to one payment at once: each fitting what was open when it came
    # is the same as their sum fitting what was open before the first (they only ever reduce it).
    per_payment: dict[str, list[Any]] = {}
    for s, _ in recorded:
        for a in s.allocations:
            parties = (s.pcn_id, s.organisation_id)
            entry = per_payment.setdefault(a.payment_id, [parties, 0])
            if entry[0] != parties:
                raise LedgerBroken(f"allocation to {a.payment_id} does not fit its open amount")
            entry[1] += a.amount_pence
    dates: dict[str, tuple[date, date]] = {}
    if per_payment:
        reduced = await conn.fetch(
            "UPDATE payments p SET open_pence = p.open_pence - t.amount FROM unnest($1::text[], $2::text[], "
            "$3::text[], $4::bigint[]) AS t(payment_id, pcn_id, organisation_id, amount) "
            "WHERE p.payment_id = t.payment_id AND p.pcn_id = t.pcn_id AND p.organisation_id = t.organisation_id "
            "AND p.open_pence >= t.amount RETURNING p.payment_id, p.due_date, p.business_date",
            list(per_payment),
            [v[0][0] for v in per_payment.values()],
            [v[0][1] for v in per_payment.values()],
            [v[1] for v in per_payment.values()],
        )
        dates = {row["payment_id"]: (row["due_date"], row["business_date"]) for row in reduced}
        if len(dates) != len(per_payment):
            missing = sorted(set(per_payment) - set(dates))
            raise LedgerBroken(f"allocation to {missing[0]} does not fit its open amount")
        rows = [(s.settlement_id, a.payment_id, a.amount_pence) for s, _ in recorded for a in s.allocations]
        await conn.execute(
            "INSERT INTO allocations (settlement_id, payment_id, amount_pence) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
        )
    entries = []
    moves = Movements.new()
    for s, left in recorded:
        allocated = s.amount_pence - left
        lines = [(f"bank:{s.pcn_id}", 0, s.amount_pence)]
        if allocated:
            lines.append((payable_account(s.pcn_id, s.organisation_id), allocated, 0))
        if left:
            lines.append((credit_account(s.pcn_id, s.organisation_id), left, 0))
        entries.append((f"settlement:{s.settlement_id}", s.paid_on, f"payment {s.reference}", lines))
        moves.settled(s.pcn_id, s.organisation_id, s.paid_on, s.amount_pence, left)
        for a in s.allocations:
            due_date, business_date = dates[a.payment_id]
            moves.allocated(s.pcn_id, s.organisation_id, due_date, business_date, s.paid_on, a.amount_pence)
    await _post_entries(conn, entries)  # a settlement's entry posted before (by hand) is left as it is
    await moves.write(session)
    return len(recorded)


async def record_reversals(session: AsyncSession, facts: list[tuple[PaymentReversed, str]]) -> int:
    """(reversal, cause_key) each; how many were recorded."""
    facts = _first_of_each(facts, lambda f: f[0].payment_id, lambda f: f[1])
    if not facts:
        return 0
    conn = await raw_connection(session)
    inserted = {
        row[0]
        for row in await conn.fetch(
            "INSERT INTO payment_reversals (payment_id, cause_key, pcn_id, organisation_id, reversed_pence, "
            "open_cancelled_pence, overpaid_pence, business_date, reason) SELECT * FROM unnest($1::text[], $2::text[], "
            "$3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::date[], $9::text[]) "
            "ON CONFLICT DO NOTHING RETURNING payment_id",
            [r.payment_id for r, _ in facts],
            [c for _, c in facts],
            [r.pcn_id for r, _ in facts],
            [r.organisation_id for r, _ in facts],
            [r.reversed_pence for r, _ in facts],
            [r.open_cancelled_pence for r, _ in facts],
            [r.overpaid_pence for r, _ in facts],
            [r.business_date for r, _ in facts],
            [r.reason for r, _ in facts],
        )
    }
    recorded = [(r, c) for r, c in facts if r.payment_id in inserted]
    if not recorded:
        return 0
    changed = await conn.fetch(
        "UPDATE payments p SET reversed_pence = t.reversed, open_pence = 0 FROM unnest($1::text[], $2::bigint[], "
        "$3::bigint[]) AS t(payment_id, reversed, open_cancelled) WHERE p.payment_id = t.payment_id "
        "AND p.reversed_pence = 0 AND p.amount_pence = t.reversed AND p.open_pence = t.open_cancelled "
        "RETURNING p.payment_id, p.due_date, p.business_date",
        [r.payment_id for r, _ in recorded],
        [r.reversed_pence for r, _ in recorded],
        [r.open_cancelled_pence for r, _ in recorded],
    )
    dates = {row["payment_id"]: (row["due_date"], row["business_date"]) for row in changed}
    if len(dates) != len(recorded):
        missing = sorted({r.payment_id for r, _ in recorded} - set(dates))
        raise LedgerBroken(f"reversal of {missing[0]} does not match the payment's amount and open amount")
    entries = []
    moves = Movements.new()
    for r, cause_key in recorded:
        due_date, business_date = dates[r.payment_id]
        moves.reversed(
            r.pcn_id,
            r.organisation_id,
            due_date,
            business_date,
            r.business_date,
            r.reversed_pence,
            r.open_cancelled_pence,
            r.overpaid_pence,
        )
        if r.reversed_pence:
            lines = [(f"expense:{r.pcn_id}", 0, r.reversed_pence)]
            if r.open_cancelled_pence:
                lines.append((payable_account(r.pcn_id, r.organisation_id), r.open_cancelled_pence, 0))
            if r.overpaid_pence:
                lines.append((credit_account(r.pcn_id, r.organisation_id), r.overpaid_pence, 0))
            entries.append(
                (cause_key, r.business_date, f"reverses {r.basis} {r.referral_id or r.payment_id}: {r.reason}", lines)
            )
    await _post_entries(conn, entries)
    await moves.write(session)
    return len(recorded)
