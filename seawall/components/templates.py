"""Rendering of the templates under seawall/templates/<concern>/, which mirror their target paths,
and the static files under seawall/files/<concern>/ (dashboards, rule files, scripts).

Both are package data (pyproject.toml): a wheel of seawall carries them, and they
are found beside the installed package, never through the repository.
"""

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

# The package's own folders: seawall/templates and seawall/files, wherever seawall is installed.
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FILES = Path(__file__).resolve().parents[1] / "files"


@cache
def _environment(concern: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES / concern),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def template_path(concern: str, target: str) -> Path:
    """Return the template file of ``target`` (a path on the host) for ``concern``."""
    return TEMPLATES / concern / (target.lstrip("/") + ".j2")


def static_path(concern: str, name: str) -> Path:
    """Return static file ``name`` of ``concern``: seawall/files/<concern>/<name>."""
    return FILES / concern / name


def render(concern: str, target: str, context: Mapping[str, Any]) -> str:
    """Render seawall/templates/<concern><target>.j2 (``target`` is the path on the host)."""
    return _environment(concern).get_template(target.lstrip("/") + ".j2").render(context)
