"""Commands refuse with the shared typed refusals (socialrx_shared.errors), never an HTTP status: the
shared app maps them to 422 / 413 / 409 / 404 / 403 once (the API tests check the statuses)."""

from __future__ import annotations

import pytest

from socialrx_funding_ledger import commands
from socialrx_shared.errors import Invalid, TooLarge


def test_a_remittance_without_its_header_is_invalid() -> None:
    with pytest.raises(Invalid, match="first line must be the header"):
        commands.parse_remittance("reference,amount\nx,1\n")


def test_a_remittance_too_long_is_too_large() -> None:
    header = ",".join(commands.domain.REMITTANCE_HEADER)
    with pytest.raises(TooLarge, match="split the remittance"):
        commands.parse_remittance(header + "\n" + "x\n" * (commands.MAX_RECONCILIATION_LINES + 1))
