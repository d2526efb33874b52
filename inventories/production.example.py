"""Production: copy to inventories/production.py and fill in your hosts.

`ssh_hostname` is how the controller reaches a host; `private_address` is the
address the services bind to and talk over. Secrets come from the environment
(SEAWALL_SECRET_<NAME>) or the file named by `secrets_file` in
group_data/production.py, never from this file.
"""

from seawall.inventory import check_before_connect

# First, before pyinfra goes on: it runs this whole file and its group data
# itself, so a Python error in them, like any invalid key, stops the run with
# one line naming file and key (exit 2) before a host is contacted.
check_before_connect(__file__)

_HOSTS = {
    "data-1": ("data-1.trading.internal", "10.20.1.11"),
    "data-2": ("data-2.trading.internal", "10.20.1.12"),
    "data-3": ("data-3.trading.internal", "10.20.1.13"),
    "app-1": ("app-1.trading.internal", "10.20.2.21"),
    "app-2": ("app-2.trading.internal", "10.20.2.22"),
    "gw-1": ("gw-1.trading.internal", "10.20.3.31"),
    "ops-1": ("ops-1.trading.internal", "10.20.4.41"),
}

all = [
    (name, {"ssh_hostname": ssh_hostname, "private_address": address})
    for name, (ssh_hostname, address) in _HOSTS.items()
]

# The file group is this file's name; `production` puts the example's hosts in
# the same group a copied production.py would, so group_data/production.py applies.
production = list(_HOSTS)

redis = ["data-1", "data-2", "data-3"]
sentinel = ["data-1", "data-2", "data-3"]
etcd = ["data-1", "data-2", "data-3"]
postgres = ["data-1", "data-2"]
app = ["app-1", "app-2"]
gateway = ["gw-1"]
ops = ["ops-1"]
