"""One shell session per host: every probe's command between markers, split back by name."""

from collections.abc import Mapping
from dataclasses import dataclass

# All of a host's probes run in one SSH session, each between markers, so a
# verify costs two logins per host (one as root, one as the admin), not one per check.
_MARK = "@@seawall-probe"


@dataclass(frozen=True)
class Probe:
    """What one probe command printed (stdout and stderr) and its exit code."""

    code: int
    output: str


def probe_script(commands: Mapping[str, str]) -> str:
    """Return one shell script that runs every probe and marks where each output starts."""
    return "\n".join(
        f"echo '{_MARK} {name}'; {{ {command}; }} 2>&1; echo \"{_MARK}-rc $?\""
        for name, command in commands.items()
    )


def parse_probes(output: str) -> dict[str, Probe]:
    """Split the output of :func:`probe_script` back into one :class:`Probe` per name."""
    probes: dict[str, Probe] = {}
    name: str | None = None
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith(f"{_MARK}-rc ") and name is not None:
            probes[name] = Probe(int(line.split()[-1]), "\n".join(lines).strip())
            name, lines = None, []
        elif line.startswith(f"{_MARK} "):
            name, lines = line.split(" ", 1)[1], []
        else:
            lines.append(line)
    return probes


def probe_of(probes: Mapping[str, Probe], name: str) -> Probe:
    """Return probe ``name``, or a failed one saying it did not run."""
    return probes.get(name, Probe(-1, f"probe {name} did not run"))
