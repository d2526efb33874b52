"""Every component puts files and manages units through seawall's one-fact operations.

pyinfra's ``files.put`` gathers ``File``, ``Sha1File`` and ``Directory`` of the
parent, and its ``systemd.service`` ``SystemdStatus`` then ``SystemdEnabled``:
one SSH round trip each, on every run. A component that imported pyinfra's
modules again would bring them back without failing any plan test (the plans
record operation names, not where they come from).
"""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import seawall.components
from seawall.operations import files, systemd

COMPONENTS = sorted(info.name for info in pkgutil.iter_modules(seawall.components.__path__))
# Facts that list a whole host (every unit, every package) or gather three times
# what one seawall fact answers.
SLOW_FACTS = {"DebPackages", "Sha1File"}


@pytest.mark.parametrize("name", COMPONENTS)
def test_files_and_systemd_are_seawall_operations(name: str) -> None:
    module = importlib.import_module(f"seawall.components.{name}")
    assert getattr(module, "files", files) is files
    assert getattr(module, "systemd", systemd) is systemd


@pytest.mark.parametrize("name", COMPONENTS)
def test_no_component_asks_a_slow_fact(name: str) -> None:
    source = Path(seawall.components.__path__[0], f"{name}.py").read_text()
    imported = {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyinfra.facts")
        for alias in node.names
    }
    assert not imported & SLOW_FACTS


@pytest.mark.parametrize("name", COMPONENTS)
def test_systemd_status_is_asked_of_named_units_only(name: str) -> None:
    """``SystemdStatus`` without ``services`` lists every unit on the host (0.3 s and more)."""
    source = Path(seawall.components.__path__[0], f"{name}.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get_fact"
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "SystemdStatus"
        ):
            assert "services" in {keyword.arg for keyword in node.keywords}, node.lineno


def test_put_and_service_are_seawall_own() -> None:
    assert files.put.__module__ == "seawall.operations.files"
    assert systemd.service.__module__ == "seawall.operations.systemd"
