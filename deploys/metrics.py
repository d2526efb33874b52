"""Exporters and Prometheus alone: ``pyinfra -y inventories/lab.py deploys/metrics.py``."""

from seawall.components.metrics import deploy_metrics

deploy_metrics()
