"""pgBackRest alone: ``pyinfra -y inventories/lab.py deploys/pgbackrest.py``."""

from seawall.components.pgbackrest import deploy_pgbackrest

deploy_pgbackrest()
