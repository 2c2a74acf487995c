"""Outcome and inclusion reports: which referrals a caller may see, the facts about each, the maths.

A report is about a cohort: the referrals *made* in the period (from/to are the days of referral,
inclusive, UTC), and what has happened to them since. So a referral made in March and completed in
June counts in March's cohort, and a later report over March can only grow more complete.

Outcome columns come first; the referral count is one column among the rest.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, get_args

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialrx_shared import disclosure
from socialrx_shared.auth import Principal
from socialrx_shared.errors import Forbidden, Invalid
from socialrx_shared.events import DeclineReason
from socialrx_shared.runtime import ServiceRuntime

from . import domain
from .store import measures, outcomes, referral_view

SUPPRESSED = disclosure.SUPPRESSED
SMALLEST_SHOWN_GROUP = disclosure.LARGEST_SUPPRESSED + 1
DECLINE_REASONS: tuple[str, ...] = get_args(DeclineReason)
OUTCOME_STATUSES = ("engaged", "completed", "disengaged")
UNKNOWN = "unknown"

# --- Who may see what ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    pcn_id: str | None
    organisation_id: str | None
    from_: date | None
    to: date | None

    def describe(self) -> dict[str, Any]:
        return {
            "pcn_id": self.pcn_id,
            "organisation_id": self.organisation_id,
            "from": self.from_.isoformat() if self.from_ else None,
            "to": self.to.isoformat() if self.to else None,
        }


def scope_for(
    principal: Principal, *, pcn_id: str | None, organisation_id: str | None, from_: date | None, to: date | None
) -> Scope:
    """Finance and link workers see their own PCN; a charity its own organisation; an admin anything."""
    if from_ and to and from_ > to:
        raise Invalid(f"'from' ({from_}) is after 'to' ({to})")
    if principal.role in ("finance", "link_worker"):
        if pcn_id is not None and pcn_id != principal.pcn_id:
            raise Forbidden(f"a {principal.role} may read reports of its own PCN ({principal.pcn_id}) only")
        pcn_id = principal.pcn_id
    elif principal.role == "charity":
        if organisation_id is not None and organisation_id != principal.organisation_id:
            raise Forbidden("a charity may read reports of its own organisation only")
        organisation_id = principal.organisation_id
    return Scope(pcn_id, organisation_id, from_, to)


# --- Facts about each referral -------------------------------------------------------------------


@dataclass
class Facts:
    referral_id: str
    pcn_id: str | None
    link_worker_id: str | None
    organisation_id: str | None
    service_id: str | None
    status: str
    decline_reason: str | None
    referred_at: datetime
    created_at: datetime | None
    accepted_at: datetime | None
    age_band: str | None
    postcode_district: str | None
    accessibility_needs: list[str]
    outcome_status: str | None = None  # of the latest outcome
    changes: dict[str, domain.Change] = field(default_factory=dict)


_referred_at = func.coalesce(referral_view.c.created_at, referral_view.c.accepted_at, referral_view.c.declined_at)


def _in_scope(query: Select, scope: Scope) -> Select:
    query = query.where(referral_view.c.organisation_id.is_not(None))
    if scope.pcn_id is not None:
        query = query.where(referral_view.c.pcn_id == scope.pcn_id)
    if scope.organisation_id is not None:
        query = query.where(referral_view.c.organisation_id == scope.organisation_id)
    if scope.from_ is not None:
        query = query.where(_referred_at >= datetime.combine(scope.from_, time(), timezone.utc))
    if scope.to is not None:
        query = query.where(_referred_at < datetime.combine(scope.to + timedelta(days=1), time(), timezone.utc))
    return query


async def load_facts(session: AsyncSession, scope: Scope) -> list[Facts]:
    rows = (
        (
            await session.execute(
                _in_scope(select(referral_view, _referred_at.label("referred_at")), scope).order_by(
                    referral_view.c.referral_id
                )
            )
        )
        .mappings()
        .all()
    )
    facts = {
        r["referral_id"]: Facts(
            referral_id=r["referral_id"],
            pcn_id=r["pcn_id"],
            link_worker_id=r["link_worker_id"],
            organisation_id=r["organisation_id"],
            service_id=r["service_id"],
            status=r["status"],
            decline_reason=r["decline_reason"],
            referred_at=r["referred_at"],
            created_at=r["created_at"],
            accepted_at=r["accepted_at"],
            age_band=r["age_band"],
            postcode_district=r["postcode_district"],
            accessibility_needs=list(r["accessibility_needs"] or []),
        )
        for r in rows
    }
    # Oldest first, so the last status written for a referral is that of its latest outcome.
    statuses = _in_scope(
        select(outcomes.c.referral_id, outcomes.c.status)
        .join(referral_view, referral_view.c.referral_id == outcomes.c.referral_id)
        .order_by(outcomes.c.recorded_at, outcomes.c.outcome_id),
        scope,
    )
    for referral_id, status in (await session.execute(statuses)).all():
        facts[referral_id].outcome_status = status
    observed = _in_scope(
        select(measures.c.referral_id, measures.c.instrument, measures.c.phase, measures.c.answers)
        .join(referral_view, referral_view.c.referral_id == measures.c.referral_id)
        .order_by(measures.c.recorded_at, measures.c.id),
        scope,
    )
    per_referral: dict[str, list[tuple[str, str, list[int]]]] = {}
    for referral_id, instrument, phase, answers in (await session.execute(observed)).all():
        per_referral.setdefault(referral_id, []).append((instrument, phase, list(answers)))
    for referral_id, observations in per_referral.items():
        facts[referral_id].changes = domain.changes_from(observations)
    return list(facts.values())


# --- The figures ---------------------------------------------------------------------------------


def _measured_columns() -> list[str]:
    columns: list[str] = []
    for instrument in ("WEMWBS", "SWEMWBS"):
        prefix = instrument.lower()
        columns += [f"{prefix}_people_measured", f"{prefix}_mean_change", f"{prefix}_meaningful_improvement_share"]
    columns.append("ons4_people_measured")
    for item in domain.ONS4_ITEMS:
        columns += [f"ons4_{item}_mean_change", f"ons4_{item}_improved_share"]
    return columns


MEASURED_COLUMNS = _measured_columns()
FIGURE_COLUMNS = [
    *MEASURED_COLUMNS,
    *OUTCOME_STATUSES,
    "referrals_made",
    "accepted",
    "declined",
    *(f"declined_{reason}" for reason in DECLINE_REASONS),
    "days_to_acceptance_mean",
    "days_to_acceptance_median",
]
# Which columns are means or shares over the people measured with one instrument (for suppression).
_MEASURED_BY = {c: c.split("_")[0] + "_people_measured" for c in MEASURED_COLUMNS}


def figures(group: list[Facts]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    row.update(_instrument_figures(group, "WEMWBS"))
    row.update(_instrument_figures(group, "SWEMWBS"))
    row.update(_ons4_figures(group))
    for status in OUTCOME_STATUSES:
        row[status] = sum(1 for f in group if f.outcome_status == status)
    row["referrals_made"] = len(group)
    row["accepted"] = sum(1 for f in group if f.accepted_at is not None or f.status == "accepted")
    row["declined"] = sum(1 for f in group if f.status == "declined")
    for reason in DECLINE_REASONS:
        row[f"declined_{reason}"] = sum(1 for f in group if f.status == "declined" and f.decline_reason == reason)
    days = [(f.accepted_at - f.created_at).total_seconds() / 86400 for f in group if f.accepted_at and f.created_at]
    row["days_to_acceptance_mean"] = round(statistics.fmean(days), 2) if days else None
    row["days_to_acceptance_median"] = round(statistics.median(days), 2) if days else None
    return row


def _instrument_figures(group: list[Facts], instrument: str) -> dict[str, Any]:
    changes = [f.changes[instrument] for f in group if instrument in f.changes]
    prefix = instrument.lower()
    deltas = [c.delta for c in changes if c.delta is not None]
    improved = sum(1 for c in changes if c.flag == domain.MEANINGFUL_IMPROVEMENT)
    return {
        f"{prefix}_people_measured": len(changes),
        f"{prefix}_mean_change": _mean(deltas),
        f"{prefix}_meaningful_improvement_share": _share(improved, len(changes)),
    }


def _ons4_figures(group: list[Facts]) -> dict[str, Any]:
    changes = [f.changes["ONS4"] for f in group if "ONS4" in f.changes]
    row: dict[str, Any] = {"ons4_people_measured": len(changes)}
    for index, item in enumerate(domain.ONS4_ITEMS):
        row[f"ons4_{item}_mean_change"] = _mean([(c.item_deltas or [])[index] for c in changes])
        row[f"ons4_{item}_improved_share"] = _share(
            sum(1 for c in changes if (c.item_flags or [])[index] == "improved"), len(changes)
        )
    return row


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


# --- Outcomes report -------------------------------------------------------------------------------

GROUPINGS: dict[str, Callable[[Facts], str]] = {
    "pcn": lambda f: f.pcn_id or UNKNOWN,
    "link_worker": lambda f: f.link_worker_id or UNKNOWN,
    "organisation": lambda f: f.organisation_id or UNKNOWN,
    "service": lambda f: f.service_id or UNKNOWN,
    "period": lambda f: f.referred_at.astimezone(timezone.utc).strftime("%Y-%m"),
}
GROUP_COLUMN = {
    "pcn": "pcn_id",
    "link_worker": "link_worker_id",
    "organisation": "organisation_id",
    "service": "service_id",
    "period": "period",
}


def parse_group_by(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in GROUPINGS]
    if not names or unknown or len(set(names)) != len(names):
        raise Invalid(
            f"group_by must be one or more of {', '.join(GROUPINGS)}, comma-separated, each once; got {text!r}"
        )
    return names


def grouped(facts: Iterable[Facts], key: Callable[[Facts], tuple[str, ...]]) -> dict[tuple[str, ...], list[Facts]]:
    groups: dict[tuple[str, ...], list[Facts]] = {}
    for fact in facts:
        groups.setdefault(key(fact), []).append(fact)
    return dict(sorted(groups.items()))


def build_outcomes_report(
    facts: list[Facts], scope: Scope, group_by: list[str], disclosure_control: bool = True
) -> dict[str, Any]:
    key_columns = [GROUP_COLUMN[g] for g in group_by]
    groups = grouped(facts, lambda f: tuple(GROUPINGS[g](f) for g in group_by))
    rows = [figures(group) for group in groups.values()]
    total = figures(facts)
    if disclosure_control:
        # The groups split the referrals: each count column adds up to the total's.
        rows, total = protect_rows(rows, total)
    items = [{**dict(zip(key_columns, key, strict=False)), **row} for key, row in zip(groups, rows, strict=False)]
    report = {
        "report": "outcomes",
        "scope": scope.describe(),
        "group_by": group_by,
        "columns": key_columns + FIGURE_COLUMNS,
        "items": items,
        "total": {**{c: "all" for c in key_columns}, **total},
    }
    return {**report, "suppression": disclosure.RULE} if disclosure_control else report


async def outcomes_report(
    rt: ServiceRuntime, scope: Scope, group_by: list[str], disclosure_control: bool = True
) -> dict[str, Any]:
    async with rt.sessionmaker() as session:
        facts = await load_facts(session, scope)
    return build_outcomes_report(facts, scope, group_by, disclosure_control)


# --- Inclusion report ------------------------------------------------------------------------------

INCLUSION_DIMENSIONS: dict[str, Callable[[Facts], list[str]]] = {
    "age_band": lambda f: [f.age_band or UNKNOWN],
    "postcode_district": lambda f: [f.postcode_district or UNKNOWN],
    # A referral with several needs counts in each of them; one with none in "none".
    "accessibility_needs": lambda f: sorted(set(f.accessibility_needs)) or ["none"],
}


def build_inclusion_report(facts: list[Facts], scope: Scope, disclosure_control: bool = True) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for dimension, groups_of in INCLUSION_DIMENSIONS.items():
        groups: dict[str, list[Facts]] = {}
        for fact in facts:
            for group in groups_of(fact):
                groups.setdefault(group, []).append(fact)
        ordered = sorted(groups.items())
        rows = [figures(members) for _, members in ordered]
        if disclosure_control:
            # Age bands and districts split the referrals, so their rows add up to the outcomes
            # report's total of the same scope (published there): protected as one table with it.
            # A referral may have several accessibility needs: those rows add up to nothing.
            partition = dimension != "accessibility_needs"
            rows, _ = protect_rows(rows, figures(facts) if partition else None)
        items += [
            {"dimension": dimension, "group": group, **row} for (group, _), row in zip(ordered, rows, strict=False)
        ]
    report = {
        "report": "inclusion",
        "scope": scope.describe(),
        "columns": ["dimension", "group", *FIGURE_COLUMNS],
        "items": items,
    }
    return {**report, "suppression": disclosure.RULE} if disclosure_control else report


COUNT_COLUMNS = [c for c in FIGURE_COLUMNS if c.endswith("_people_measured")] + [
    *OUTCOME_STATUSES,
    "referrals_made",
    "accepted",
    "declined",
    *(f"declined_{reason}" for reason in DECLINE_REASONS),
]
_DECLINE_PARTS = [f"declined_{reason}" for reason in DECLINE_REASONS]
# Means and shares, and the count of people each is over.
_OVER = {
    **{c: over for c, over in _MEASURED_BY.items() if c != over},
    "days_to_acceptance_mean": "accepted",
    "days_to_acceptance_median": "accepted",
}


def protect_rows(
    rows: list[dict[str, Any]], total: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One report table under the disclosure rule (socialrx_shared.disclosure), and its total row.

    Count cells: 1-7 hidden, the rest rounded to 5, secondary suppression along each column (rows
    add up to the total) and along each row (declines by reason add up to the declines). A group of
    1-7 referrals is hidden whole. A mean or share is shown only over 8 or more people whose count
    is shown, and a share only when neither the people it counts nor the rest are 1-7 (0.125 of 8
    people is one person).
    """
    with_total = rows + ([total] if total is not None else [])
    cells: dict[tuple[int, str], int] = {}
    forced: set[tuple[int, str]] = set()
    for r, row in enumerate(with_total):
        for column in COUNT_COLUMNS:
            cells[(r, column)] = row[column]
        if disclosure.primary(row["referrals_made"]):
            forced |= {(r, column) for column in COUNT_COLUMNS}
    lines: list[tuple[list[tuple[int, str]], tuple[int, str]]] = [
        ([(r, c) for c in _DECLINE_PARTS], (r, "declined")) for r in range(len(with_total))
    ]
    if total is not None:
        t = len(rows)
        lines += [([(r, c) for r in range(len(rows))], (t, c)) for c in COUNT_COLUMNS]
    shown_cells = disclosure.protect(cells, lines, forced=forced)
    out = []
    for r, row in enumerate(with_total):
        shown = dict(row)
        for column in COUNT_COLUMNS:
            shown[column] = shown_cells[(r, column)]
        whole_group_hidden = disclosure.primary(row["referrals_made"])
        for column, over in _OVER.items():
            if row[column] is None:
                continue
            people = row[over]
            hidden = shown[over] == SUPPRESSED or people < SMALLEST_SHOWN_GROUP
            if column.endswith("_share") and not hidden:
                counted = round(row[column] * people)
                hidden = disclosure.primary(counted) or disclosure.primary(people - counted)
            if hidden:
                shown[column] = SUPPRESSED
        if whole_group_hidden:
            shown = {column: SUPPRESSED for column in shown}
        out.append(shown)
    return out[: len(rows)], (out[-1] if total is not None else {})


async def inclusion_report(rt: ServiceRuntime, scope: Scope, disclosure_control: bool = True) -> dict[str, Any]:
    async with rt.sessionmaker() as session:
        facts = await load_facts(session, scope)
    return build_inclusion_report(facts, scope, disclosure_control)


# --- CSV -------------------------------------------------------------------------------------------


def to_csv(report: dict[str, Any]) -> str:
    """The JSON report's rows (and its total, if any, last) with the same columns, blank for none."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=report["columns"], lineterminator="\r\n")
    writer.writeheader()
    rows = report["items"] + ([report["total"]] if "total" in report else [])
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row[c] for c in report["columns"]})
    return out.getvalue()
