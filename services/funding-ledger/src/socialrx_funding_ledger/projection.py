"""The reports' projections (`open_movements`, `credit_movements`, `statement_days`), written by the
code that writes the journal, in the same transaction (ledger.record_payment / record_settlement /
record_reversal, live and in a rebuild). Reports read these few rows instead of scanning every
payment, allocation and reversal ever made.

Each movement is added to the row of its key (an upsert adding pence), so redelivery is handled
where it always was: a cause recorded before posts no journal entry and no movement either.
Rows are upserted in key order, so two transactions touching the same rows queue rather than deadlock.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Table, text
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .store import credit_movements, open_movements, statement_days


@dataclass(frozen=True)
class OpenKey:
    pcn_id: str
    organisation_id: str
    due_date: date
    business_date: date
    effective_on: date


@dataclass
class Movements:
    """Movements gathered from one or many facts, summed by key, written at once (`write`)."""

    open: defaultdict[OpenKey, list[int]]  # [accrued, paid, cancelled]
    credit: defaultdict[tuple[str, str, date], int]
    statement: defaultdict[tuple[str, str, date], list[int]]  # [charged, reversed, paid]

    @classmethod
    def new(cls) -> Movements:
        return cls(defaultdict(lambda: [0, 0, 0]), defaultdict(int), defaultdict(lambda: [0, 0, 0]))

    def accrued(
        self, pcn_id: str, organisation_id: str, due_date: date, business_date: date, amount_pence: int
    ) -> None:
        if amount_pence:
            self.open[OpenKey(pcn_id, organisation_id, due_date, business_date, business_date)][0] += amount_pence
            self.statement[(pcn_id, organisation_id, business_date)][0] += amount_pence

    def allocated(
        self, pcn_id: str, organisation_id: str, due_date: date, business_date: date, paid_on: date, amount_pence: int
    ) -> None:
        # Arrears see a payment from its business date on: money paid before that counts from then.
        key = OpenKey(pcn_id, organisation_id, due_date, business_date, max(business_date, paid_on))
        self.open[key][1] += amount_pence

    def settled(
        self, pcn_id: str, organisation_id: str, paid_on: date, amount_pence: int, unallocated_pence: int
    ) -> None:
        self.statement[(pcn_id, organisation_id, paid_on)][2] += amount_pence
        if unallocated_pence:
            self.credit[(pcn_id, organisation_id, paid_on)] += unallocated_pence

    def reversed(
        self,
        pcn_id: str,
        organisation_id: str,
        due_date: date,
        business_date: date,
        reversed_on: date,
        reversed_pence: int,
        open_cancelled_pence: int,
        overpaid_pence: int,
    ) -> None:
        if open_cancelled_pence:
            key = OpenKey(pcn_id, organisation_id, due_date, business_date, max(business_date, reversed_on))
            self.open[key][2] += open_cancelled_pence
        if overpaid_pence:
            self.credit[(pcn_id, organisation_id, reversed_on)] += overpaid_pence
        if reversed_pence:
            self.statement[(pcn_id, organisation_id, reversed_on)][1] += reversed_pence

    async def write(self, session: AsyncSession) -> None:
        if self.open:
            rows = [
                {
                    "pcn_id": k.pcn_id,
                    "organisation_id": k.organisation_id,
                    "due_date": k.due_date,
                    "business_date": k.business_date,
                    "effective_on": k.effective_on,
                    "accrued_pence": v[0],
                    "paid_pence": v[1],
                    "cancelled_pence": v[2],
                }
                for k, v in sorted(self.open.items(), key=lambda kv: _sort_key(kv[0]))
            ]
            await session.execute(_ADD_OPEN, rows)
        if self.credit:
            rows = [
                {"pcn_id": p, "organisation_id": o, "effective_on": d, "credit_pence": v}
                for (p, o, d), v in sorted(self.credit.items())
            ]
            await session.execute(_ADD_CREDIT, rows)
        if self.statement:
            rows = [
                {
                    "pcn_id": p,
                    "organisation_id": o,
                    "on_date": d,
                    "charged_pence": v[0],
                    "reversed_pence": v[1],
                    "paid_pence": v[2],
                }
                for (p, o, d), v in sorted(self.statement.items())
            ]
            await session.execute(_ADD_STATEMENT, rows)
        self.open.clear()
        self.credit.clear()
        self.statement.clear()


def _sort_key(k: OpenKey) -> tuple:
    return (k.pcn_id, k.organisation_id, k.due_date, k.business_date, k.effective_on)


def _adding(table: Table, key: tuple[str, ...], pence: tuple[str, ...]) -> Insert:
    """INSERT, or add the pence to the row already there (run once per row: executemany)."""
    stmt = pg_insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(key), set_={name: table.c[name] + stmt.excluded[name] for name in pence}
    )


_ADD_OPEN = _adding(
    open_movements,
    ("pcn_id", "organisation_id", "due_date", "business_date", "effective_on"),
    ("accrued_pence", "paid_pence", "cancelled_pence"),
)
_ADD_CREDIT = _adding(credit_movements, ("pcn_id", "organisation_id", "effective_on"), ("credit_pence",))
_ADD_STATEMENT = _adding(
    statement_days, ("pcn_id", "organisation_id", "on_date"), ("charged_pence", "reversed_pence", "paid_pence")
)


# --- the same projections recomputed from the ledger's own records (the migration that introduced
# them, and the property test's oracle) ----------------------------------------------------------

RECOMPUTE_OPEN = """
SELECT pcn_id, organisation_id, due_date, business_date, effective_on,
       sum(accrued)::bigint AS accrued_pence, sum(paid)::bigint AS paid_pence, sum(cancelled)::bigint AS cancelled_pence
FROM (
    SELECT pcn_id, organisation_id, due_date, business_date, business_date AS effective_on,
           amount_pence AS accrued, 0 AS paid, 0 AS cancelled
    FROM payments WHERE amount_pence > 0
    UNION ALL
    SELECT p.pcn_id, p.organisation_id, p.due_date, p.business_date, greatest(p.business_date, s.paid_on),
           0, a.amount_pence, 0
    FROM allocations a JOIN settlements s ON s.settlement_id = a.settlement_id
    JOIN payments p ON p.payment_id = a.payment_id
    UNION ALL
    SELECT p.pcn_id, p.organisation_id, p.due_date, p.business_date, greatest(p.business_date, r.business_date),
           0, 0, r.open_cancelled_pence
    FROM payment_reversals r JOIN payments p ON p.payment_id = r.payment_id WHERE r.open_cancelled_pence > 0
) m
GROUP BY pcn_id, organisation_id, due_date, business_date, effective_on
"""

RECOMPUTE_CREDIT = """
SELECT pcn_id, organisation_id, effective_on, sum(pence)::bigint AS credit_pence
FROM (
    SELECT pcn_id, organisation_id, paid_on AS effective_on, unallocated_pence AS pence
    FROM settlements WHERE unallocated_pence > 0
    UNION ALL
    SELECT pcn_id, organisation_id, business_date, overpaid_pence FROM payment_reversals WHERE overpaid_pence > 0
) m
GROUP BY pcn_id, organisation_id, effective_on
"""

RECOMPUTE_STATEMENT = """
SELECT pcn_id, organisation_id, on_date, sum(charged)::bigint AS charged_pence,
       sum(reversed)::bigint AS reversed_pence, sum(paid)::bigint AS paid_pence
FROM (
    SELECT pcn_id, organisation_id, business_date AS on_date, amount_pence AS charged, 0 AS reversed, 0 AS paid
    FROM payments WHERE amount_pence > 0
    UNION ALL
    SELECT pcn_id, organisation_id, business_date, 0, reversed_pence, 0 FROM payment_reversals WHERE reversed_pence > 0
    UNION ALL
    SELECT pcn_id, organisation_id, paid_on, 0, 0, amount_pence FROM settlements
) m
GROUP BY pcn_id, organisation_id, on_date
"""


async def recomputed(session: AsyncSession) -> dict[str, set[tuple]]:
    """The three projections as the ledger's records say they should be (every row, sorted out of order)."""
    return {
        name: {tuple(row) for row in (await session.execute(text(sql))).all()}
        for name, sql in (
            ("open_movements", RECOMPUTE_OPEN),
            ("credit_movements", RECOMPUTE_CREDIT),
            ("statement_days", RECOMPUTE_STATEMENT),
        )
    }


async def stored(session: AsyncSession) -> dict[str, set[tuple]]:
    """The three projections as written, rows of nothing but zeros left out (a recomputation has none)."""
    queries = {
        "open_movements": "SELECT pcn_id, organisation_id, due_date, business_date, effective_on, accrued_pence, "
        "paid_pence, cancelled_pence FROM open_movements "
        "WHERE accrued_pence <> 0 OR paid_pence <> 0 OR cancelled_pence <> 0",
        "credit_movements": "SELECT pcn_id, organisation_id, effective_on, credit_pence FROM credit_movements "
        "WHERE credit_pence <> 0",
        "statement_days": "SELECT pcn_id, organisation_id, on_date, charged_pence, reversed_pence, paid_pence "
        "FROM statement_days WHERE charged_pence <> 0 OR reversed_pence <> 0 OR paid_pence <> 0",
    }
    return {name: {tuple(row) for row in (await session.execute(text(sql))).all()} for name, sql in queries.items()}
