"""The common baseline alone: ``pyinfra -y inventories/lab.py deploys/common.py``."""

from seawall.components.common import deploy_common

deploy_common()
