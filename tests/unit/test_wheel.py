"""A built wheel of seawall carries its templates and deploys from where it is installed.

The wheel is built from a copy of the package, with the venv's setuptools (no
build isolation, no index), and installed into a folder of its own. A
subprocess then runs with that folder first on its path and, as its working
directory, a copy of only what an ops host adds to the wheel: `deploys/`,
`inventories/` and `config.py`. There it loads the lab inventory, imports what
every deploy file imports, finds every template through the installed
`seawall.components.templates` and renders them, with the contexts the template
tests build. Nothing it uses may come from this repository.
"""

import ast
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from seawall.components.ops import copy_source

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "seawall"
# What pyinfra needs beside an installed seawall to deploy the site.
ENTRY = ("deploys", "inventories", "config.py")

# Run in the subprocess, from the copy of the entry files: a JSON report of where
# seawall, the deploys' imports and every template were found, and the renders.
# Redis and services templates have no context helper: they are found and compiled.
SCRIPT = r"""
import ast, hashlib, importlib, json, sys
from pathlib import Path

import seawall
from seawall import inventory
from seawall.components import services, templates
from tests.unit.test_wheel import template_contexts

contexts = template_contexts(inventory.load("inventories/lab.py"))

imported, includes = {}, []
for deploy in sorted(Path("deploys").glob("*.py")):
    tree = ast.parse(deploy.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("seawall"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert callable(getattr(module, alias.name)), (deploy, alias.name)
            imported[node.module] = module.__file__
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "include":
            includes.append(node.args[0].value)

root = Path(templates.TEMPLATES)
found, rendered = {}, {}
for path in sorted(p for p in root.rglob("*") if p.is_file()):
    concern, _, rest = path.relative_to(root).as_posix().partition("/")
    target = "/" + rest.removesuffix(".j2")
    key = f"{concern}{target}"
    assert templates.template_path(concern, target) == path, key
    template = templates._environment(concern).get_template(rest)
    found[key] = {
        "file": template.filename,
        "sha1": hashlib.sha1(Path(template.filename).read_bytes()).hexdigest(),
    }
    if concern in contexts:
        rendered[key] = templates.render(concern, target, contexts[concern])

print(json.dumps({
    "seawall": seawall.__file__,
    "modules": sorted(
        m.__file__ for n, m in sys.modules.items()
        if n.split(".")[0] == "seawall" and getattr(m, "__file__", None)
    ),
    "imported": imported,
    "includes": [name for name in includes if not Path(name).is_file()],
    "code_files": [str(local) for local, _ in services.code_files()],
    "templates": found,
    "rendered": rendered,
}))
"""


def template_contexts(lab: Any) -> dict[str, dict[str, Any]]:
    """{concern: a context its templates render with}, as the template tests build them.

    Imported here, not at the top: in the subprocess, seawall is the installed one.
    """
    from seawall.components import gateway
    from tests.unit.test_common_templates import context_of
    from tests.unit.test_postgres_backup import context as backup_context
    from tests.unit.test_postgres_drill import pgroute_context
    from tests.unit.test_postgres_templates import etcd_context, patroni_context

    apps = [host.address for host in lab.group("app")]
    return {
        "common": context_of(lab, "data-1"),
        "etcd": etcd_context(lab, "data-1"),
        "postgres": patroni_context(lab, "data-1"),
        "pgbackrest": backup_context(lab, "ops-1"),
        "pgroute": pgroute_context(lab),
        "gateway": gateway.context(lab.host("gw-1").data, apps),
    }


def _run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def build_wheel(tmp: Path) -> Path:
    """Build the wheel from a copy of the tree (the build writes build/ and egg-info)."""
    tmp.mkdir(parents=True, exist_ok=True)
    source = copy_source(REPO, tmp / "source")
    dist = tmp / "dist"
    pip = ("-m", "pip", "--disable-pip-version-check")
    _run(
        *pip,
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(dist),
        str(source),
        cwd=tmp,
    )
    (built,) = dist.glob("seawall-*.whl")
    return built


def install_wheel(wheel: Path, site: Path) -> Path:
    """Install ``wheel`` into the folder ``site`` alone (no dependencies, no index)."""
    site.mkdir(parents=True, exist_ok=True)
    pip = ("-m", "pip", "--disable-pip-version-check")
    _run(
        *pip,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--target",
        str(site),
        str(wheel),
        cwd=site,
    )
    return site


def copy_entry_files(ops: Path) -> Path:
    """Copy what an ops host adds to the wheel (deploys, inventories, config.py) into ``ops``."""
    ops.mkdir(parents=True, exist_ok=True)
    for name in ENTRY:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, ops / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, ops / name)
    return ops


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_wheel(wheel, tmp_path_factory.mktemp("site"))


def _package_files() -> list[str]:
    """Every file of the package as a wheel names it (byte code aside)."""
    return sorted(
        path.relative_to(REPO).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


def test_the_wheel_carries_every_file_of_the_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    files = _package_files()
    assert any(name.startswith("seawall/templates/") for name in files)
    # A file missing here is missing from package-data in pyproject.toml.
    assert [name for name in files if name not in names] == []


def _report(site: Path, ops: Path) -> dict[str, Any]:
    # The repository comes after the installed folder: only tests.unit (the
    # context helpers) may be found there, and the report shows seawall was not.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{REPO}", "PYTHONDONTWRITEBYTECODE": "1"}
    report: dict[str, Any] = json.loads(_run("-c", SCRIPT, cwd=ops, env=env))
    return report


def test_the_installed_wheel_deploys_from_a_copy_of_the_entry_files(
    installed: Path, tmp_path: Path, lab: Any
) -> None:
    ops = copy_entry_files(tmp_path / "ops")
    report = _report(installed, ops)
    assert Path(report["seawall"]).is_relative_to(installed)
    assert [m for m in report["modules"] if not Path(m).is_relative_to(installed)] == []
    # Every deploy file's imports resolve, and site.py includes files the copy has.
    deploys = {path.stem for path in (ops / "deploys").glob("*.py")} - {"site"}
    assert {module.rsplit(".", 1)[-1] for module in report["imported"]} >= deploys
    assert report["includes"] == []
    code = [Path(path) for path in report["code_files"]]
    assert code and all(path.is_file() and path.is_relative_to(installed) for path in code)

    # Every template is found in the installed copy, byte for byte the repository's.
    templates = report["templates"]
    assert sorted(templates) == sorted(
        name.removeprefix("seawall/templates/").removesuffix(".j2")
        for name in _package_files()
        if name.startswith("seawall/templates/")
    )
    for key, found in templates.items():
        assert Path(found["file"]).is_relative_to(installed), key
        repo_file = PACKAGE / "templates" / f"{key}.j2"
        assert found["sha1"] == _sha1(repo_file), key

    # Rendered from the installed copy, each is what this repository renders.
    from seawall.components.templates import render

    contexts = template_contexts(lab)
    reference = {
        key: render(concern, "/" + target, contexts[concern])
        for key in templates
        for concern, target in [key.split("/", 1)]
        if concern in contexts
    }
    assert len(reference) >= 20
    assert report["rendered"] == reference


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_deploy_files_only_call_into_seawall() -> None:
    # What makes a copy of deploys/ enough: no deploy file reaches into the repository.
    for deploy in (REPO / "deploys").glob("*.py"):
        tree = ast.parse(deploy.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [node.module] if isinstance(node, ast.ImportFrom) else []
                modules += [alias.name for alias in node.names if isinstance(node, ast.Import)]
                assert all(m and m.split(".")[0] in {"seawall", "pyinfra"} for m in modules), deploy
