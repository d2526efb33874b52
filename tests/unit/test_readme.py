"""The README describes this repository: its layout table, its set-up commands, its links."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The text under a `## title` heading, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def _layout_paths() -> list[str]:
    rows = [line for line in _section("Layout").splitlines() if line.startswith("| `")]
    first_cells = [row.split("|")[1] for row in rows]
    return [path for cell in first_cells for path in re.findall(r"`([^`]+)`", cell)]


def _exists(path: str) -> bool:
    # `<concern>`, `<module>.<Fact>`: a placeholder stands for at least one real name.
    pattern = re.sub(r"<[^>]+>", "*", path.rstrip("/"))
    matches = list(REPO.glob(pattern))
    if path.endswith("/"):
        matches = [match for match in matches if match.is_dir()]
    return bool(matches)


def test_every_path_in_the_layout_table_exists() -> None:
    paths = _layout_paths()
    assert len(paths) > 10
    assert [path for path in paths if not _exists(path)] == []


def _listed(directory: str) -> bool:
    return any(
        path == directory
        or path.startswith(directory)
        or re.sub(r"<[^>]+>.*", "", path) == directory
        for path in _layout_paths()
    )


def test_every_directory_of_the_tree_is_in_the_layout_table() -> None:
    ignored = {"__pycache__"}
    directories = [
        f"{entry.name}/"
        for entry in REPO.iterdir()
        if entry.is_dir()
        and not entry.name.startswith(".")
        and not entry.name.endswith(".egg-info")
        and entry.name not in {"seawall", "tests"}
    ]
    for package in ("seawall", "tests"):
        directories += [
            f"{package}/{entry.name}/"
            for entry in (REPO / package).iterdir()
            if entry.is_dir() and entry.name not in ignored and not entry.name.startswith(".")
        ]
    assert [directory for directory in directories if not _listed(directory)] == []


def test_no_link_leaves_the_repository() -> None:
    assert "../" not in README
    assert "/work/" not in README
    assert (REPO / "docs" / "design.md").is_file()
    assert "`docs/design.md`" in README


def test_no_section_is_repeated() -> None:
    headings = re.findall(r"^#+ (.+)$", README, re.M)
    assert len(headings) == len(set(headings))
    # Each concern has one section: a heading naming two concerns repeats one.
    for concern in ("Postgres", "Redis"):
        assert len([h for h in headings if concern in h]) == 1, headings


def test_set_up_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", _section("Set up"), re.S | re.M)
    assert len(blocks) == 2
    install, tests = (block.strip() for block in blocks)
    assert "\n" not in install and "\n" not in tests
    assert install.startswith("./bootstrap.sh && ")
    assert "seawall lab up" in install and "deploys/site.py" in install
    assert install.endswith("seawall verify -i inventories/lab.py --settle 120")
    assert tests.endswith(".venv/bin/pytest")
    assert tests in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_commands_in_the_readme_use_dash_i() -> None:
    # `seawall check FILE` is refused now: no command may take a positional inventory.
    assert not re.search(r"seawall (check|verify|status|health) inventories/", README)
