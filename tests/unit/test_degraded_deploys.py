"""Deploys on a degraded cluster, decided without a lab (issue 11, item 6).

The etcd restart and rejoin and Debian's cluster drop are operations whose
fixtures (tests/operations/etcd.*, postgres.debian_cluster_absent) run them on a
fake host that raises on any fact not given; the Redis decisions are in
test_redis_deploy.py. This file holds what sits outside an operation.
"""

import pytest

from seawall import inventory
from seawall.components import etcd, pgroute
from seawall.components.templates import render
from tests.unit.test_postgres_drill import pgroute_context


def test_an_empty_member_rejoins_a_running_cluster_as_existing() -> None:
    assert etcd.initial_cluster_state(has_data=False, rejoin=True, current=None) == "existing"


def test_an_empty_member_of_a_cluster_not_started_yet_starts_it() -> None:
    assert etcd.initial_cluster_state(has_data=False, rejoin=False, current=None) == "new"


@pytest.mark.parametrize("state", ["new", "existing"])
def test_a_member_with_data_keeps_its_file_so_a_redeploy_changes_nothing(state: str) -> None:
    current = [f'ETCD_INITIAL_CLUSTER_STATE="{state}"']
    assert etcd.initial_cluster_state(has_data=True, rejoin=False, current=current) == state


def test_haproxy_loads_the_server_states_saved_before_a_reload(lab: inventory.Topology) -> None:
    context = pgroute_context(lab)
    cfg = render(pgroute.CONCERN, pgroute.HAPROXY_CFG, context)
    assert f"server-state-file {pgroute.HAPROXY_STATE}" in cfg
    assert "load-server-state-from-file global" in cfg
    dropin = render(pgroute.CONCERN, pgroute.HAPROXY_DROPIN, context).splitlines()
    reloads = [line for line in dropin if line.startswith("ExecReload=")]
    # Debian's reload is replaced, in order: check, save the states, then SIGUSR2.
    assert reloads[0] == "ExecReload="
    assert "-c -q" in reloads[1]
    assert reloads[2].startswith("ExecReload=-/bin/sh -c")
    assert "show servers state" in reloads[2] and pgroute.HAPROXY_STATE in reloads[2]
    assert reloads[3] == "ExecReload=/bin/kill -USR2 $MAINPID"
