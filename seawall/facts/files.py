"""A file's type, owner, mode and hash, and whether its directory exists: one command."""

import posixpath
import shlex
from typing import Any

from pyinfra.api import FactBase

KINDS = ("file", "directory", "link", "other", "absent")


class FileState(FactBase[dict[str, Any] | None]):
    """Returns what is at ``path`` (``type``: one of ``KINDS``, a link never followed), its
    ``mode`` (octal digits), ``user``, ``group``, a file's ``sha1``, and what is at its
    parent directory (``parent``: ``directory``, ``link``, ``other`` or ``absent``).

    One round trip where pyinfra's ``files.put`` asks ``File``, ``Sha1File`` and
    ``Directory`` of the parent. The content is never read back, only hashed.

    .. code:: python

        {"type": "file", "parent": "directory", "mode": 644, "user": "root",
         "group": "root", "sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}
    """

    def requires_command(self, path: str) -> str:
        return "sha1sum"

    def command(self, path: str) -> str:
        f, d = shlex.quote(path), shlex.quote(posixpath.dirname(path) or "/")
        return (
            f"if [ -L {f} ]; then t=link; elif [ -f {f} ]; then t=file; "
            f"elif [ -d {f} ]; then t=directory; elif [ -e {f} ]; then t=other; else t=absent; fi; "
            f"if [ -L {d} ]; then p=link; elif [ -d {d} ]; then p=directory; "
            f"elif [ -e {d} ]; then p=other; "
            'else p=absent; fi; echo "$t $p"; '
            f'if [ "$t" = file ] || [ "$t" = directory ]; then stat -c "%a %U %G" -- {f}; fi; '
            f'if [ "$t" = file ]; then sha1sum -- {f} | cut -d" " -f1; fi'
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        lines = [line.strip() for line in output if line.strip()]
        if not lines:
            return None
        kind, parent = lines[0].split()
        state: dict[str, Any] = {"type": kind, "parent": parent}
        if kind in ("file", "directory") and len(lines) > 1:
            mode, user, group = lines[1].split()
            state |= {"mode": int(mode), "user": user, "group": group}
        if kind == "file" and len(lines) > 2:
            state["sha1"] = lines[2]
        return state


# What a copied tree never holds: Python's caches.
TREE_SKIP = ("__pycache__", "*.pyc")


class TreeState(FactBase[dict[str, dict[str, Any]] | None]):
    """Returns everything under directory ``path`` by its path relative to it
    (``./deploys/x.py`` is ``x.py``): ``type`` (``file``, ``directory``, ``link``,
    ``other``), ``mode`` (octal digits) and a file's ``sha1``; links are never
    followed and Python's caches are left out. None if ``path`` is not a directory.

    One round trip for a whole tree, where ``files.sync`` asks two facts per file.

    .. code:: python

        {"common.py": {"type": "file", "mode": 644, "sha1": "da39a3ee..."},
         "sub": {"type": "directory", "mode": 755}}
    """

    def requires_command(self, path: str) -> str:
        return "sha1sum"

    def command(self, path: str) -> str:
        skip = " -o ".join(f"-name {shlex.quote(name)}" for name in TREE_SKIP)
        pruned = f"find . -mindepth 1 \\( {skip} \\) -prune -o"
        return (
            f"cd {shlex.quote(path)} 2>/dev/null && [ ! -L {shlex.quote(path)} ] || exit 0; "
            f"echo tree; {pruned} -printf '%y %m %p\\n'; "
            f"{pruned} -type f -exec sha1sum {{}} +"
        )

    def process(self, output: list[str]) -> dict[str, dict[str, Any]] | None:
        if not output or output[0].strip() != "tree":
            return None
        kinds = {"f": "file", "d": "directory", "l": "link"}
        tree: dict[str, dict[str, Any]] = {}
        for line in output[1:]:
            head, _, rest = line.partition(" ")
            if len(head) == 1:
                mode, _, name = rest.partition(" ")
                tree[name.removeprefix("./")] = {
                    "type": kinds.get(head, "other"),
                    "mode": int(mode),
                }
            elif len(head) == 40:
                tree.setdefault(rest.strip().removeprefix("./"), {})["sha1"] = head
        return tree
