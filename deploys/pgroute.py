"""Postgres routing on app hosts alone: ``pyinfra -y inventories/lab.py deploys/pgroute.py``."""

from seawall.components.pgroute import deploy_pgroute

deploy_pgroute()
