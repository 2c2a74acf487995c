"""`python -m socialrx_bench.bench_bulk` keeps working: a tiny run on the harness's Kafka and
PostgreSQL. It asserts no speed: every line created, accepted, recorded and ledgered, nothing twice."""

from __future__ import annotations

import json

from socialrx_bench import bench_bulk
from socialrx_harness.postgres import SERVICES


def test_bench_bulk_tiny_run_is_complete(kafka, postgres, jwt_secret, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("SOCIALRX_JWT_SECRET", jwt_secret)
    for service in SERVICES:
        monkeypatch.setenv(
            service.upper().replace("-", "_") + "_DATABASE_URL", postgres.new_database("bulk_" + service)
        )

    code = bench_bulk.main(["--lines", "40", "--timeout", "120", "--out", str(tmp_path), "--name", "smoke"])

    result = json.loads((tmp_path / "smoke.json").read_text())
    assert code == 0
    assert (result["referrals"]["created"], result["referrals"]["refused"]) == (40, 0)
    assert (result["outcomes"]["recorded"], result["outcomes"]["refused"]) == (40, 0)
    assert result["referrals_resent"] == {**result["referrals_resent"], "created": 0, "already_created": 40}
    for figure in ("seconds_to_answer", "seconds_to_all_seen", "lines_per_s_seen_downstream"):
        assert result["referrals"][figure] > 0
    assert result["outcomes"]["lines_per_s_ledgered"] > 0


def test_nhs_numbers_have_valid_check_digits() -> None:
    from socialrx_referral_intake.domain import nhs_number_problem

    numbers = bench_bulk.nhs_numbers(500)
    assert len(set(numbers)) == 500 and not [n for n in numbers if nhs_number_problem(n)]
