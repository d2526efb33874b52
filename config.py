"""pyinfra's config file, read before the inventory: seawall checks the inventory first.

An inventory file that cannot even be compiled never reaches its own
check_before_connect() call; from here a syntax error in it, too, stops the run
with one line (file:line) and exit 2 instead of pyinfra's traceback.
"""

from pathlib import Path

import click

from seawall.inventory import check_before_connect

_inventory = click.get_current_context().params.get("inventory")
if isinstance(_inventory, str) and _inventory.endswith(".py") and Path(_inventory).is_file():
    check_before_connect(_inventory)
