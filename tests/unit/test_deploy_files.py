"""seawall.components.name_deploy_files: deploy files run by pyinfra's exec are named as
modules, so inspect finds their module at once (pyinfra walks the stack per operation)."""

import inspect
from pathlib import Path

from seawall.components import name_deploy_files


def test_deploy_files_are_named_as_modules(tmp_path: Path) -> None:
    (tmp_path / "site.py").write_text("")
    (tmp_path / "redis.py").write_text("")
    name_deploy_files(tmp_path / "site.py")
    for name in ("site", "redis"):
        found = inspect.getmodule(None, _filename=str(tmp_path / f"{name}.py"))
        assert found is not None and found.__file__ == str((tmp_path / f"{name}.py").resolve())
