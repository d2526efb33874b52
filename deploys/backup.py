"""pgBackRest alone: ``pyinfra -y inventories/lab.py deploys/backup.py``."""

from seawall.components.backup import deploy_backup

deploy_backup()
