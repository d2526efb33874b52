"""The NGINX gateway alone: ``pyinfra -y inventories/lab.py deploys/gateway.py``."""

from seawall.components.gateway import deploy_gateway

deploy_gateway()
