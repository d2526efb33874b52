"""seawall's pyinfra facts against recorded output, in pyinfra's fixture layout.

Each tests/facts/<module>.<Fact>/<case>.json gives the fact's arguments, the
output a host printed and the value the fact must return (and, where given,
the exact command it must run).
"""

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import FactBase

import seawall.facts

FIXTURES = Path(__file__).resolve().parents[1] / "facts"
CASES = sorted(FIXTURES.glob("*/*.json"))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_fact(case: Path) -> None:
    module, fact_name = case.parent.name.rsplit(".", 1)
    fact = getattr(importlib.import_module(f"seawall.facts.{module}"), fact_name)()
    spec = json.loads(case.read_text())
    if "command" in spec:
        assert fact.command(**spec.get("kwargs", {})) == spec["command"]
    # As pyinfra does (api/facts.py): a command that prints nothing gives the
    # fact's default(), and process() is never called.
    value = fact.process(spec["output"]) if spec["output"] else fact.default()
    assert _jsonable(value) == spec["fact"]


def facts() -> set[str]:
    """Return ``<module>.<Fact>`` for every fact of the seawall.facts package."""
    found = set()
    for info in pkgutil.iter_modules(seawall.facts.__path__):
        module = importlib.import_module(f"seawall.facts.{info.name}")
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, FactBase)
                and value.__module__ == module.__name__
            ):
                found.add(f"{info.name}.{name}")
    return found


def test_every_fact_has_fixtures() -> None:
    found = facts()
    assert found, "no fact found in seawall.facts"
    assert found <= {case.parent.name for case in CASES}
