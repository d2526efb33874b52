"""The lab: the production topology as LXC system containers on one machine."""

from seawall.lab.config import LabConfig, LabHost, lab_config
from seawall.lab.lifecycle import LabReport, down, status, up

__all__ = ["LabConfig", "LabHost", "LabReport", "down", "lab_config", "status", "up"]
