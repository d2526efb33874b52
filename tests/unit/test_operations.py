"""seawall's pyinfra operations against fixtures, in pyinfra's layout.

Each tests/operations/<module>.<op>/<case>.json names the operation's
arguments, the facts the host (and, for operations that read other hosts, each
peer) answers, and the commands the operation must yield, or the exception it
must raise. A case that yields nothing states its ``noop_description``.

Fixture keys, as in pyinfra's tests:

- ``args``, ``kwargs``: the operation's arguments; a string ``"hidden:<text>"``
  becomes ``HiddenValue("<text>")``, ``"stringio:<text>"`` a ``StringIO``;
- ``facts``: ``{"<fact>": value}`` for a fact without arguments, else
  ``{"<fact>": {"<arg>=<value>, ...": value}}``; ``<fact>`` is ``files.File``
  for pyinfra's facts and ``seawall.facts.<module>.<Fact>`` for ours. A fact
  (or an argument set) the fixture does not give fails the test;
- ``hosts``: ``{"<inventory name>": {"facts": ...}}`` for peers;
- ``host_name``: this host's inventory name (``testhost`` if absent);
- ``failed_hosts``: peers this pyinfra run could not reach (``state.failed_hosts``);
- ``commands``: a string per shell command, ``[raw, masked]`` when part of it
  is hidden, ``["stdin", command, input]`` for one fed on its standard input,
  ``["upload", content, dest, remote_temp_filename]`` per upload;
- ``noop_description``, ``logs``, ``exception`` (``name`` and ``message``);
- ``secrets``: text that must appear in no printed command, log or no-op
  description (every ``hidden:`` argument is checked this way too).

SCRAM salts are zeros here, so the verifiers in commands are reproducible.
"""

import importlib
import inspect
import json
import pkgutil
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyinfra.api import FactBase, HiddenValue, StringCommand
from pyinfra.api.command import FileUploadCommand
from pyinfra.api.util import get_kwargs_str
from pyinfra.context import ctx_host, ctx_inventory

import seawall.operations
from seawall.postgres import scram

FIXTURES = Path(__file__).resolve().parents[1] / "operations"
CASES = sorted(FIXTURES.glob("*/*.json"))


class MissingFact(AssertionError):
    """The operation asked for a fact the fixture does not give."""


def fact_key(fact: type[FactBase[Any]]) -> str:
    return f"{fact.__module__.removeprefix('pyinfra.facts.')}.{fact.__name__}"


class FakeHost:
    """A host that answers only the facts its fixture gives, and records what it is told."""

    def __init__(self, name: str, facts: dict[str, Any]) -> None:
        self.name = name
        self.facts = facts
        self.noop_description: str | None = None
        self.logs: list[str] = []
        self.state: Any = None

    def get_fact(self, fact: type[FactBase[Any]], **kwargs: Any) -> Any:
        key = fact_key(fact)
        unknown = set(kwargs) - set(inspect.signature(fact.command).parameters)
        assert not unknown, f"{key} takes no argument {sorted(unknown)}"
        if key not in self.facts:
            raise MissingFact(f"{self.name}: fact {key} is not in the fixture")
        if not kwargs:
            return self.facts[key]
        arguments = get_kwargs_str(kwargs)
        if arguments not in self.facts[key]:
            raise MissingFact(f"{self.name}: fact {key} ({arguments}) is not in the fixture")
        return self.facts[key][arguments]

    def noop(self, description: str) -> None:
        self.noop_description = description

    def log(self, message: str, *args: Any, **kwargs: Any) -> None:
        self.logs.append(message)

    def get_temp_filename(self, *args: Any, **kwargs: Any) -> str:
        return "_tempfile_"


class FakeInventory:
    def __init__(self, hosts: dict[str, FakeHost]) -> None:
        self.hosts = hosts

    def get_host(self, name: str) -> FakeHost:
        if name not in self.hosts:
            raise MissingFact(f"host {name} is not in the fixture")
        return self.hosts[name]


def parse_value(value: Any) -> Any:
    """Turn a fixture's JSON into the operation's arguments (``hidden:`` -> HiddenValue)."""
    if isinstance(value, str) and value.startswith("hidden:"):
        return HiddenValue(value.removeprefix("hidden:"))
    if isinstance(value, str) and value.startswith("stringio:"):
        return StringIO(value.removeprefix("stringio:"))
    if isinstance(value, list):
        return [parse_value(item) for item in value]
    if isinstance(value, dict):
        return {key: parse_value(item) for key, item in value.items()}
    return value


def hidden_texts(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value.startswith("hidden:"):
        yield value.removeprefix("hidden:")
    elif isinstance(value, list):
        for item in value:
            yield from hidden_texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from hidden_texts(item)


def as_json(command: Any) -> Any:
    """Return a yielded command as a fixture states it."""
    if isinstance(command, str):
        return command.strip()
    if isinstance(command, StringCommand):
        raw, masked = command.get_raw_value(), command.get_masked_value()
        if "_stdin" in command.connector_arguments:
            # What reaches the command's standard input: never printed, never in its argv.
            return ["stdin", raw, command.connector_arguments["_stdin"]]
        return raw if raw == masked else [raw, masked]
    if isinstance(command, FileUploadCommand):
        src = command.src
        content = src.getvalue() if hasattr(src, "getvalue") else str(src)
        return ["upload", content, str(command.dest), command.remote_temp_filename]
    raise AssertionError(f"unexpected command {command!r}")


def printed(command: Any) -> str:
    """Return what pyinfra's output may show of a command (never an upload's content)."""
    if isinstance(command, FileUploadCommand):
        return f"upload {command.dest} {command.remote_temp_filename}"
    return str(command)


def command_line(command: Any) -> str:
    """Return the command line the host runs for a command (unmasked; never stdin or uploads)."""
    if isinstance(command, FileUploadCommand):
        return f"{command.dest} {command.remote_temp_filename}"
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    return str(command)


def operations() -> set[str]:
    """Return ``<module>.<op>`` for every operation of the seawall.operations package."""
    found = set()
    for info in pkgutil.iter_modules(seawall.operations.__path__):
        module = importlib.import_module(f"seawall.operations.{info.name}")
        for name, value in vars(module).items():
            if hasattr(value, "_inner") and value.__module__ == module.__name__:
                found.add(f"{info.name}.{name}")
    return found


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_operation(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, op_name = case.parent.name.rsplit(".", 1)
    op = getattr(importlib.import_module(f"seawall.operations.{module}"), op_name)
    spec = json.loads(case.read_text())
    monkeypatch.setattr(scram, "os", SimpleNamespace(urandom=bytes))
    fake = FakeHost(spec.get("host_name", "testhost"), spec.get("facts", {}))
    peers = {
        name: FakeHost(name, peer.get("facts", {})) for name, peer in spec.get("hosts", {}).items()
    }
    state = SimpleNamespace(failed_hosts={peers[name] for name in spec.get("failed_hosts", [])})
    for each in (fake, *peers.values()):
        each.state = state
    args, kwargs = parse_value(spec.get("args", [])), parse_value(spec.get("kwargs", {}))

    with ctx_host.use(fake), ctx_inventory.use(FakeInventory(peers)):
        if "exception" in spec:
            with pytest.raises(Exception) as raised:
                list(op._inner(*args, **kwargs))
            assert type(raised.value).__name__ == spec["exception"]["name"]
            assert str(raised.value) == spec["exception"]["message"]
            return
        commands = list(op._inner(*args, **kwargs))

    assert [as_json(command) for command in commands] == spec["commands"]
    if not commands:
        assert "noop_description" in spec, "a case that changes nothing states its no-op"
    if "noop_description" in spec:
        assert fake.noop_description == spec["noop_description"]
    assert fake.logs == spec.get("logs", [])
    shown = [printed(command) for command in commands] + fake.logs + [fake.noop_description or ""]
    # What a process list on the host shows: every command line, unmasked.
    argv = [command_line(command) for command in commands]
    for secret in [*spec.get("secrets", []), *hidden_texts(spec.get("kwargs", {}))]:
        assert not any(secret in text for text in shown), f"{secret!r} would be printed"
        assert not any(secret in text for text in argv), f"{secret!r} would be in a command line"


def test_a_fact_the_fixture_does_not_give_fails() -> None:
    from pyinfra.facts.files import File

    with pytest.raises(MissingFact):
        FakeHost("testhost", {}).get_fact(File, path="/etc/hosts")
    with pytest.raises(MissingFact):
        FakeHost("testhost", {"files.File": {"path=/etc/motd": None}}).get_fact(
            File, path="/etc/hosts"
        )


def test_every_operation_has_fixtures_and_a_noop_case() -> None:
    found = operations()
    assert found, "no operation found in seawall.operations"
    assert found <= {case.parent.name for case in CASES}
    noop = {
        case.parent.name for case in CASES if "noop_description" in json.loads(case.read_text())
    }
    assert found <= noop
