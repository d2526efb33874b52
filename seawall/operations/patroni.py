"""Drive a Patroni cluster through ``patronictl``: wait for a leader, keep its shared settings,
pause it, restart its members onto a new store, resume it."""

import json
import posixpath
import shlex
from collections.abc import Mapping
from io import StringIO
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import OperationError, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import File

from seawall.facts import memo
from seawall.facts.etcd import EtcdHealth
from seawall.facts.patroni import (
    PatroniCluster,
    PatroniDynamicConfig,
    PatroniMode,
    patroni_mode_probe,
    running_leader,
)
from seawall.operations.ssh import unreachable


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


# --- maintenance mode ------------------------------------------------------------------
#
# Each member: (inventory name, its Patroni unit, its REST API ``address:port``).
Member = tuple[str, str, str]


def patroni_modes(members: list[Member]) -> dict[str, str]:
    """Return each member's ``PatroniMode``, asked of its own host when the operation runs;
    ``unreachable`` for a host this run cannot reach."""
    gone = set(unreachable(name for name, _, _ in members))
    return {
        name: "unreachable"
        if name in gone
        else memo.ask_live(inventory.get_host(name), PatroniMode, unit=unit, endpoint=endpoint)
        for name, unit, endpoint in members
    }


def not_paused(members: list[Member]) -> list[str]:
    """Return ``name (mode)`` of each member whose Patroni runs and is not known paused."""
    return [
        f"{name} ({mode})"
        for name, mode in patroni_modes(members).items()
        if mode not in ("paused", "stopped")
    ]


def _all_in(mode: str, endpoints: list[str]) -> str:
    """A shell test: every REST endpoint's Patroni reports ``mode``."""
    return " && ".join(
        f'[ "$({patroni_mode_probe(endpoint)})" = {mode} ]' for endpoint in endpoints
    )


def until(check: str, timeout: int, failure: str) -> str:
    """A shell loop: ``check`` every second until it passes, failing after ``timeout`` s."""
    return (
        f"ok=; for i in $(seq 1 {int(timeout)}); do if {check}; then ok=yes; break; fi; "
        f'sleep 1; done; [ -n "$ok" ] || {{ echo {shlex.quote(failure)} >&2; false; }}'
    )


def _toggle(config: str, verb: str, already: str) -> str:
    """``patronictl pause|resume --wait``; the cluster already so is no failure."""
    return (
        f"out=$(patronictl -c {shlex.quote(config)} {verb} --wait 2>&1); status=$?; "
        f'echo "$out"; [ $status -eq 0 ] || echo "$out" | grep -q {shlex.quote(already)}'
    )


@operation()
def patroni_paused(config: str, members: list[Member], marker: str, timeout: int = 60):
    """
    Put the Patroni cluster in maintenance mode, and wait until every running member says so.

    + config: Patroni configuration file (``patronictl`` reaches the store through it)
    + members: (inventory name, unit, REST ``address:port``) of every Postgres host
    + marker: a file left here when this operation paused the cluster, so
      ``patroni_resumed`` resumes its own pause and never an operator's
    + timeout: seconds every running member has to report the pause

    Paused, Patroni leaves Postgres as it is: it promotes, demotes and stops
    nothing, whether its store goes away or it is itself stopped (Patroni's
    docs/pause.rst, "When Patroni is stopped, it does not stop Postgres").
    A member whose Patroni runs but gives no answer stops the operation:
    nothing can then be known paused.

    **Example:**

    .. code:: python

        patroni_paused(
            name="Pause Patroni (etcd moves to TLS)",
            config="/etc/patroni/15-main.yml",
            members=[("data-1", "patroni@15-main.service", "10.77.0.11:8008")],
            marker="/var/lib/seawall/patroni-paused-by-seawall",
        )
    """
    modes = patroni_modes(members)
    running = {name: mode for name, mode in modes.items() if mode != "stopped"}
    if not running:
        host.noop("no Patroni runs: nothing to pause")
        return
    if all(mode == "paused" for mode in running.values()):
        host.noop("every running Patroni is paused")
        return
    blind = [f"{name} ({mode})" for name, mode in running.items() if mode == "unknown"]
    blind += [f"{name} ({mode})" for name, mode in running.items() if mode == "unreachable"]
    if blind:
        raise OperationError(
            f"Patroni on {', '.join(blind)} gives no answer: the cluster cannot be known paused"
        )
    # First: a deploy cut right after the pause still knows the pause is its own.
    quoted = shlex.quote(marker)
    yield f"install -d -m 755 {shlex.quote(posixpath.dirname(marker))} && touch {quoted}"
    yield _toggle(config, "pause", "already paused")
    endpoints = [endpoint for name, _, endpoint in members if name in running]
    yield until(
        _all_in("paused", endpoints),
        timeout,
        f"not every running Patroni reported the pause within {int(timeout)} s",
    )


@operation()
def patroni_restarted_on_store(
    unit: str,
    endpoint: str,
    members: list[Member],
    etcd: list[tuple[str, str, str]],
    tls_dir: str,
    tls_group: str,
    marker: str,
    timeout: int = 60,
):
    """
    Restart this host's Patroni onto the store its file now names, only while the cluster
    is paused, and wait for its REST API to answer again.

    + unit: this host's Patroni unit
    + endpoint: its REST API, ``address:port``
    + members: (inventory name, unit, REST ``address:port``) of every Postgres host
    + etcd: (inventory name, client URL over HTTPS, plain metrics ``address:port``)
      of every etcd member
    + tls_dir: this host's etcd TLS directory (``host.key``, ``host.pem``, ``ca.pem``)
    + tls_group: the group Patroni reads its key as (its drop-in's SupplementaryGroups=)
    + marker: this host's "restart pending" file, removed once the restart is done
    + timeout: seconds Patroni has to answer again

    Patroni reads its store's address, protocol and certificates at start only
    (a reload changes none of them). Paused, a stopped Patroni leaves Postgres
    running, and a started one takes Postgres as it finds it (Patroni's
    docs/pause.rst): the leader stays the leader, nothing fails over. So the
    restart is refused while any member runs unpaused. It waits (a no-op; the
    mark keeps the cluster paused) until a majority of the etcd members runs
    its TLS configuration (each asked on its own host: its metrics listener
    exists on TLS only), and it fails unless a majority then answers over
    HTTPS to this host's certificate, read as Patroni reads it (user
    postgres, its TLS group): else the restart would leave Patroni waiting
    for a store it cannot reach, and its REST API (which HAProxy routes by)
    down. It starts answering only once it reached its store.

    **Example:**

    .. code:: python

        patroni_restarted_on_store(
            name="Restart Patroni onto etcd over TLS (the cluster is paused)",
            unit="patroni@15-main.service",
            endpoint="10.77.0.11:8008",
            members=[("data-1", "patroni@15-main.service", "10.77.0.11:8008")],
            etcd=[("data-1", "https://10.77.0.11:2379", "10.77.0.11:2381")],
            tls_dir="/etc/seawall/etcd-tls",
            tls_group="seawall-etcd-tls",
            marker="/var/lib/seawall/patroni-store-restart-pending",
        )
    """
    modes = patroni_modes(members)
    loose = [
        f"{name} ({mode})" for name, mode in modes.items() if mode not in ("paused", "stopped")
    ]
    if loose:
        raise OperationError(
            f"{host.name}: Patroni on {', '.join(loose)} is not paused: restarting Patroni "
            "now could stop Postgres on the leader; the deploy pauses the cluster first"
        )
    if modes.get(host.name) == "stopped":
        # Its start reads the new file; until it runs, its mark keeps the cluster paused.
        host.noop(f"Patroni does not run on {host.name}: nothing to restart")
        return
    gone = set(unreachable(name for name, _, _ in etcd))
    behind = [
        name
        for name, _, metrics in etcd
        if name in gone
        or not memo.ask_live(inventory.get_host(name), EtcdHealth, endpoints=[metrics]).get(metrics)
    ]
    if len(etcd) - len(behind) <= len(etcd) // 2:
        host.noop(
            f"Patroni on {host.name} stays on its store: etcd on {', '.join(behind)} does not "
            "serve TLS yet (or is down); the cluster stays paused until a deploy moves it"
        )
        return
    check = (
        "import json, ssl, sys, urllib.request\n"
        f"urls = {[url for _, url, _ in etcd]!r}\n"
        f"ctx = ssl.create_default_context(cafile={tls_dir + '/ca.pem'!r})\n"
        f"ctx.load_cert_chain({tls_dir + '/host.pem'!r}, {tls_dir + '/host.key'!r})\n"
        "ok = 0\n"
        "for url in urls:\n"
        "    try:\n"
        "        with urllib.request.urlopen(url + '/health', context=ctx, timeout=3) as r:\n"
        "            ok += json.load(r).get('health') == 'true'\n"
        "    except Exception as error:\n"
        "        print(url, error, file=sys.stderr)\n"
        "if ok <= len(urls) // 2:\n"
        "    sys.exit(f'{ok} of {len(urls)} etcd members answer over HTTPS to this host: "
        "Patroni would not reach its store')\n"
    )
    quoted = shlex.quote
    yield (
        f"setpriv --reuid=postgres --regid=postgres --groups={quoted(tls_group)} -- "
        f"python3 -c {quoted(check)}"
    )
    yield f"systemctl restart {quoted(unit)}"
    probe = patroni_mode_probe(endpoint)
    yield until(
        f'[ "$({probe})" != unknown ]',
        timeout,
        f"Patroni on {host.name} did not answer within {int(timeout)} s of its restart",
    )
    yield f"rm -f {quoted(marker)}"


@operation()
def patroni_resumed(
    config: str, members: list[Member], marker: str, restart_marker: str, timeout: int = 60
):
    """
    Take the cluster out of the maintenance mode ``patroni_paused`` put it in, once every
    member runs on its new store.

    + config: Patroni configuration file
    + members: (inventory name, unit, REST ``address:port``) of every Postgres host
    + marker: ``patroni_paused``'s file: without it, a pause is someone else's and stays
    + restart_marker: a Postgres host holding this file still waits for its
      restart onto the new store (``patroni_restarted_on_store``): no resume yet
    + timeout: seconds every member has to report it manages the cluster again

    Resumed, Patroni fails over again: a member still cut from the store, or
    one not answering, could see no leader and take over while the old leader
    runs. So the cluster stays paused (and ``seawall status`` says so) unless
    every member answers paused and none waits for its restart.

    **Example:**

    .. code:: python

        patroni_resumed(
            name="Resume Patroni",
            config="/etc/patroni/15-main.yml",
            members=[("data-1", "patroni@15-main.service", "10.77.0.11:8008")],
            marker="/var/lib/seawall/patroni-paused-by-seawall",
            restart_marker="/var/lib/seawall/patroni-store-restart-pending",
        )
    """
    if not host.get_fact(File, path=marker):
        host.noop("the deploy paused nothing: nothing to resume")
        return
    names = [name for name, _, _ in members]
    gone = unreachable(names)
    waiting = gone + [
        name
        for name in names
        if name not in gone and memo.ask_live(inventory.get_host(name), File, path=restart_marker)
    ]
    if waiting:
        host.noop(
            f"the cluster stays paused: Patroni on {', '.join(waiting)} is not yet restarted "
            "onto its new store"
        )
        return
    modes = patroni_modes(members)
    if all(mode == "managing" for mode in modes.values()):
        yield f"rm -f {shlex.quote(marker)}"
        return
    blind = [
        f"{name} ({mode})" for name, mode in modes.items() if mode not in ("paused", "managing")
    ]
    if blind:
        host.noop(f"the cluster stays paused: Patroni on {', '.join(blind)} is not running paused")
        return
    yield _toggle(config, "resume", "is not paused")
    yield until(
        _all_in("managing", [endpoint for _, _, endpoint in members]),
        timeout,
        f"not every Patroni manages the cluster again within {int(timeout)} s",
    )
    yield f"rm -f {shlex.quote(marker)}"
