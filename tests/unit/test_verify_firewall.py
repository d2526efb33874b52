"""seawall verify's firewall checks: the boot unit, the live table, a rollback left armed.

Two kinds of cases. The probes run for real (``unshare -n``: the controller's own
ruleset is never touched) against a table loaded from the lab's rendered
ruleset, then changed as a host can be: deleted, a rule added or removed, an
older ruleset. And the judge alone, on captured outputs: the ``FirewallState``
fixtures (tests/facts/firewall.FirewallState), an ``nft list table`` of app-1's
ruleset captured from nft 1.0.6 (verify_firewall/app-1.list), and
``systemctl show`` of the unit as systemd 252 prints it.
"""

import json
import subprocess
from pathlib import Path

import pytest

from seawall.components import firewall as component
from seawall.facts.firewall import FirewallState
from seawall.inventory import Topology
from seawall.operations import firewall as firewall_ops
from seawall.verify import (
    CHECKS,
    Check,
    Probe,
    firewall,
    host_checks,
    host_script,
    parse_probes,
    probe_script,
)

HERE = Path(__file__).parent
FACTS = HERE.parent / "facts" / "firewall.FirewallState"
LISTING = (HERE / "verify_firewall" / "app-1.list").read_text()
# The comment in the captured listing: the ruleset it was loaded from.
CAPTURED = "seawall 1a4b0353e3714d67"


def unit(
    active: str, sub: str, result: str = "success", status: str = "0", enabled: str = "enabled"
) -> Probe:
    return Probe(
        0,
        f"Id={component.UNIT}\nLoadState=loaded\nActiveState={active}\nSubState={sub}\n"
        f"UnitFileState={enabled}\nResult={result}\nExecMainStatus={status}",
    )


UNIT_ACTIVE = unit("active", "exited")


def fact_output(case: str) -> str:
    """The FirewallState command's output in one of its fixtures."""
    return "\n".join(json.loads((FACTS / f"{case}.json").read_text())["output"])


def checks(probes: dict[str, Probe], want: firewall.Intended) -> dict[str, Check]:
    return {check.name: check for check in firewall.judge(want, probes)}


# --- the probes, run for real in a namespace --------------------------------------------


@pytest.fixture
def boot_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The boot file and the saved table, here instead of under /etc and /var/lib."""
    path = tmp_path / "firewall.nft"
    monkeypatch.setattr(firewall, "RULESET", str(path))
    monkeypatch.setattr(firewall, "SAVED", str(tmp_path / "rollback.nft"))
    return path


def run(lab: Topology, name: str, live: str, boot: Path, change: str = ":") -> dict[str, Probe]:
    """Load ``live`` as the host's table, apply ``change``, and run the firewall probes."""
    loaded = boot.with_name("live.nft")
    loaded.write_text(live)
    script = probe_script(firewall.probe_commands(lab, lab.host(name)))
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"nft -f {loaded} && {change}\n{script}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    probes = parse_probes(result.stdout)
    assert set(probes) == {
        "firewall_state",
        "firewall_unit",
        "firewall_live",
        "firewall_intended",
        "firewall_boot_file",
        "firewall_saved",
    }, result.stdout + result.stderr
    # No systemd here: the unit's answer is a captured one.
    return probes | {"firewall_unit": UNIT_ACTIVE}


def test_a_host_running_its_rendered_ruleset_holds(lab: Topology, boot_file: Path) -> None:
    want = firewall.intended(lab, lab.host("app-1"))
    boot_file.write_text(want.content)
    found = checks(run(lab, "app-1", want.content, boot_file), want)
    assert list(found) == list(firewall.CHECKS)
    assert all(check.ok for check in found.values()), found
    assert (
        found["firewall table"].detail == f"inet seawall is the intended ruleset ({want.comment})"
    )


def test_a_deleted_table_is_named_plainly(lab: Topology, boot_file: Path) -> None:
    want = firewall.intended(lab, lab.host("ops-1"))
    boot_file.write_text(want.content)
    probes = run(lab, "ops-1", want.content, boot_file, "nft delete table inet seawall")
    found = checks(probes, want)
    assert found["firewall table"] == Check("firewall table", False, "no table inet seawall loaded")
    assert [name for name, check in found.items() if not check.ok] == ["firewall table"]


def test_a_rule_added_or_removed_by_hand_is_named_though_the_comment_matches(
    lab: Topology, boot_file: Path
) -> None:
    want = firewall.intended(lab, lab.host("gw-1"))
    boot_file.write_text(want.content)
    added = run(
        lab,
        "gw-1",
        want.content,
        boot_file,
        "nft add rule inet seawall input tcp dport 9999 accept",
    )
    table = checks(added, want)["firewall table"]
    assert not table.ok
    assert table.detail == (
        f"inet seawall ({want.comment}) differs: more in the kernel: `tcp dport 9999 accept`"
    )
    # The first rule of the chain, by its handle, gone.
    removed = run(
        lab,
        "gw-1",
        want.content,
        boot_file,
        "nft delete rule inet seawall input handle $(nft -a list chain inet seawall input"
        " | sed -n 's/^\\t\\tct state established.* handle //p')",
    )
    table = checks(removed, want)["firewall table"]
    assert (
        table.detail
        == f"inet seawall ({want.comment}) differs: missing: `ct state established,related accept`"
    )


def test_an_older_ruleset_and_boot_file_are_not_the_intended_one(
    lab: Topology, boot_file: Path
) -> None:
    host = lab.host("data-1")
    older, older_comment = component.ruleset(
        host.name, host.groups, {**host.data, "firewall_admin_sources": ["192.0.2.7"]}, list(lab)
    )
    want = firewall.intended(lab, host)
    boot_file.write_text(older)
    found = checks(run(lab, "data-1", older, boot_file), want)
    assert found["firewall table"].detail == (
        f"table inet seawall is another ruleset ({older_comment}), not {want.comment}"
    )
    assert not found["firewall boot file"].ok
    assert "the next boot loads another" in found["firewall boot file"].detail
    boot_file.unlink()
    missing = checks(run(lab, "data-1", want.content, boot_file), want)["firewall boot file"]
    assert not missing.ok and "No such file or directory" in missing.detail


def test_the_probes_ask_for_the_component_s_unit_and_the_fact_s_state(lab: Topology) -> None:
    for host in lab:
        commands = firewall.probe_commands(lab, host)
        assert commands["firewall_state"] == FirewallState().command()
        assert commands["firewall_unit"].endswith(f" {component.UNIT}")
        assert commands["firewall_boot_file"] == f"sha256sum {component.RULESET}"
        assert firewall_ops.SAVED in commands["firewall_saved"]
        # Every host: the firewall deploy runs on all of them.
        assert all(command in host_script(lab, host) for command in commands.values())


# --- the judge, on captured outputs -------------------------------------------------


INTENDED = firewall.Intended("# the rendered ruleset\n", CAPTURED)


def captured(**changes: Probe) -> dict[str, Probe]:
    probes = {
        "firewall_state": Probe(0, fact_output("loaded").replace("3f2a9c0d1e2b4a5c", CAPTURED[8:])),
        "firewall_unit": UNIT_ACTIVE,
        "firewall_live": Probe(0, LISTING.strip()),
        "firewall_intended": Probe(0, LISTING.strip()),
        "firewall_boot_file": Probe(0, f"{INTENDED.sha256}  {component.RULESET}"),
        "firewall_saved": Probe(1, "1796000000\nstat: cannot statx: No such file or directory"),
    }
    return probes | changes


def test_the_captured_healthy_host_holds() -> None:
    found = checks(captured(), INTENDED)
    assert all(check.ok for check in found.values()), found
    assert found["firewall unit"].detail == f"{component.UNIT} active (exited), enabled"
    assert found["firewall rollback"].detail == "none armed"


@pytest.mark.parametrize(
    ("probe", "ok", "detail"),
    [
        # The ops-1 boot: the namespace set-up failed (226/NAMESPACE), no table loaded.
        (
            unit("failed", "failed", "exit-code", "226"),
            False,
            "failed (failed), enabled; its last run failed (exit-code, status 226)",
        ),
        # Enabled by the first deploy, which loaded the table itself: no boot since.
        (
            unit("inactive", "dead"),
            True,
            "inactive (dead), enabled, idle (the table is checked on its own)",
        ),
        (unit("active", "exited", enabled="disabled"), False, "the next boot loads no table"),
        (
            Probe(0, f"Id={component.UNIT}\nLoadState=not-found\nActiveState=inactive"),
            False,
            "not-found",
        ),
    ],
)
def test_the_unit_must_be_enabled_and_its_last_run_not_failed(
    probe: Probe, ok: bool, detail: str
) -> None:
    check = checks(captured(firewall_unit=probe), INTENDED)["firewall unit"]
    assert (check.ok, check.detail.endswith(detail)) == (ok, True), check


def test_a_host_without_the_table_fails_whatever_else_it_says() -> None:
    probes = captured(
        firewall_state=Probe(0, fact_output("no_table")),
        firewall_live=Probe(1, "Error: No such file or directory\nlist table inet seawall"),
    )
    found = checks(probes, INTENDED)
    assert found["firewall table"].detail == "no table inet seawall loaded"
    assert not found["firewall table"].ok


def test_a_table_without_the_comment_is_not_the_intended_ruleset() -> None:
    probes = captured(firewall_state=Probe(0, fact_output("table_without_comment")))
    table = checks(probes, INTENDED)["firewall table"]
    assert table.detail == f"table inet seawall is another ruleset (no comment), not {CAPTURED}"


def test_a_ruleset_that_does_not_load_in_the_scratch_namespace_is_not_a_pass() -> None:
    probes = captured(
        firewall_intended=Probe(1, "unshare: unshare failed: Operation not permitted")
    )
    table = checks(probes, INTENDED)["firewall table"]
    assert not table.ok
    assert table.detail.endswith("(unshare: unshare failed: Operation not permitted)")


def test_rules_in_another_order_are_a_difference() -> None:
    lines = LISTING.strip().splitlines()
    swapped = lines[:4] + [lines[5], lines[4]] + lines[6:]
    table = checks(captured(firewall_live=Probe(0, "\n".join(swapped))), INTENDED)["firewall table"]
    assert not table.ok and table.detail.endswith("the same lines in another order")


def test_many_differences_are_counted_past_the_first_few() -> None:
    # Every accept of the chain a drop: 8 rules each way.
    live = LISTING.strip().replace(" accept\n", " drop\n")
    table = checks(captured(firewall_live=Probe(0, live)), INTENDED)["firewall table"]
    more, missing = table.detail.split("; ")
    assert more.startswith("inet seawall (seawall 1a4b0353e3714d67) differs: more in the kernel: ")
    assert more.endswith(
        ', `iifname "lo" drop`, `icmp type { destination-unreachable, '
        "echo-request, time-exceeded, parameter-problem } drop` and 5 more"
    )
    assert missing.startswith("missing: `ct state established,related accept`, ")
    assert missing.endswith(" and 5 more")


def test_an_armed_rollback_fails_saying_how_long_ago_and_what_it_does() -> None:
    probes = captured(
        firewall_state=Probe(
            0, fact_output("rollback_pending").replace("3f2a9c0d1e2b4a5c", CAPTURED[8:])
        ),
        firewall_saved=Probe(0, "1796000000\n1795999988"),
    )
    found = checks(probes, INTENDED)
    rollback = found["firewall rollback"]
    assert not rollback.ok
    assert rollback.detail.startswith("seawall-firewall-rollback.timer armed 12 s ago: ")
    assert f"({firewall_ops.SAVED})" in rollback.detail
    assert "run deploys/firewall.py" in rollback.detail
    assert found["firewall table"].ok


def test_the_firewall_checks_follow_the_common_ones_on_every_host(lab: Topology) -> None:
    for host in lab:
        names = [c.name for c in host_checks(lab, host, {}, Probe(0, "seawall"), None)]
        assert names[: len(CHECKS) + len(firewall.CHECKS)] == [*CHECKS, *firewall.CHECKS]
