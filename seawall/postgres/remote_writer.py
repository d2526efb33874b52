"""The drills' bounded writer (``writer.py``), run on an app host over SSH from here.

The Postgres drill and the restore drill both use it. It reaches hosts through
``seawall.ssh`` and imports nothing of the lab: the restore drill runs against
production inventories too.
"""

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from seawall import secrets
from seawall.errors import SeawallError
from seawall.inventory import Topology
from seawall.names import role_secret
from seawall.ssh import ssh_args


class Writer:
    """The bounded writer on an app host, over SSH; its password travels on stdin only."""

    def __init__(self, topology: Topology, host: str, settings: dict[str, Any]) -> None:
        # Its source runs on the app host; psycopg stays off the controller's import path.
        program = Path(__file__).with_name("writer.py").read_text()
        command = f"timeout {int(settings['max_seconds']) + 30} python3 -c {shlex.quote(program)}"
        self.process = subprocess.Popen(
            [*ssh_args(topology, host), command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(settings) + "\n")
        self.process.stdin.flush()
        self.timeout = settings["max_seconds"] + 40

    def stop(self, early: bool = True) -> dict[str, Any]:
        """Return the writer's result; ``early`` asks it to stop now rather than at its bounds."""
        try:
            assert self.process.stdin is not None
            if early:
                self.process.stdin.write("stop\n")
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            out, err = self.process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise SeawallError("the drill writer did not finish in time") from None
        if self.process.returncode != 0:
            raise SeawallError(f"the drill writer failed: {err.strip()[-500:]}")
        return dict(json.loads(out.strip().splitlines()[-1]))


def role_password(topology: Topology, role: str) -> str:
    """The password of service role ``role``, from the inventory's secrets source.

    Raises:
        SeawallError: the secret is in neither the secrets file nor the environment.
    """
    secret, first = role_secret(role), topology.hosts[0]
    return secrets.require([secret], first.data.get("secrets_file"), first.name)[secret]


def writer_settings(topology: Topology, mode: str, run: str, max_seconds: float) -> dict[str, Any]:
    data = topology.group("app")[0].data
    role = str(data["postgres_drill_role"])
    return {
        "mode": mode,
        "run": run,
        "host": "127.0.0.1",
        "port": data["pgbouncer_port"],
        "dbname": data["postgres_drill_database"],
        "user": role,
        "password": role_password(topology, role),
        "interval": 0.01,
        "max_rows": 50000,
        "max_seconds": max_seconds,
    }
