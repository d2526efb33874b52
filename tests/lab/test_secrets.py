"""No lab secret shows anywhere it could leak (issue 14, item 4).

Every value of the lab's secrets (the inventory's ``secrets_file``, the
environment winning, as the deploy reads them) is searched for in:

- every host's whole journal, and the central one on the ops host;
- every host's process list (``ps -eww -o args``) and ``systemctl show`` of
  every unit it knows (loaded or only installed);
- pyinfra's output: a dry run with ``--diff -vv --json`` while secret files are
  out of date (so their operations are pending and would be diffed), then the
  real deploy that rewrites them, with ``-vv --json``;
- every seawall report: ``drift --json`` (in the same tampered state, so it has
  drift to name), ``status --json`` and ``verify --json``, stdout and stderr;
- ``git log -p`` of the repository, every branch.

The search on a host runs there: the values travel on ssh's standard input
into a 0700 temporary directory, never on a command line, and only the names of
the secrets found come back. A failure names the secret and where, never the
value. ``test_log_fields.py`` already sends a token through the gateway and
searches the journals for it; this test searches them for the deploy's own
secrets instead.
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall import secrets
from seawall.components.pgbackrest import CONFIG as PGBACKREST_CONF
from seawall.components.pgroute import PGBOUNCER_USERS
from seawall.components.redis import MANAGED_CONF
from seawall.drift import parse_plan
from seawall.facts.redis import REDIS_CLI_AUTH
from seawall.inventory import Topology
from seawall.lab.faults import DATA_FAULT_LOCK, app_fault_lock, exclusive_lock
from seawall.names import CENTRAL_JOURNAL
from seawall.netguard import require_lab_network
from seawall.ssh import run as ssh
from seawall.ssh import ssh_args
from tests.lab.conftest import PYINFRA, ROOT, changed_operations, run_site_deploy

SEAWALL = str(Path(sys.executable).with_name("seawall"))
LOCK_WAIT_S = 600
TAMPER = "seawall-test-secrets-tampered"

# Run on a host: secrets arrive on stdin as name<TAB>value lines; for each source
# the script prints "<source> bytes <n>" (not vacuous: the source was read) and
# "<source> found <name>" per secret in it. Values never leave the 0700 directory.
SEARCH = r"""
set -u
umask 077
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cat > "$d/pairs"
cut -f2- "$d/pairs" > "$d/values"
search() {
    printf '%s bytes %s\n' "$1" "$(wc -c < "$d/src")"
    grep -aoF -f "$d/values" "$d/src" | sort -u > "$d/hits"
    awk -F'\t' -v src="$1" 'NR==FNR {hit[$0]=1; next} ($2 in hit) {print src, "found", $1}' \
        "$d/hits" "$d/pairs"
}
journalctl --no-pager -o export --all > "$d/src" 2>/dev/null; search journal
if [ -d CENTRAL ]; then
    journalctl --no-pager -o export --all -D CENTRAL > "$d/src" 2>/dev/null; search central
fi
ps -eww -o args > "$d/src"; search ps
{ systemctl list-units --all --plain --no-legend --full; \
  systemctl list-unit-files --no-legend --full; } | awk '{print $1}' | grep -v '@\.' \
  | sort -u > "$d/units"
xargs systemctl show -- < "$d/units" > "$d/src" 2>/dev/null; search units
cat CONTROL > "$d/src" 2>/dev/null; search control
"""
# Files that hold secrets by design: the search must find them there (it works).
CONTROL_FILES = (REDIS_CLI_AUTH, PGBOUNCER_USERS, "/etc/seawall/secrets/*.env", PGBACKREST_CONF)


def lab_secrets(topology: Topology) -> dict[str, str]:
    """Every secret any lab host needs, as the deploy resolves them."""
    names = sorted({name for host in topology for name in host.required_secrets})
    values = secrets.require(names, topology.value("secrets_file"), "lab")
    assert len(values) >= 5, sorted(values)
    return values


def found_in(values: dict[str, str], text: str) -> list[str]:
    """Return the names (never the values) of the secrets ``text`` holds."""
    return sorted(name for name, value in values.items() if value in text)


def search_host(topology: Topology, host: str, values: dict[str, str]) -> dict[str, list[str]]:
    """Search ``host``'s sources; return {source: names found}, with ``bytes`` per source."""
    require_lab_network(topology)
    script = SEARCH.replace("CENTRAL", CENTRAL_JOURNAL).replace("CONTROL", " ".join(CONTROL_FILES))
    pairs = "".join(f"{name}\t{value}\n" for name, value in values.items())
    result = subprocess.run(
        [*ssh_args(topology, host), script],
        input=pairs,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{host}: search failed: {result.stderr.strip()[-2000:]}"
    report: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        source, kind, rest = line.split(" ", 2)
        report.setdefault(source, [])
        if kind == "bytes":
            assert int(rest) > 0 or source == "control", f"{host}: {source} was empty"
        else:
            report[source].append(rest)
    return report


@pytest.fixture(scope="module")
def values(deployed_lab: Topology) -> dict[str, str]:
    return lab_secrets(deployed_lab)


def seawall_report(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SEAWALL, *args, "-i", "inventories/lab.py", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def outputs(deployed_lab: Topology) -> Iterator[dict[str, str]]:
    """pyinfra's and seawall's outputs, collected with secret files out of date.

    A comment line is appended to PgBouncer's userlist on the app hosts and to
    Redis's managed settings on the Redis hosts (both files take comments; Redis
    reads its file only at a restart), so their operations are pending: drift
    names them, the dry run would diff them, the real deploy rewrites them.
    """
    collected: dict[str, str] = {}
    # host -> (file, its comment mark)
    tampered = {
        **{h.name: (PGBOUNCER_USERS, ";;") for h in deployed_lab.group("app")},
        **{h.name: (MANAGED_CONF, "#") for h in deployed_lab.group("redis")},
    }
    with exclusive_lock(DATA_FAULT_LOCK, timeout=LOCK_WAIT_S), app_fault_lock(LOCK_WAIT_S):
        try:
            for host, (path, mark) in tampered.items():
                ssh(deployed_lab, host, f"printf '{mark} {TAMPER}\\n' >> {path}", check=True)
            drift = seawall_report("drift")
            collected["seawall drift --json"] = drift.stdout + drift.stderr
            assert drift.returncode == 1, drift.stderr[-4000:]
            drifted = json.loads(drift.stdout)["drift"]
            assert set(tampered) <= set(drifted), drifted

            # One dry run for --diff, -vv and --json together; no -y, which turns a
            # dry run's change detection off (as seawall drift runs it).
            dry = subprocess.run(
                [
                    PYINFRA,
                    "--dry",
                    "--diff",
                    "-vv",
                    "--json",
                    "inventories/lab.py",
                    "deploys/site.py",
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=1200,
            )
            collected["pyinfra --dry --diff -vv --json"] = dry.stdout + dry.stderr
            assert dry.returncode == 0, dry.stderr[-4000:]
            pending = parse_plan(dry.stdout)
            for host in tampered:
                # pyinfra prefixes "deploy file | deploy name | " to each operation.
                ops = [op.rsplit(" | ", 1)[-1] for op in pending.get(host, [])]
                assert any(
                    name in ops
                    for name in (
                        "Give PgBouncer the service roles' logins",
                        "Write the settings seawall manages for Redis",
                    )
                ), (host, pending.get(host))
        finally:
            # The real deploy puts the files back (and is searched too).
            real = run_site_deploy("-vv", "--json")
            collected["pyinfra -vv --json"] = real.stdout + real.stderr
        rewritten = changed_operations(real)
        assert any(
            op.endswith(" | Give PgBouncer the service roles' logins") for op in rewritten
        ), sorted(rewritten)
        for host, (path, _) in tampered.items():
            left = ssh(deployed_lab, host, f"grep -c {TAMPER} {path}")
            assert left.stdout.strip() == "0", f"{host}: {path} still tampered"

        status = seawall_report("status", timeout=300)
        collected["seawall status --json"] = status.stdout + status.stderr
        verify = seawall_report("verify", timeout=300)
        collected["seawall verify --json"] = verify.stdout + verify.stderr
        for name, result in (("status", status), ("verify", verify)):
            json.loads(result.stdout)  # a report was produced, not an error message
            assert result.returncode in (0, 1), f"{name}: {result.stderr[-2000:]}"
    yield collected


def test_no_secret_in_pyinfra_output_or_seawall_reports(
    values: dict[str, str], outputs: dict[str, str]
) -> None:
    leaks = {source: found_in(values, text) for source, text in outputs.items()}
    assert {source: names for source, names in leaks.items() if names} == {}
    # Not vacuous: the verbose runs printed the commands of the secret files' operations.
    assert "seawall-staging" in outputs["pyinfra -vv --json"]


def test_no_secret_in_any_journal_process_list_or_unit_property(
    deployed_lab: Topology, values: dict[str, str], outputs: dict[str, str]
) -> None:
    # After ``outputs``: the journals then hold a deploy that rewrote secret files.
    leaks: dict[str, list[str]] = {}
    control: dict[str, list[str]] = {}
    searched: dict[str, list[str]] = {}
    for host in deployed_lab:
        report = search_host(deployed_lab, host.name, values)
        control[host.name] = report.pop("control", [])
        searched[host.name] = sorted(report)
        for source, names in report.items():
            if names:
                leaks[f"{host.name} {source}"] = names
    assert leaks == {}
    for host in deployed_lab:
        assert {"journal", "ps", "units"} <= set(searched[host.name]), host.name
    ops = deployed_lab.group("ops")[0].name
    assert "central" in searched[ops], f"{ops}: {CENTRAL_JOURNAL} is missing"
    # The search finds a secret where one is meant to be (the files holding them).
    for host in [*deployed_lab.group("app"), *deployed_lab.group("redis")]:
        assert control[host.name], f"{host.name}: the search found no secret in its secret files"
    assert "pgbackrest_cipher_pass" in control[ops], control[ops]


def test_no_secret_in_git_history(values: dict[str, str]) -> None:
    history = subprocess.run(
        ["git", "log", "-p", "--all", "--no-color"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        check=True,
        timeout=600,
    ).stdout
    assert len(history) > 100_000  # the whole history was read
    assert found_in(values, history) == []
