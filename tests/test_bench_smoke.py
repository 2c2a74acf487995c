"""`make bench` keeps working: a tiny run on the harness's Kafka and PostgreSQL, correctness only.

The bench asserts no speed, and neither does this test: it checks that every lifecycle completed
exactly once, the trial balance is zero, the rebuild equals the live ledger, and the files are written.
"""

from __future__ import annotations

import json

from socialrx_bench import bench, bench_bulk
from socialrx_harness.postgres import SERVICES


def test_bench_tiny_run_is_correct(kafka, postgres, jwt_secret, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("SOCIALRX_JWT_SECRET", jwt_secret)
    monkeypatch.setattr(bench_bulk, "PHASE_LINES", 40)  # the bulk phase, at a smoke test's size
    for service in SERVICES:
        monkeypatch.setenv(
            service.upper().replace("-", "_") + "_DATABASE_URL", postgres.new_database("bench_" + service)
        )

    code = bench.main(
        [
            "--n",
            "20",
            "--warmup",
            "5",
            "--rate",
            "5",
            "--rate-seconds",
            "2",
            "--workers",
            "4",
            "--organisations",
            "2",
            "--arrears-payments",
            "3000",
            "--out",
            str(tmp_path),
            "--name",
            "smoke",
        ]
    )

    result = json.loads((tmp_path / "smoke.json").read_text())
    checks = result["correctness"]
    assert checks["lifecycles_driven"] == 5 + 20 + 10
    assert checks["every_lifecycle_completed_exactly_once"], checks
    assert checks["payments_ledgered"] == 2 * checks["lifecycles_driven"]
    assert checks["payment_due_published_distinct"] == 2 * checks["lifecycles_driven"]
    assert (
        checks["trial_balance_zero"]
        and checks["trial_balance"]["debits_pence"] == checks["trial_balance"]["credits_pence"]
    )
    assert result["ledger_rebuild"]["equal_to_live"] is True
    assert result["arrears"]["owed_pence_correct"] is True
    assert {"machine", "versions", "commit", "raw_kafka", "per_service_flat_out", "timeline"} <= set(result)
    bulk = result["extra_phases"]["bench_bulk"]
    assert "error" not in bulk, bulk
    assert bulk["lines_per_upload"] == 40 and bulk["outcomes_ledgered_per_s"] > 0
    assert (tmp_path / "smoke.png").read_bytes().startswith(b"\x89PNG")
    assert code == 0
