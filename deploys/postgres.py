"""PostgreSQL under Patroni alone: ``pyinfra -y inventories/lab.py deploys/postgres.py``."""

from seawall.components.postgres import deploy_postgres

deploy_postgres()
