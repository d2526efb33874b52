"""Commands on inventory hosts over SSH (lab or production), with their key and known_hosts.

Pyinfra-free and outside ``seawall.lab``: verify, restore and the tunnel use it on
production inventories; a lab inventory passes ``seawall.netguard`` first.
"""

import subprocess

from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.netguard import require_lab_network


def ssh_args(topology: Topology, host_name: str, user: str | None = None) -> list[str]:
    """Return the ssh command line that reaches ``host_name`` as pyinfra does."""
    data = topology.host(host_name).data
    args = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
    if data.get("ssh_key"):
        args += ["-i", str(data["ssh_key"]), "-o", "IdentitiesOnly=yes"]
    if data.get("ssh_known_hosts_file"):
        args += ["-o", f"UserKnownHostsFile={data['ssh_known_hosts_file']}"]
        args += ["-o", "GlobalKnownHostsFile=/dev/null"]
    if data.get("ssh_strict_host_key_checking"):
        args += ["-o", f"StrictHostKeyChecking={data['ssh_strict_host_key_checking']}"]
    if data.get("ssh_port"):
        args += ["-p", str(data["ssh_port"])]
    login = user or data.get("ssh_user") or "root"
    hostname = data.get("ssh_hostname") or host_name
    return [*args, "-l", str(login), str(hostname)]


def run(
    topology: Topology,
    host_name: str,
    command: str,
    *,
    user: str | None = None,
    timeout: float = 60,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on a host over SSH.

    Raises:
        SeawallError: it ran past ``timeout``, or failed when ``check``.
    """
    require_lab_network(topology)
    args = [*ssh_args(topology, host_name, user), command]
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SeawallError(f"{host_name}: `{command}` did not finish within {timeout} s") from None
    if check and result.returncode != 0:
        raise SeawallError(
            f"{host_name}: `{command}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result
