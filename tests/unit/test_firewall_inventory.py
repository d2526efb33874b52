"""Firewall settings that would open or close a port by accident are inventory errors.

Each malformed inventory is refused by the inventory file's own first line (what
pyinfra runs before it connects anywhere): exit 2, one line naming the file to
edit, the host and the key.
"""

from pathlib import Path
from typing import Any

import pytest

from seawall import defaults, inventory, schema
from tests.unit.test_inventory_rules import write_site

RULES = defaults.FIREWALL["firewall_rules"]


def without(key: str) -> dict[str, list[str]]:
    return {k: v for k, v in RULES.items() if k != key}


CASES: list[tuple[str, str, str]] = [
    (
        "port-key-with-no-rule",
        f"firewall_rules = {without('redis_port')!r}\n",
        "firewall_rules.redis_port: no rule: list the roles that may reach it",
    ),
    (
        "rule-naming-an-unknown-role",
        f"firewall_rules = { {**RULES, 'redis_port': ['app', 'gatway']}!r}\n",
        "firewall_rules.redis_port: 'gatway' is neither a role "
        "(redis, sentinel, etcd, postgres, app, gateway, ops) nor admin nor any: "
        "did you mean 'gateway'?",
    ),
    (
        "rule-for-an-unknown-port-key",
        f"firewall_rules = { {**RULES, 'redis_prot': ['app']}!r}\n",
        "firewall_rules.redis_prot: unknown key 'redis_prot': did you mean 'redis_port'?",
    ),
    (
        "bad-admin-cidr",
        "firewall_admin_sources = ['10.77.0.300/24']\n",
        "firewall_admin_sources[0]: must be an address or network (CIDR)",
    ),
    (
        "admin-source-not-a-string",
        "firewall_admin_sources = ['10.77.0.1', 167772161]\n",
        "firewall_admin_sources[1]: must be an address or network (CIDR) (got 167772161)",
    ),
    (
        "rules-not-lists",
        f"firewall_rules = { {**RULES, 'ssh': 'ops'}!r}\n",
        "firewall_rules.ssh: Input should be a valid list",
    ),
    (
        "rollback-too-short",
        "firewall_rollback_seconds = 5\n",
        "firewall_rollback_seconds: Input should be greater than or equal to 30",
    ),
]


@pytest.mark.parametrize(
    ("group_data", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_firewall_setting_is_refused_before_any_connection(
    group_data: str,
    expect: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_site(tmp_path, group_data=group_data)
    with pytest.raises(SystemExit) as raised:
        inventory.check_before_connect(str(path))
    assert raised.value.code == 2
    stderr = capsys.readouterr().err
    (line,) = [line for line in stderr.splitlines() if expect in line]
    # The group data file that set it, and a host it applies to.
    assert "group_data/all.py: data-1: " in line


def test_the_defaults_and_the_lab_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert inventory.validate(inventory.load(write_site(tmp_path))) == []
    assert list(schema._firewall_relations(RULES)) == []


def test_every_firewall_key_says_who_serves_it() -> None:
    # Read at run time: a port key another concern adds lands here too.
    keys = schema.firewall_keys()
    assert set(defaults.PORT_KEYS) <= set(keys)
    assert set(keys) == set(defaults.FIREWALL_SERVED_BY) == set(RULES)
    roles = set(defaults.ROLES)
    for key, served in defaults.FIREWALL_SERVED_BY.items():
        assert served is None or set(served) <= roles, key


def test_a_new_port_key_needs_a_rule_and_its_serving_roles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(defaults, "PORT_KEYS", (*defaults.PORT_KEYS, "grafana_port"))
    assert list(schema._firewall_relations(RULES)) == [
        (
            "firewall_rules.grafana_port",
            "no rule: list the roles that may reach it ([] for none)",
        )
    ]
    with_rule: dict[str, Any] = {**RULES, "grafana_port": ["admin"]}
    assert list(schema._firewall_relations(with_rule)) == [
        ("firewall_rules.grafana_port", "no serving roles in defaults.FIREWALL_SERVED_BY")
    ]
