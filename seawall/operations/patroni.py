"""Drive a Patroni cluster through ``patronictl``: wait for a leader, keep its shared settings."""

import json
import shlex
from collections.abc import Mapping
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.api.exceptions import DeployError

from seawall.facts.patroni import PatroniCluster, PatroniDynamicConfig, running_leader


def config_differences(current: Any, desired: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Return the dotted keys of ``desired`` whose value ``current`` lacks or differs in.

    Scalars compare as lower-case text: Patroni stores what YAML gave it
    (``on``, ``true``, ``5s``), and ``True`` and ``"true"`` mean the same to it.
    """
    found: list[str] = []
    current = current if isinstance(current, Mapping) else {}
    for key, want in desired.items():
        have = current.get(key)
        if isinstance(want, Mapping):
            found += config_differences(have, want, f"{prefix}{key}.")
        elif have is None or str(have).lower() != str(want).lower():
            found.append(f"{prefix}{key}")
    return found


@operation()
def patroni_leader(config: str, timeout: int = 120):
    """
    Wait until the Patroni cluster has a running leader.

    + config: Patroni configuration file
    + timeout: seconds to wait before failing

    **Example:**

    .. code:: python

        patroni_leader(name="Wait for a leader", config="/etc/patroni/15-main.yml")
    """
    if running_leader(host.get_fact(PatroniCluster, config=config)):
        host.noop("the cluster has a running leader")
        return
    check = (
        "import json,subprocess,sys,time\n"
        f"end = time.monotonic() + {int(timeout)}\n"
        "while time.monotonic() < end:\n"
        f"    out = subprocess.run(['patronictl', '-c', {config!r}, 'list', '-f', 'json'],"
        " capture_output=True, text=True).stdout\n"
        "    try:\n"
        "        members = json.loads(out or '[]')\n"
        "    except ValueError:\n"
        "        members = []\n"
        "    if any(m.get('Role') == 'Leader' and m.get('State') == 'running'"
        " for m in members):\n"
        "        sys.exit(0)\n"
        "    time.sleep(1)\n"
        f"sys.exit('no running Patroni leader within {int(timeout)} s')\n"
    )
    yield f"python3 -c {shlex.quote(check)}"


@operation()
def patroni_dynamic_config(config: str, desired: dict[str, Any]):
    """
    Make Patroni's dynamic configuration hold ``desired``, through ``patronictl edit-config``.

    + config: Patroni configuration file
    + desired: the settings to hold (nested as in ``patronictl show-config``); others stay

    Settings Postgres applies only at a restart are reported by Patroni as
    pending; this operation never restarts anything.

    **Example:**

    .. code:: python

        patroni_dynamic_config(
            name="Keep the cluster's settings",
            config="/etc/patroni/15-main.yml",
            desired={"loop_wait": 2},
        )
    """
    current = host.get_fact(PatroniDynamicConfig, config=config)
    if current is None:
        raise DeployError(f"{host.name}: Patroni has no dynamic configuration (is etcd up?)")
    differences = config_differences(current, desired)
    if not differences:
        host.noop("Patroni's dynamic configuration already matches")
        return
    host.log(f"changing Patroni settings: {', '.join(differences)}")
    patch = host.get_temp_filename("patroni-patch")
    yield FileUploadCommand(StringIO(json.dumps(desired)), patch, remote_temp_filename=patch)
    yield (
        f"patronictl -c {shlex.quote(config)} edit-config --force --quiet "
        f"--apply {shlex.quote(patch)}; status=$?; rm -f {shlex.quote(patch)}; exit $status"
    )
