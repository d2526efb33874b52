"""Render the Postgres-side templates (etcd, Patroni, PgBouncer, HAProxy, pgBackRest).

Templates mirror the path they render to: ``templates/<concern>/etc/...`` gives ``/etc/...``.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seawall.components import templates

TEMPLATE_ROOT = templates.TEMPLATES


def template_path(concern: str, target: str) -> Path:
    """Return the template file of ``target`` (a path on the host) for ``concern``."""
    return TEMPLATE_ROOT / concern / (target.lstrip("/") + ".j2")


def render(concern: str, target: str, context: Mapping[str, Any]) -> str:
    """Render ``templates/<concern>/<target>.j2``; a missing variable is an error."""
    return templates.render(concern, target, context)
