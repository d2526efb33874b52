"""Packaged pyinfra deploys, one module per concern, each with a ``deploy_<concern>()``."""

import sys
from pathlib import Path
from types import ModuleType


def name_deploy_files(beside: str | Path) -> None:
    """Name each ``*.py`` file in the folder of file ``beside`` as a module in ``sys.modules``.

    pyinfra places every operation by reading the call stack (``inspect.stack``),
    and for each frame asks which module holds its file. Deploy files are run by
    ``exec``, not imported, so no module holds them, and every such question
    searched all of ``sys.modules`` anew: 5,000 searches and 2-3 s of the
    controller's CPU in a no-op site deploy. Named here, each is a dict lookup.
    """
    for path in sorted(Path(beside).resolve().parent.glob("*.py")):
        name = f"seawall deploy file {path}"
        if name not in sys.modules:
            module = ModuleType(name, f"deploy file {path} (run by pyinfra, not imported)")
            module.__file__ = str(path)
            sys.modules[name] = module
