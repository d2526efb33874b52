"""bench/scale.py's pure pieces: the scaled copy of the lab inventory (names, addresses,
groups, nothing else changed), the addresses other containers claim, the sizes it accepts,
the ratios and the report, and its refusals before it touches anything. The bench itself
runs against the lab (the lead runs it)."""

import dataclasses
import ipaddress
import sys
from pathlib import Path
from types import ModuleType

import pytest

from seawall import inventory, netguard
from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.lab import hosts
from seawall.lab.config import lab_config
from tests.unit.benches import load_bench

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventories" / "lab.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("scale")


@pytest.fixture(scope="module")
def lab() -> Topology:
    return inventory.load(LAB)


def _scaled(bench: ModuleType, lab: Topology, tree: Path, count: int, claims=None) -> Topology:
    bench.write_tree(tree, lab, bench.extra_hosts(lab, count, claims))
    return bench.load_tree(tree)


def _address(host: inventory.Host) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(host.address)


def test_no_extra_hosts_give_the_lab_itself(bench: ModuleType, lab: Topology, tmp_path: Path):
    scaled = _scaled(bench, lab, tmp_path, 0)
    assert [h.name for h in scaled] == [h.name for h in lab]
    for mine, theirs in zip(scaled, lab, strict=True):
        assert (mine.groups, mine.address) == (theirs.groups, theirs.address)
        assert mine.data == theirs.data  # every value read from the lab inventory
    assert scaled.listed == lab.listed


@pytest.mark.parametrize("count", [7, 14])
def test_added_app_hosts_are_on_the_lab_network_after_its_own_addresses(
    bench: ModuleType, lab: Topology, tmp_path: Path, count: int
) -> None:
    scaled = _scaled(bench, lab, tmp_path, count)
    lab_names = {h.name for h in lab}
    added = [h for h in scaled if h.name not in lab_names]
    assert [h.name for h in added] == [f"app-{n}" for n in range(3, 3 + count)]
    network = netguard.lab_network(scaled)  # raises for a host off the lab network
    bridge = ipaddress.IPv4Address(str(lab.value("lab_bridge_address")))
    last = max([bridge, *(_address(h) for h in lab)])
    addresses = [_address(h) for h in added]
    assert all(a in network and last < a < network.broadcast_address for a in addresses)
    assert addresses == sorted(addresses)
    assert len({h.address for h in scaled}) == len(lab.hosts) + count  # unique
    # Each is reached at its own address, as the lab's hosts are.
    assert all(h.data["ssh_hostname"] == h.address for h in added)
    # Groups: the copied app host's, every other group exactly the lab's.
    assert all(h.groups == lab.host("app-2").groups for h in added)
    assert [h.name for h in scaled.group("app")] == ["app-1", "app-2", *(h.name for h in added)]
    for group, members in lab.listed.items():
        if group not in ("all", "app"):
            assert scaled.listed[group] == members
    # The lab's own hosts are unchanged; the whole passes seawall's checks.
    for host in lab:
        assert scaled.host(host.name).data == host.data
    assert inventory.validate(scaled, check_secrets=False) == []


def test_the_copy_lives_outside_the_checkout_and_links_the_rest(
    bench: ModuleType, lab: Topology, tmp_path: Path
) -> None:
    path = bench.write_tree(tmp_path, lab, bench.extra_hosts(lab, 1))
    assert path == tmp_path / "inventories" / "lab.py"
    assert not path.is_symlink() and "app-3" in path.read_text()
    assert (tmp_path / "deploys").resolve() == REPO / "deploys"
    assert (tmp_path / "config.py").resolve() == REPO / "config.py"
    assert (tmp_path / "inventories" / "group_data").resolve() == REPO / "inventories/group_data"
    # A second size rewrites the file in the same tree.
    bench.write_tree(tmp_path, lab, bench.extra_hosts(lab, 2))
    assert "app-4" in path.read_text()


def test_addresses_other_containers_claim_are_skipped(
    bench: ModuleType, lab: Topology, tmp_path: Path
) -> None:
    first = str(_scaled(bench, lab, tmp_path / "free", 1).host("app-3").address)
    prefix = str(lab.value("lab_container_prefix"))
    config = lab_config(_scaled(bench, lab, tmp_path / "a", 1))
    # Another container (another lab, say) sits on the first free address.
    lxc = tmp_path / "lxc"
    (lxc / "other").mkdir(parents=True)
    (lxc / "other" / "config").write_text(hosts.lxc_config(config, config.host("app-3")))
    claims = bench.lxc_claims(lxc)
    assert claims == {first: "other"}
    moved = _scaled(bench, lab, tmp_path / "b", 1, claims).host("app-3")
    assert moved.address == str(ipaddress.IPv4Address(first) + 1)
    # A container of the new host's own name (left by an interrupted run) is its own.
    own = _scaled(bench, lab, tmp_path / "c", 1, {first: prefix + "app-3"}).host("app-3")
    assert own.address == first


def test_no_lxc_directory_claims_nothing(bench: ModuleType, tmp_path: Path) -> None:
    assert bench.lxc_claims(tmp_path / "absent") == {}


def test_a_full_lab_network_is_refused(bench: ModuleType, lab: Topology) -> None:
    network = netguard.lab_network(lab)
    with pytest.raises(SeawallError, match=f"the lab network {network} has no free address"):
        bench.extra_hosts(lab, network.num_addresses)


def test_sizes_are_sorted_and_none_is_smaller_than_the_lab(bench: ModuleType) -> None:
    assert bench.parse_sizes("7,14,21", 7) == [7, 14, 21]
    assert bench.parse_sizes("21, 7,14,7", 7) == [7, 14, 21]
    with pytest.raises(SeawallError, match="5 is smaller than the lab's 7 hosts"):
        bench.parse_sizes("5,7,14", 7)
    for bad in ("", "seven", "7,,x"):
        with pytest.raises(SeawallError, match="give host counts"):
            bench.parse_sizes(bad, 7)


def test_ratios_are_to_the_smallest_size(bench: ModuleType) -> None:
    assert bench.ratios({21: 30.0, 7: 20.0, 14: 25.0}) == {14: 1.25, 21: 1.5}
    assert bench.ratios({7: 20.0}) == {}
    assert bench.verdict(1.5) == "met"
    assert bench.verdict(1.51) == "NOT met"


def test_the_report_has_a_row_per_size_and_the_ratios(bench: ModuleType) -> None:
    results = {
        7: bench.SizeResult(
            7, 2, 343, [20.0, 22.0], [18.0, 19.0], [4.0, 5.0], [3.0, 3.5], [2.5, 6.0]
        ),
        14: bench.SizeResult(14, 9, 600, [25.0, 27.0], [30.0, 32.0]),
        21: bench.SizeResult(21, 16, 860, [29.0, 31.0], [40.0, 44.0]),
    }
    lines = bench.report_lines(results, 2, "7,14,21")
    text = "\n".join(lines)
    assert (
        "| 7 | 2 | 343 | 21.00 | 20.00 | 22.00 | 18.50 | 18.00 | 19.00 | 4.5 / 3.2 | 2.5-6.0 |"
        in lines
    )
    assert "| 21 | 16 | 860 | 30.00 | 29.00 | 31.00 | 42.00 | 40.00 | 44.00 | - | - |" in lines
    # 26/21 and 31/18.5; 30/21 and 42/18.5.
    assert "| time(14) / time(7) | 1.24 | 1.68 | met / NOT met |" in lines
    assert "| time(21) / time(7) | 1.43 | 2.27 | met / NOT met |" in lines
    assert "3x the hosts in <= 1.5x the time" in text


def test_a_size_the_machine_could_not_run_is_reported_with_why_and_left_out_of_the_ratios(
    bench: ModuleType,
) -> None:
    results = {
        7: bench.SizeResult(7, 2, 343, [20.0], [18.0]),
        14: bench.SizeResult(14, 9, 600, [30.0], [27.0]),
        21: bench.SizeResult(21, 16, 0, failure="site deploy failed: [data-1] no running leader"),
    }
    lines = bench.report_lines(results, 1, "7,14,21")
    assert "| 21 | 16 | - | not measured: site deploy failed: [data-1] no running leader |" in lines
    assert "| time(14) / time(7) | 1.50 | 1.50 | met / met |" in lines
    assert not any(line.startswith("| time(21)") for line in lines)


def test_pinning_names_every_lab_host_by_its_container_and_says_so_in_the_report(
    bench: ModuleType, lab: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(bench, "run", calls.append)
    bench.pin_hosts(lab, "1")
    assert calls == [
        ["lxc-cgroup", "-n", host.container, "cpuset.cpus", "1"] for host in lab_config(lab).hosts
    ]
    assert len(calls) == len(lab.hosts)
    results = {7: bench.SizeResult(7, 2, 343, [20.0], [18.0])}
    pinned = "\n".join(bench.report_lines(results, 1, "7", pinned=True))
    assert "--rounds 1 --pin`" in pinned
    assert "the controller (pyinfra) alone on CPU 0, every lab host on CPU 1" in pinned
    assert "--pin" not in "\n".join(bench.report_lines(results, 1, "7"))


def test_a_size_smaller_than_the_lab_is_refused_before_the_lab_is_touched(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "require_lab_bridge", lambda _: pytest.fail("reached the lab"))
    monkeypatch.setattr(bench, "exclusive_lock", lambda *_, **__: pytest.fail("took a lock"))
    monkeypatch.chdir(REPO)  # main() moves to the checkout: undone after the test
    monkeypatch.setattr(sys, "argv", ["scale.py", "--sizes", "5,14"])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == 2
    assert "5 is smaller than the lab's 7 hosts" in capsys.readouterr().err


def test_it_refuses_to_run_without_the_lab_bridge(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lab is down: its bridge is absent. Nothing may be created or deployed.
    monkeypatch.setattr(netguard, "bridge_exists", lambda _: False)
    monkeypatch.setattr(bench, "exclusive_lock", lambda *_, **__: pytest.fail("took a lock"))
    monkeypatch.setattr(bench, "timed_site_deploy", lambda *_: pytest.fail("deployed"))
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["scale.py"])
    with pytest.raises(SeawallError, match=r"lab bridge swlab0 does not exist"):
        bench.main()


def test_a_copied_host_whose_data_holds_its_address_inside_a_value_is_refused(
    bench: ModuleType, lab: Topology
) -> None:
    template = lab.host("app-2")

    def with_value(value: object) -> Topology:
        data = {**template.data, "peers": value}
        host = dataclasses.replace(
            template, data=data, origins={**template.origins, "peers": str(lab.path)}
        )
        others = tuple(host if h.name == "app-2" else h for h in lab)
        return dataclasses.replace(lab, hosts=others)

    with pytest.raises(SeawallError, match="app-2's data holds its address 10.77.0.22 inside"):
        bench.extra_hosts(with_value({"web": ["http://10.77.0.22:8080/"]}), 1)
    # Another address that merely starts with the same digits is not it.
    copied = bench.extra_hosts(with_value(["10.77.0.221", "110.77.0.22"]), 1)
    assert copied[0][1]["peers"] == ["10.77.0.221", "110.77.0.22"]


def _in_state_dir(lab: Topology, state_dir: Path) -> Topology:
    """The lab inventory with its state directory moved (no test writes the real one)."""
    moved = tuple(
        dataclasses.replace(h, data={**h.data, "lab_state_dir": str(state_dir)}) for h in lab
    )
    return dataclasses.replace(lab, hosts=moved)


def test_restore_removes_the_added_hosts_then_redeploys_the_lab_and_checks_drift(
    bench: ModuleType, lab: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    (state / "hostkeys" / "app-3").mkdir(parents=True)
    (state / "hostkeys" / "app-1").mkdir(parents=True)
    home = _in_state_dir(lab, state)
    scaled = _scaled(bench, home, tmp_path / "tree", 2)
    calls: list[str] = []

    def removed(topology: Topology, names: list[str], **kwargs: object) -> None:
        assert topology is scaled and kwargs["lock_timeout"] == bench.LOCK_WAIT_S
        calls.append(f"remove {' '.join(names)}")
        raise SeawallError("lxc-destroy failed")  # the later steps still run

    monkeypatch.setattr(bench.lifecycle, "remove", removed)
    monkeypatch.setattr(
        bench.hosts,
        "write_known_hosts",
        lambda config: calls.append(f"known_hosts {len(config.hosts)}"),
    )
    monkeypatch.setattr(bench, "timed_site_deploy", lambda tree: calls.append(f"deploy {tree}"))
    monkeypatch.setattr(bench, "drift_run", lambda tree: calls.append(f"drift {tree}"))
    with pytest.raises(SystemExit, match="remove app-3, app-4: lxc-destroy failed"):
        bench.restore(home, scaled, ["app-3", "app-4"], tmp_path / "tree", touched=True)
    assert calls == [
        "remove app-3 app-4",
        "known_hosts 7",  # the lab's own hosts only
        f"deploy {REPO}",  # the site again, with the lab inventory: gateway, firewall...
        f"drift {REPO}",
    ]
    assert not (state / "hostkeys" / "app-3").exists()
    assert (state / "hostkeys" / "app-1").exists()
    assert not (tmp_path / "tree").exists()


def test_restore_only_drops_the_tree_when_the_lab_was_not_touched(
    bench: ModuleType, lab: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "timed_site_deploy", lambda *_: pytest.fail("deployed"))
    monkeypatch.setattr(bench.hosts, "write_known_hosts", lambda *_: pytest.fail("wrote"))
    (tmp_path / "tree").mkdir()
    bench.restore(lab, None, [], tmp_path / "tree", touched=False)
    assert not (tmp_path / "tree").exists()
