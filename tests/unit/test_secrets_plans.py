"""No secret reaches a deploy's operations except through secret_file or a HiddenValue.

The services, Postgres and backup deploys run on fake hosts (as
test_deploy_phases records them) with every secret set to one value; that value
may only be the content of a ``secret_file`` (written through its standard
input, never printed) or inside a ``HiddenValue`` (masked in pyinfra's output).
Every other argument (names, commands, ``files.put`` contents, which
``pyinfra --diff`` prints) must not hold it.
"""

import json
from typing import Any

import pytest

from seawall import inventory
from tests.unit.test_deploy_phases import SECRET_VALUE, plans


def _holders(value: Any, path: str) -> list[str]:
    if isinstance(value, dict):
        return [h for key, item in value.items() for h in _holders(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [h for i, item in enumerate(value) for h in _holders(item, f"{path}[{i}]")]
    if isinstance(value, str) and SECRET_VALUE in value and not value.startswith("<hidden "):
        return [path]
    return []


def test_secrets_reach_only_secret_file_contents_and_hidden_values(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    recorded = plans(monkeypatch, lab)
    allowed, found = 0, []
    for case, operations in recorded.items():
        for operation in operations:
            for key, value in operation.items():
                holders = _holders(value, f"{case}: {operation.get('name')}: {key}")
                if operation["op"] == "seawall.secret_file" and key == "src" and holders:
                    allowed += 1
                    continue
                found += holders
    assert found == []
    # The secrets were there to find: Patroni's file and each service's EnvironmentFile.
    assert allowed >= 4
    assert SECRET_VALUE in json.dumps(recorded)
