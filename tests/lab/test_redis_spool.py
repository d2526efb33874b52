"""The disk buffer against the lab's real Redis: order, exactly once, and a crash mid-replay."""

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from seawall.inventory import Topology
from seawall.redis.client import redis_settings
from seawall.redis.drill import wait_healthy
from seawall.runtime.reconnect import EventPublisher, MajorityClient
from seawall.runtime.spool import DiskSpool

ROOT = Path(__file__).resolve().parents[2]


def stream_ids(client: MajorityClient, stream: str) -> list[str]:
    entries: Any = client.call(lambda conn: conn.xrange(stream))
    return [fields[b"event_id"].decode() for _, fields in entries]


def test_events_wait_behind_the_spool_and_keep_their_order(
    deployed_lab: Topology, tmp_path: Path
) -> None:
    wait_healthy(deployed_lab)
    settings = redis_settings(deployed_lab, operation_deadline=1.0)
    stream = f"seawall:test:order:{uuid.uuid4().hex[:6]}"
    # Redis "unreachable": every Sentinel asked on a closed port of its own host.
    away = replace(settings, sentinels=tuple((host, 1) for host, _ in settings.sentinels))
    spool = DiskSpool(tmp_path)
    offline = EventPublisher(MajorityClient(away), spool, publish_deadline=0.3)
    assert [offline.publish(stream, {"n": n}, event_id=f"e{n}").status for n in range(3)] == [
        "spooled"
    ] * 3
    back = MajorityClient(settings)
    online = EventPublisher(back, spool)
    # The next event goes out only after the spooled ones, in order.
    assert online.publish(stream, {"n": 3}, event_id="e3").status == "acked"
    assert stream_ids(back, stream) == ["e0", "e1", "e2", "e3"]
    assert spool.is_empty()
    back.call(lambda conn: conn.delete(stream))


def test_a_crash_mid_replay_loses_and_duplicates_nothing(
    deployed_lab: Topology, tmp_path: Path
) -> None:
    wait_healthy(deployed_lab)
    stream = f"seawall:test:replay:{uuid.uuid4().hex[:6]}"
    spool = DiskSpool(tmp_path)
    total = 1500
    for number in range(total):
        spool.append(f"r{number}", stream, {"n": number}, 1_000_000)
    spool.close()  # one process at a time: the replayer takes the spool's lock
    # A replaying process, killed with SIGKILL part-way through.
    replayer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                from seawall import inventory
                from seawall.redis.client import majority_client
                from seawall.runtime.reconnect import EventPublisher
                from seawall.runtime.spool import DiskSpool
                topology = inventory.load({str(ROOT / "inventories" / "lab.py")!r})
                spool = DiskSpool({str(tmp_path)!r})
                publisher = EventPublisher(majority_client(topology), spool)
                print("replaying", flush=True)
                while not spool.is_empty():
                    publisher.drain(budget_seconds=5)
                """
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert replayer.stdout is not None
    assert replayer.stdout.readline().strip() == "replaying"
    settings = redis_settings(deployed_lab)
    client = MajorityClient(settings)
    deadline = time.monotonic() + 60
    # Kill it once a real part, but not all, is replayed.
    while client.call(lambda conn: conn.xlen(stream)) < total // 4:
        assert time.monotonic() < deadline, "replay did not progress"
        time.sleep(0.02)
    replayer.send_signal(signal.SIGKILL)
    replayer.wait(timeout=10)
    done_before = client.call(lambda conn: conn.xlen(stream))
    assert done_before < total, "the replayer finished before it could be killed"

    again = EventPublisher(client, DiskSpool(tmp_path))
    while not again.spool.is_empty():  # type: ignore[union-attr]
        assert time.monotonic() < deadline + 60, "second replay did not finish"
        again.drain(budget_seconds=10)
    seen = Counter(stream_ids(client, stream))
    assert len(seen) == total
    assert max(seen.values()) == 1
    assert stream_ids(client, stream) == [f"r{n}" for n in range(total)]
    client.call(lambda conn: conn.delete(stream))
    client.close()
