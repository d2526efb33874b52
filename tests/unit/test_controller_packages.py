"""Set-up from package lists, not from this machine's state.

Every command the lab, the tests and the benchmarks run on the controller, and
every file the lab's LXC config includes, must belong (per dpkg) to a package
that bootstrap.sh installs, to one of their dependencies, or to an Essential or
required package. A package installed here by hand hides nothing: dpkg is asked.
"""

import ast
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest

from seawall.errors import SeawallError
from seawall.lab import controller, hosts, vagrant
from seawall.lab.config import LabHost

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [ROOT / "seawall", ROOT / "tests", ROOT / "bench"]
# Code that runs on the deployed hosts, whose packages the deploys install.
ON_HOSTS = [ROOT / "seawall" / "runtime", ROOT / "seawall" / "refservice"]
RUNNERS = {"run", "_run", "Popen", "check_output", "check_call", "call"}


def dpkg_owner(path: str) -> str | None:
    """The package owning a path, trying the merged-/usr twin dpkg may know instead."""
    candidates = [path]
    for merged, legacy in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/")):
        if path.startswith(merged):
            candidates.append(legacy + path[len(merged) :])
        elif path.startswith(legacy):
            candidates.append(merged + path[len(legacy) :])
    for candidate in candidates:
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        owners = [
            line.split(":", 1)[0].split(",")[0].strip()
            for line in result.stdout.splitlines()
            if not line.startswith("diversion by ")  # dash diverts /bin/sh; its owner follows
        ]
        if result.returncode == 0 and owners:
            return owners[0]
    return None


@cache
def _depends(package: str) -> list[str]:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Pre-Depends}, ${Depends}", package],
        capture_output=True,
        text=True,
    ).stdout
    names = []
    for clause in out.split(","):
        # "a (>= 1) | b" → every alternative may be the one installed.
        for alternative in clause.split("|"):
            name = alternative.strip().split(" ", 1)[0].split(":", 1)[0]
            if name:
                names.append(name)
    return names


@cache
def installed_by_bootstrap() -> frozenset[str]:
    """The listed packages and everything they depend on (what apt pulls in)."""
    seen: set[str] = set()
    todo = list(controller.listed_packages())
    while todo:
        package = todo.pop()
        if package not in seen:
            seen.add(package)
            todo.extend(_depends(package))
    return frozenset(seen)


def essential(package: str) -> bool:
    """Essential or Priority required: on every Debian system, debootstrap's minbase too."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Essential} ${Priority}", package],
        capture_output=True,
        text=True,
    ).stdout.split()
    return "yes" in out or "required" in out


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "string" constants (e.g. PROXY_BINARY)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


def commands_run() -> dict[str, set[str]]:
    """{command: files that run it} for every literal argv the code starts on the controller."""
    found: dict[str, set[str]] = {}
    for folder in SCANNED:
        for source in folder.rglob("*.py"):
            if any(place in source.parents for place in ON_HOSTS):
                continue
            tree = ast.parse(source.read_text())
            constants = _module_strings(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                argv = node.args[0]
                if name not in RUNNERS or not isinstance(argv, ast.List) or not argv.elts:
                    continue
                first = argv.elts[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    command = first.value
                elif isinstance(first, ast.Name) and first.id in constants:
                    command = constants[first.id]
                else:
                    continue  # the venv's own tools (sys.executable, PYINFRA...)
                found.setdefault(Path(command).name, set()).add(str(source.relative_to(ROOT)))
    return found


def lxc_includes() -> list[str]:
    """Every file the lab's (and the Vagrant box's) LXC config includes, and theirs."""
    # Only the fields lxc_config reads; the includes do not depend on them.
    config = SimpleNamespace(
        base_rootfs=Path("/base"),
        bridge="swlab0",
        prefix_length=24,
        network=SimpleNamespace(broadcast_address="10.0.0.255"),
    )
    host = LabHost("h", "10.0.0.2", "seawall-h", "swh0", "00:16:3e:00:00:02")
    # The lab's hosts and the Vagrant box's machines include the same files.
    text = hosts.lxc_config(config, host) + vagrant._LXC_CONFIG  # type: ignore[arg-type]
    todo = re.findall(r"^lxc\.include\s*=\s*(\S+)", text, re.M)
    seen: list[str] = []
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.append(path)
        target = Path(path)
        if target.is_file():
            todo += re.findall(r"^lxc\.include\s*=\s*(\S+)", target.read_text(), re.M)
    return seen


def test_the_scan_finds_the_lab_commands() -> None:
    # Guards the scanner itself: these are run in seawall/lab for certain.
    found = commands_run()
    for command in ("lxc-start", "lxc-attach", "nft", "ip", "debootstrap", "apt-cacher-ng"):
        assert command in found, f"scanner missed {command}"


def test_every_command_run_is_mapped_or_essential() -> None:
    for command, sources in sorted(commands_run().items()):
        if command in controller.COMMANDS:
            continue
        path = shutil.which(command)
        assert path, f"{command} (run by {sorted(sources)}) is not installed and not mapped"
        owner = dpkg_owner(path)
        assert owner and essential(owner), (
            f"{command} (run by {sorted(sources)}) belongs to {owner}, neither Essential nor"
            " required: add it to seawall/lab/controller.py COMMANDS and controller-packages.txt"
        )


@pytest.mark.parametrize("command", sorted(controller.COMMANDS))
def test_each_command_belongs_to_a_package_bootstrap_installs(command: str) -> None:
    package = controller.COMMANDS[command]
    assert package in controller.listed_packages(), (
        f"{command}: its package {package} is not in controller-packages.txt"
    )
    path = shutil.which(command)
    assert path, f"{command} is not installed (package {package}: run ./bootstrap.sh)"
    assert dpkg_owner(path) == package, f"{command} ({path}) belongs to {dpkg_owner(path)}"


@pytest.mark.parametrize("file", sorted(controller.FILES))
def test_each_file_belongs_to_its_package(file: str) -> None:
    package = controller.FILES[file]
    assert package in controller.listed_packages(), f"{file}: {package} is not listed"
    assert dpkg_owner(file) == package, f"{file} belongs to {dpkg_owner(file)}, not {package}"


def test_every_lxc_include_belongs_to_a_package_bootstrap_installs() -> None:
    includes = lxc_includes()
    assert "/usr/share/lxc/config/debian.common.conf" in includes
    for path in includes:
        owner = dpkg_owner(path.rstrip("/"))
        assert owner, f"{path} (included by the lab's LXC config) belongs to no package"
        assert owner in installed_by_bootstrap(), (
            f"{path} belongs to {owner}, which bootstrap.sh does not install"
        )
        assert (
            path in controller.FILES
            or owner in controller.COMMANDS.values()
            or any(owner in _depends(listed) for listed in controller.listed_packages())
        ), f"{path}: lab up cannot check it before starting hosts"


def test_bootstrap_installs_exactly_the_listed_packages() -> None:
    script = (ROOT / "bootstrap.sh").read_text()
    line = next(line for line in script.splitlines() if line.startswith("mapfile -t packages"))
    assert "controller-packages.txt" in line
    listed = subprocess.run(
        ["bash", "-c", line + '; printf "%s\\n" "${packages[@]}"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed == controller.listed_packages()
    # No second, hidden install list.
    assert script.count("apt-get install") == 1


def test_lab_up_names_a_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller, "FILES", {"/nonexistent/debian.common.conf": "lxc-templates"})
    monkeypatch.setattr(controller, "COMMANDS", {"no-such-command-x": "some-package"})
    with pytest.raises(SeawallError) as raised:
        controller.require()
    message = str(raised.value)
    assert "lxc-templates: no /nonexistent/debian.common.conf" in message
    assert "some-package: no no-such-command-x" in message
    assert "./bootstrap.sh" in message


def test_nothing_missing_after_bootstrap() -> None:
    assert controller.missing() == {}
