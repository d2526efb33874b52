"""The firewall alone: ``pyinfra -y inventories/lab.py deploys/firewall.py``."""

from seawall.components.firewall import deploy_firewall

deploy_firewall()
