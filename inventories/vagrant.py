"""The production topology as seven Vagrant machines (vagrant-lxc) beside the lab.

`vagrant up --provider=lxc` (Vagrantfile) creates them on the lab's bridge and
ends by deploying deploys/site.py to this inventory and verifying it. They are
in the `lab` group, so the lab's group data applies (bridge, apt proxy, secrets,
the key root logs in with); only their addresses and host keys are their own.
"""

from pathlib import Path

from seawall.inventory import check_before_connect

check_before_connect(__file__)

# On the lab's network, apart from the lab's own hosts (.11 to .41).
_ADDRESSES = {
    "data-1": "10.77.0.111",
    "data-2": "10.77.0.112",
    "data-3": "10.77.0.113",
    "app-1": "10.77.0.121",
    "app-2": "10.77.0.122",
    "gw-1": "10.77.0.131",
    "ops-1": "10.77.0.141",
}

# A machine draws new host keys whenever it is created: its own known_hosts,
# beside Vagrant's state, trusts a new machine's key once (the Vagrantfile
# forgets a machine's key when it is destroyed).
_KNOWN_HOSTS = str(Path(__file__).resolve().parents[1] / ".vagrant" / "known_hosts")

all = [
    (
        name,
        {
            "ssh_hostname": address,
            "private_address": address,
            "ssh_known_hosts_file": _KNOWN_HOSTS,
            "ssh_strict_host_key_checking": "accept-new",
            # `vagrant ssh` (and Vagrant's own provisioning) logs in as vagrant.
            "sshd_allow_users_extra": ["vagrant"],
        },
    )
    for name, address in _ADDRESSES.items()
]

lab = list(_ADDRESSES)
redis = ["data-1", "data-2", "data-3"]
sentinel = ["data-1", "data-2", "data-3"]
etcd = ["data-1", "data-2", "data-3"]
postgres = ["data-1", "data-2"]
app = ["app-1", "app-2"]
gateway = ["gw-1"]
ops = ["ops-1"]
