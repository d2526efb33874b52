"""The pure parts of the Redis drill: +switch-master counting, the verdict, the plans, the lock."""

import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import get_args

import pytest

from seawall import defaults, inventory, schema
from seawall.errors import SeawallError
from seawall.lab import faults
from seawall.lab.config import lab_config
from seawall.redis import drill
from seawall.redis.drill import CUTS, LAGGING, SCENARIOS, DrillResult
from seawall.redis.sentinel_log import count_switches, parse_switches

REPO = Path(__file__).resolve().parents[2]

# As journalctl -o cat prints Redis 7.0's Sentinel lines.
A_TO_C = "1676:X 29 Nov 2026 21:41:27.180 # +switch-master platform 10.77.0.11 6379 10.77.0.13 6379"
C_TO_B = "1676:X 29 Nov 2026 21:41:28.300 # +switch-master platform 10.77.0.13 6379 10.77.0.12 6379"
B_TO_C = "1676:X 29 Nov 2026 21:41:29.500 # +switch-master platform 10.77.0.12 6379 10.77.0.13 6379"
NOISE = (
    "1676:X 29 Nov 2026 21:41:27.000 # +sdown master platform 10.77.0.11 6379\n"
    "1676:X 29 Nov 2026 21:41:27.100 # +odown master platform 10.77.0.11 6379 #quorum 2/2\n"
    "1676:X 29 Nov 2026 21:41:27.200 * +slave slave 10.77.0.12:6379 10.77.0.12 6379 @ platform\n"
)


def test_a_switch_is_parsed_with_its_old_and_new_master() -> None:
    [switch] = parse_switches(NOISE + A_TO_C)
    assert (switch.master_name, switch.old, switch.new) == (
        "platform",
        "10.77.0.11:6379",
        "10.77.0.13:6379",
    )


def test_one_failover_seen_by_every_sentinel_is_one_switch() -> None:
    logs = {name: NOISE + A_TO_C for name in ("data-1", "data-2", "data-3")}
    assert count_switches(logs) == 1


def test_no_switch_is_zero() -> None:
    assert count_switches({"data-1": NOISE, "data-2": "", "data-3": NOISE}) == 0


def test_the_lab_notes_storm_counts_three() -> None:
    storm = "\n".join([A_TO_C, C_TO_B, B_TO_C])
    assert count_switches({"data-1": storm, "data-2": storm, "data-3": storm}) == 3


def test_a_second_switch_seen_by_one_sentinel_only_still_counts() -> None:
    # The others were cut off and jumped straight to the final configuration.
    logs = {"data-1": A_TO_C, "data-2": A_TO_C, "data-3": A_TO_C + "\n" + C_TO_B}
    assert count_switches(logs) == 2
    # Two Sentinels each saw a different one of two switches.
    assert count_switches({"data-1": A_TO_C, "data-2": C_TO_B}) == 2


def test_the_same_pair_twice_in_one_log_counts_twice() -> None:
    back_and_forth = "\n".join([A_TO_C, C_TO_B.replace("12 6379", "11 6379"), A_TO_C])
    assert count_switches({"data-1": back_and_forth}) == 3


def test_other_master_names_are_not_counted() -> None:
    other = A_TO_C.replace("platform", "other")
    assert count_switches({"data-1": other + "\n" + A_TO_C}, master_name="platform") == 1


def result(**changes: object) -> DrillResult:
    base = DrillResult(
        scenario="master-process-kill",
        old_master="data-1",
        new_master="data-2",
        detect_s=0.9,
        new_master_s=2.0,
        outage_s=2.4,
        writes=2000,
        acked=1990,
        spooled=10,
        lost_acked=0,
        lost_spooled=0,
        duplicated=0,
        old_master_rejoined=True,
        healthy_after=True,
        outage_limit_s=3.0,
        switch_masters=1,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_clean_run_within_its_limit_is_ok() -> None:
    assert result().ok
    assert result(outage_s=3.0).ok  # the limit itself is within it


@pytest.mark.parametrize(
    "changes",
    [
        {"outage_s": 3.01},
        {"switch_masters": 2},
        {"switch_masters": None},  # the Sentinels' logs could not be read: no verdict
        {"lost_acked": 1},
        {"lost_spooled": 1},
        {"duplicated": 1},
        {"old_master_rejoined": False},
        {"healthy_after": False},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_each_broken_promise_fails_the_run(changes: dict[str, object]) -> None:
    broken = result(**changes)
    assert not broken.ok
    assert broken.to_json()["ok"] is False


def test_a_scenario_without_a_limit_is_judged_on_the_rest() -> None:
    long_cut = result(scenario="cut-heals-20s", outage_s=21.0, outage_limit_s=None)
    assert long_cut.ok
    assert not replace(long_cut, switch_masters=2).ok


def test_the_outage_limits_are_data_beside_the_sentinel_timing() -> None:
    limits = defaults.SENTINEL["sentinel_drill_outage_limits_s"]
    # Every fault that moves the master has a limit; a cut of every data host has none.
    assert set(limits) == {
        "master-process-kill",
        "master-host-crash",
        "master-isolated",
        "master-partitioned-from-peers",
        "flapping-partition",
        "second-fault-during-failover",
    }
    assert all(0 < limit <= 5.0 for name, limit in limits.items() if name != drill.SECOND_FAULT)
    # A dead chosen replica costs Sentinel 2 x failover-timeout before it tries
    # again; a replica back from a restart waits for Sentinel's next INFO (10 s).
    failover_timeout_s = defaults.SENTINEL["sentinel_failover_timeout_ms"] / 1000
    restart_s = defaults.REDIS["redis_restart_sec"]
    assert max(2 * failover_timeout_s, restart_s + 10) < limits[drill.SECOND_FAULT] <= 30
    # The schema knows exactly the drill's scenarios.
    assert set(get_args(schema.RedisDrillScenario)) == set(SCENARIOS)
    topology = inventory.load(REPO / "inventories" / "lab.py")
    assert topology.value("sentinel_drill_outage_limits_s") == limits


def test_an_unknown_scenario_in_the_limits_is_refused() -> None:
    with pytest.raises(ValueError, match="master-proces-kill"):
        schema.Sentinel.model_validate(
            {
                **defaults.SENTINEL,
                "sentinel_drill_outage_limits_s": {"master-proces-kill": 3.0},
            }
        )


def plan(scenario: str) -> list[tuple[float, str]]:
    topology = inventory.load(REPO / "inventories" / "lab.py")
    config = lab_config(topology)
    steps = drill._plan(topology, config, scenario, "data-1", "data-2", 3.0, 8.0)
    return [(at, what) for at, what, _ in steps]


def test_lagging_replica_then_cut_pauses_cuts_resumes_during_the_cut_then_heals() -> None:
    assert plan(LAGGING) == [
        (3.0, "SIGSTOP data-2's redis-server"),
        (7.0, "cut every data host"),
        (8.0, "SIGCONT data-2's redis-server"),
        (16.0, "heal"),
    ]


@pytest.mark.parametrize("scenario", list(CUTS))
def test_cut_heals_cuts_every_data_host_for_its_time(scenario: str) -> None:
    assert plan(scenario) == [(3.0, "cut every data host"), (3.0 + CUTS[scenario], "heal")]


def test_an_unknown_scenario_is_refused_before_anything_runs() -> None:
    topology = inventory.load(REPO / "inventories" / "lab.py")
    with pytest.raises(SeawallError, match="unknown scenario 'nope'"):
        drill.run_drill(topology, "nope")


HOLDER = """
import fcntl, sys
with open(sys.argv[1], "a") as handle:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("busy")
    else:
        print("free")
"""


def other_process_sees(lock: Path) -> str:
    return subprocess.run(
        [sys.executable, "-c", HOLDER, str(lock)], capture_output=True, text=True, timeout=30
    ).stdout.strip()


def test_the_drill_lock_is_the_data_fault_lock_and_reentrant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "data-faults.lock"
    monkeypatch.setattr(faults, "DATA_FAULT_LOCK", lock)
    with drill.data_fault_lock():
        assert other_process_sees(lock) == "busy"
        with drill.data_fault_lock():  # a bench around run_drill: no self-deadlock
            assert other_process_sees(lock) == "busy"
        assert other_process_sees(lock) == "busy"  # the inner exit did not let go
    assert other_process_sees(lock) == "free"


def test_flapping_partition_cuts_the_master_of_the_moment_three_times() -> None:
    steps = plan(drill.FLAPPING)
    assert [what for _, what in steps] == [
        "cut the master from its peers (1/3)",
        "heal",
        "cut the master from its peers (2/3)",
        "heal",
        "cut the master from its peers (3/3)",
        "heal",
    ]
    starts = [at for at, what in steps if what != "heal"]
    assert starts == [3.0, 3.0 + drill.FLAP_EVERY_S, 3.0 + 2 * drill.FLAP_EVERY_S]
    assert all(
        b - a == drill.FLAP_CUT_S for (a, _), (b, _) in zip(steps[::2], steps[1::2], strict=True)
    )


def test_second_fault_kills_a_replica_while_sentinel_fails_over() -> None:
    assert plan(drill.SECOND_FAULT) == [
        (3.0, "crash data-1"),
        (3.0 + drill.SECOND_FAULT_AFTER_S, "SIGKILL data-2's redis-server"),
        (11.0, "heal"),
    ]


def test_outage_scenarios_cut_every_data_host_for_their_length() -> None:
    for scenario, seconds in drill.OUTAGES.items():
        assert plan(scenario) == [(3.0, "cut every data host"), (3.0 + seconds, "heal")]


def test_a_killed_writers_tally_skips_its_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "tally"
    path.write_text(
        "acked e-1 1.0 0.001\nspooled e-2 2.0 0.002\nrefused e-3 3.0 0.001\nacked e-4 4."
    )
    tally = drill._Tally.read(str(path))
    assert tally.acked == {"e-1": 1.0}
    assert tally.spooled == {"e-2"}
    assert tally.refused == {"e-3"}


def test_more_switches_than_faults_is_a_storm() -> None:
    flapping = result(scenario=drill.FLAPPING, switch_masters=3, faults=3)
    assert not flapping.storm
    assert replace(flapping, switch_masters=4).storm


def test_the_writer_is_killed_mid_replay_however_little_it_spooled() -> None:
    rng = random.Random(7)
    for spooled in (0, 1, 3, 150, 4000, 100_000):
        for _ in range(50):
            threshold = drill.kill_threshold(spooled, rng)
            assert 1 <= threshold <= max(1, spooled // 2)
            assert threshold <= drill.KILL_WITHIN_EVENTS
