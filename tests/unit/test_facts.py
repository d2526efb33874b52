"""seawall's pyinfra facts against recorded output, in pyinfra's fixture layout.

Each tests/facts/<module>.<Fact>/<case>.json gives the fact's arguments, the
output a host printed and the value the fact must return (and, where given,
the exact command it must run).
"""

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

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
        assert fact.command(**spec["kwargs"]) == spec["command"]
    assert _jsonable(fact.process(spec["output"])) == spec["fact"]


def test_every_fact_has_fixtures() -> None:
    from pyinfra.api import FactBase

    import seawall.facts.redis as redis_facts

    facts = {
        f"redis.{name}"
        for name, value in vars(redis_facts).items()
        if isinstance(value, type) and issubclass(value, FactBase) and value is not FactBase
    }
    assert facts <= {case.parent.name for case in CASES}
