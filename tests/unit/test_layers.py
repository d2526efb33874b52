"""Layers only point down: every import inside ``seawall/`` goes to its own layer or a lower one.

The import graph comes from the source (``ast``), lazy imports inside functions
included, so nothing is imported to build it. ``from package import name``
counts as importing ``package.name`` when that is a module, else the package's
``__init__``. The table is the one in ``docs/design.md`` ("Layers").
"""

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "seawall"

# Bottom to top. A module belongs to its longest matching entry; "seawall" alone is
# the package's own __init__.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("host code", ("seawall", "seawall.errors", "seawall.runtime")),
    ("reference service", ("seawall.refservice",)),
    (
        "settings",
        (
            "seawall.defaults",
            "seawall.settings",
            "seawall.output",
            "seawall.secrets",
            "seawall.redis_acl",
            "seawall.schema",
            "seawall.inventory",
            "seawall.check",
        ),
    ),
    (
        "helpers",
        (
            "seawall.names",
            "seawall.postgres.scram",
            "seawall.local",
            "seawall.netguard",
            "seawall.ssh",
            "seawall.plot",
            "seawall.oplock",
        ),
    ),
    ("facts and operations", ("seawall.facts", "seawall.operations")),
    ("deploys", ("seawall.components",)),
    ("libraries", ("seawall.redis", "seawall.postgres", "seawall.health_report", "seawall.logs")),
    ("reports", ("seawall.verify", "seawall.status", "seawall.drift", "seawall.restart")),
    ("lab", ("seawall.lab",)),
    ("drills", ("seawall.redis.drill", "seawall.postgres.drill")),
    ("cli", ("seawall.cli",)),
]

# Layers whose modules import no pyinfra themselves: the code the hosts run, and
# the helpers that the deploys and the drills or verify share.
PYINFRA_FREE = {"host code", "reference service", "helpers"}
CONTROLLER_ONLY = ("pyinfra", "pyinfra_cli", "typer")

# What production commands (verify, status, health, restore, tunnel, deploys)
# load. None of it may reach seawall.lab, even through another module.
PRODUCTION = (
    "seawall.verify",
    "seawall.status",
    "seawall.health_report",
    "seawall.drift",
    "seawall.restart",
    "seawall.oplock",
    "seawall.redis.failover",
    "seawall.postgres.failover",
    "seawall.logs",
    "seawall.check",
    "seawall.postgres.status",
    "seawall.postgres.restore",
    "seawall.postgres.remote_writer",
    "seawall.postgres.tunnel",
    "seawall.postgres.tradestore",
    "seawall.redis.client",
    "seawall.redis.topology",
    "seawall.ssh",
    "seawall.netguard",
    "seawall.names",
    "seawall.components",
    "seawall.facts",
    "seawall.operations",
)
# The only modules that may import the lab: the lab itself, its drills, the CLI.
LAB_USERS = ("seawall.lab", "seawall.redis.drill", "seawall.postgres.drill", "seawall.cli")


def _matches(module: str, entry: str) -> bool:
    return module == entry or (entry != "seawall" and module.startswith(entry + "."))


@cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


@cache
def imports() -> dict[str, set[str]]:
    """Every module's imports: seawall modules by name, anything else by its top package."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    name = f"{base}.{alias.name}"
                    found.add(name if name in known else base)
        graph[module] = {
            name if name.split(".")[0] == "seawall" else name.split(".")[0]
            for name in found
            if name != module
        }
    return graph


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if _matches(module, entry) and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for name in imports().get(todo.pop(), set()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_the_graph_sees_the_package() -> None:
    assert "seawall.cli" in modules() and "seawall.runtime.reconnect" in modules()
    assert "seawall.ssh" in imports()["seawall.verify"]
    assert "typer" in imports()["seawall.cli"]


def test_every_module_has_a_layer() -> None:
    missing = [module for module in modules() if layer_of(module) is None]
    assert missing == [], f"add these modules to LAYERS (and docs/design.md): {missing}"


def test_every_layer_entry_names_a_module() -> None:
    known = modules()
    stale = [
        entry
        for _, entries in LAYERS
        for entry in entries
        if not any(_matches(module, entry) for module in known)
    ]
    assert stale == []


def test_imports_only_point_down() -> None:
    wrong = []
    for module in modules():
        mine = layer_of(module)
        for name in sorted(imports()[module]):
            theirs = layer_of(name) if name.startswith("seawall") else None
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(
                    f"{module} (layer {mine + 1}, {LAYERS[mine][0]}) imports "
                    f"{name} (layer {theirs + 1}, {LAYERS[theirs][0]})"
                )
    assert wrong == [], "a module may import only its own layer or lower ones:\n" + "\n".join(wrong)


def test_runtime_imports_no_pyinfra_or_typer() -> None:
    runtime = [module for module in modules() if _matches(module, "seawall.runtime")]
    assert runtime
    wrong = {
        module: sorted(_closure(module) & set(CONTROLLER_ONLY))
        for module in runtime
        if _closure(module) & set(CONTROLLER_ONLY)
    }
    assert wrong == {}


def test_pyinfra_free_layers_import_no_pyinfra() -> None:
    wrong = [
        f"{module} ({LAYERS[index][0]}) imports {name}"
        for module in modules()
        if (index := layer_of(module)) is not None and LAYERS[index][0] in PYINFRA_FREE
        for name in sorted(imports()[module])
        if name in CONTROLLER_ONLY
    ]
    assert wrong == []


def test_no_production_module_reaches_the_lab() -> None:
    production = [
        module for module in modules() if any(_matches(module, entry) for entry in PRODUCTION)
    ]
    assert "seawall.verify" in production and "seawall.postgres.restore" in production
    wrong = {
        module: sorted(name for name in _closure(module) if _matches(name, "seawall.lab"))
        for module in production
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_only_the_lab_its_drills_and_the_cli_import_the_lab() -> None:
    wrong = [
        f"{module} imports {name}"
        for module in modules()
        if not any(_matches(module, user) for user in LAB_USERS)
        for name in sorted(imports()[module])
        if _matches(name, "seawall.lab")
    ]
    assert wrong == []


def test_the_design_doc_lists_the_same_layers() -> None:
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = design.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ")]
    listed = [row[2].strip() for row in rows if row[1].strip().isdigit()]
    assert listed == [name for name, _ in LAYERS]
