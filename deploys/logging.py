"""The central journal alone: ``pyinfra -y inventories/lab.py deploys/logging.py``."""

from seawall.components.logging import deploy_logging

deploy_logging()
