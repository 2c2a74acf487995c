"""`make chaos` keeps working: its fault schedule replays from a seed, and a short run (a few hundred
lifecycles, one fault of each kind, two replicas of every service, three brokers, PostgreSQL with
fsync on) ends with nothing lost, nothing twice, every invariant held and nothing left running.

The full run is `make chaos` (README: Reliability); this is its short variant inside `make test`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from socialrx_harness import chaos, procs
from socialrx_harness.chaos_faults import (
    CONSUMER_SESSION_TIMEOUT_S,
    KINDS,
    RECOVER_AFTER_LAST_S,
    STORM_CAP_S,
    Fault,
    recovery_deadline,
    schedule,
)
from socialrx_harness.chaos_load import plan_for
from socialrx_harness.postgres import SERVICES


def test_the_same_seed_replays_the_same_schedule() -> None:
    first = [f.to_json() for f in schedule(7, 600, SERVICES, per_kind=2)]
    again = [f.to_json() for f in schedule(7, 600, SERVICES, per_kind=2)]
    other = [f.to_json() for f in schedule(8, 600, SERVICES, per_kind=2)]
    assert first == again
    assert first != other
    assert sorted(f["kind"] for f in first) == sorted(KINDS * 2)
    assert all(60 <= f["at_s"] <= 450 for f in first)  # within the load's middle
    assert [f["at_s"] for f in first] == sorted(f["at_s"] for f in first)


def test_a_frozen_replica_stays_frozen_past_the_consumer_session_timeout() -> None:
    freezes = [f for seed in range(20) for f in schedule(seed, 300, SERVICES) if f.kind == "freeze"]
    assert freezes and all(f.down_s > CONSUMER_SESSION_TIMEOUT_S for f in freezes)


def test_what_a_lifecycle_does_is_drawn_from_the_seed() -> None:
    plans = [plan_for(3, i, 5) for i in range(2000)]
    assert plans == [plan_for(3, i, 5) for i in range(2000)]
    declined = sum(p.decline for p in plans)
    corrected = sum(p.correct for p in plans)
    assert 100 < declined < 300 and 100 < corrected < 300  # about 10% each
    assert not any(p.decline and p.correct for p in plans)


class _Replica:
    """A stand-in process with the two things the supervisor uses: `proc` and `start()`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = subprocess.Popen(["sleep", "60"])


async def test_the_supervisor_starts_again_a_replica_that_exited_but_not_one_a_fault_holds() -> None:
    stack = chaos.Stack.__new__(chaos.Stack)
    stack.in_fault, stack.restarts_after_exit = set(), {}
    exited, held = _Replica(), _Replica()
    stack.replicas = {"funding-ledger": [exited, held]}
    for replica in (exited, held):
        replica.start()
        replica.proc.kill()
        replica.proc.wait()
    stack.in_fault.add(("funding-ledger", 1))  # a kill -9 fault is restarting this one itself
    stop = asyncio.Event()
    supervising = asyncio.create_task(stack.supervise(stop))
    try:
        for _ in range(50):
            if exited.starts == 2:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await supervising
    try:
        assert exited.starts == 2 and exited.proc.poll() is None
        assert held.starts == 1
        assert stack.restarts_after_exit == {"funding-ledger#0": 1}
    finally:
        for replica in (exited, held):
            if replica.proc.poll() is None:
                replica.proc.kill()
                replica.proc.wait()


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_short_chaos_run_loses_nothing_and_doubles_nothing(tmp_path) -> None:
    out = tmp_path / "chaos.json"
    cfg = chaos.Config(
        n=240, rate=3.0, seed=11, per_kind=1, records=300, check_every_s=10.0, quiesce_timeout_s=180.0, out=out
    )

    report = chaos.run(cfg)

    assert json.loads(out.read_text())["seed"] == 11
    assert report["faults_by_kind"] == {kind: 1 for kind in KINDS}
    assert report["lifecycles"]["started"] == 240
    assert report["lost"] == 0, report["lost_examples"]
    assert report["duplicated"] == 0, report["duplicated_examples"]
    broken = {k: v for k, v in report["invariants"].items() if not v}
    assert not broken, json.dumps(
        {
            k: report.get(k)
            for k in (
                "dlq",
                "outbox_and_lag_at_end",
                "rebuild",
                "periodic_checks",
                "capped_agreement",
                "capacity_probe",
                "settlements",
                "faults",
            )
        },
        default=str,
    )[:4000]
    assert report["dlq"]["dead_letters"] >= report["dlq"]["expected_dead_letters"] > 0
    assert report["ok"]
    # Nothing left behind: every process stopped, every port it listened on closed.
    assert report["left_running"] == []
    assert not any(procs.port_open(port) for port in report["ports"])


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_an_interrupted_run_leaves_nothing_behind() -> None:
    """Ctrl-C (SIGINT) in the middle of the load: every broker, PostgreSQL and replica is stopped."""
    import re
    import signal
    import subprocess
    import sys
    import time

    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "socialrx_harness.chaos",
            "--n",
            "300",
            "--rate",
            "2",
            "--per-kind",
            "1",
            "--records",
            "50",
            "--out",
            "/dev/null",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ports: list[int] = []
    try:
        for line in run.stdout:
            if line.startswith("starting"):
                ports += [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line)]
                if "replicas" in line:
                    ports += [int(p) for p in line.split("ports ")[1].split(" ")[0].split(",")]
            if line.startswith("load:"):
                break
        time.sleep(5)
        run.send_signal(signal.SIGINT)
        output = run.communicate(timeout=300)[0]
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, output[-2000:]
    assert "interrupted; everything started was stopped" in output
    assert len(ports) == 3 + 1 + 8, ports
    assert not [port for port in ports if procs.port_open(port)]


def test_a_fault_has_recovered_when_the_lag_is_back_to_where_it_was_not_below_the_loads_own() -> None:
    monitor = chaos.Monitor.__new__(chaos.Monitor)
    monitor.lag_ok, monitor.ready = 36, {"outcomes#0": True, "outcomes#1": True}
    monitor.lag = 900
    assert not monitor.healthy()  # the load alone keeps 900 records in flight ...
    assert monitor.healthy(lag_before=1200)  # ... and the fault's backlog is worked off
    assert not monitor.healthy(lag_before=500)
    monitor.ready["outcomes#1"] = False
    assert not monitor.healthy(lag_before=1200)  # a replica still away is not recovered


def test_a_fault_is_judged_from_the_last_fault_of_its_storm_but_never_past_the_cap() -> None:
    kill = Fault("kill9", 572.0, "funding-ledger", 1, injected_at=1000.0, ended_at=1002.0)
    assert recovery_deadline(kill, [kill]) == 1002.0 + RECOVER_AFTER_LAST_S  # alone: from its own end
    earlier = Fault("broker_restart", 562.0, broker=2, injected_at=990.0, ended_at=1001.0)
    assert recovery_deadline(kill, [earlier, kill]) == 1002.0 + RECOVER_AFTER_LAST_S  # only what came after
    both = Fault("kill9", 614.0, "funding-ledger", 0, injected_at=1042.0, ended_at=1045.0)
    restart = Fault("postgres_restart", 721.0, injected_at=1149.0, ended_at=1152.0)
    storm = [earlier, kill, both, restart]
    assert recovery_deadline(kill, storm) == 1152.0 + RECOVER_AFTER_LAST_S  # the other ledger replica, then PG
    assert recovery_deadline(both, storm) == 1152.0 + RECOVER_AFTER_LAST_S
    late = Fault("poison", 900.0, count=1000, injected_at=1500.0, ended_at=1510.0)
    assert recovery_deadline(kill, [*storm, late]) == 1000.0 + STORM_CAP_S  # a storm that keeps coming: the cap
    pending = Fault("sigterm", 950.0, "outcomes", 0)  # scheduled, not struck yet: no part of it
    assert recovery_deadline(kill, [*storm, pending]) == 1152.0 + RECOVER_AFTER_LAST_S


async def test_a_lag_reading_without_a_groups_offsets_keeps_the_last_ones_seen() -> None:
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    monitor = chaos.Monitor.__new__(chaos.Monitor)
    monitor.stack = chaos.Stack.__new__(chaos.Stack)
    monitor.stack.group_prefix = "chaos"
    partitions = [TopicPartition(t, p) for t in chaos.CONSUMERS for p in range(3)]
    end = dict.fromkeys(partitions, 1000)
    answers: list[dict] = [dict.fromkeys(partitions, OffsetAndMetadata(990, "")), {}]  # then a coordinator moving

    class Admin:
        async def list_consumer_group_offsets(self, group: str) -> dict:
            return answers[0]

    class Consumer:
        async def end_offsets(self, asked: list) -> dict:
            return end

    async def clients() -> tuple:
        return Admin(), Consumer()

    monitor._clients = clients
    first = await monitor.lag_now()
    assert all(lag == 10 * sum(1 for tp in partitions if s in chaos.CONSUMERS[tp.topic]) for s, lag in first.items())
    answers.pop(0)
    assert await monitor.lag_now() == first  # not end - 0 for every partition


async def test_a_slow_lag_reading_keeps_the_monitors_kafka_clients_until_it_fails_three_times() -> None:
    monitor = chaos.Monitor.__new__(chaos.Monitor)
    monitor.stack = chaos.Stack.__new__(chaos.Stack)
    monitor.stack.replicas = {}
    monitor.lag, monitor.max_lag, monitor.lag_by_group = 5, 5, {}
    answers = [TimeoutError(), TimeoutError(), {"outcomes": 7}, TimeoutError(), TimeoutError(), TimeoutError()]
    closed = []

    async def lag_now() -> dict[str, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close() -> None:
        closed.append(True)

    monitor.lag_now, monitor.close = lag_now, close
    await monitor.round()
    await monitor.round()
    assert monitor.lag is None and closed == []  # slow twice: unknown, clients kept
    await monitor.round()
    assert monitor.lag == 7 and closed == []
    for _ in range(3):
        await monitor.round()
    assert monitor.lag is None and closed == [True]  # three failures in a row: new clients
