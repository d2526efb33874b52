"""The lab: the production topology as seven LXC system containers (`seawall lab up`).

Addresses are on the bridge the lab creates (group_data/lab.py); nothing else
in seawall states them.
"""

from seawall.inventory import check_before_connect

# First, before pyinfra goes on: it runs this whole file and its group data
# itself, so a Python error in them, like any invalid key, stops the run with
# one line naming file and key (exit 2) before a host is contacted.
check_before_connect(__file__)

_ADDRESSES = {
    "data-1": "10.77.0.11",
    "data-2": "10.77.0.12",
    "data-3": "10.77.0.13",
    "app-1": "10.77.0.21",
    "app-2": "10.77.0.22",
    "gw-1": "10.77.0.31",
    "ops-1": "10.77.0.41",
}

# Lab hosts are reached at their private address itself.
all = [
    (name, {"ssh_hostname": address, "private_address": address})
    for name, address in _ADDRESSES.items()
]

redis = ["data-1", "data-2", "data-3"]
sentinel = ["data-1", "data-2", "data-3"]
etcd = ["data-1", "data-2", "data-3"]
postgres = ["data-1", "data-2"]
app = ["app-1", "app-2"]
gateway = ["gw-1"]
ops = ["ops-1"]
