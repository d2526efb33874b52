"""The platform services alone: ``pyinfra -y inventories/lab.py deploys/services.py``."""

from seawall.components.services import deploy_services

deploy_services()
