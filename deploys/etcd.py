"""The etcd cluster alone: ``pyinfra -y inventories/lab.py deploys/etcd.py``."""

from seawall.components.etcd import deploy_etcd

deploy_etcd()
