"""Load seawall's nftables table with a timed rollback, and cancel the rollback once confirmed."""

import shlex

from pyinfra import host
from pyinfra.api import operation

from seawall.facts import memo
from seawall.facts.firewall import ROLLBACK_UNIT, TABLE, FirewallState, is_loaded

# Where the live table is saved before a new one is loaded (root-only).
STATE_DIR = "/var/lib/seawall/firewall"
SAVED = f"{STATE_DIR}/rollback.nft"


def _comment_check(comment: str) -> str:
    """A command that fails unless the live table carries ``comment`` (as FirewallState reads)."""
    line = shlex.quote(f'\tcomment "{comment}"')
    return f"nft list table inet {TABLE} | grep -qxF {line}"


@operation()
def ruleset_loaded(path: str, comment: str, rollback_seconds: int, boot_file: str | None = None):
    """
    Load an nft file that replaces table ``inet seawall`` whole, unless the live table is it.

    + path: the ruleset file (already checked with ``nft -c``); it starts by
      creating and deleting the table, so one ``nft -f`` replaces it atomically
      and leaves every other table alone
    + comment: the comment the file gives the table (``seawall <digest>``): a live
      table carrying it is this ruleset, and nothing is done
    + rollback_seconds: before loading, the live table (or its absence) is saved
      and a transient timer restores it this many seconds later, unless
      ``rollback_cancelled`` stops it first
    + boot_file: the file loaded at boot (``path`` if None); the rollback puts
      the saved table there too, so a reboot after it keeps the restored one

    **Example:**

    .. code:: python

        ruleset_loaded(
            name="Load the firewall ruleset (rolled back in 90 s unless confirmed)",
            path="/etc/seawall/firewall.nft",
            comment="seawall 3f2a9c0d1e2b4a5c",
            rollback_seconds=90,
        )
    """
    if is_loaded(host.get_fact(FirewallState), comment):
        host.noop(f"firewall ruleset {comment} is already loaded")
        return
    saved, new = shlex.quote(SAVED), shlex.quote(f"{SAVED}.new")
    boot = shlex.quote(boot_file or path)
    yield f"install -d -m 700 -o root -g root {shlex.quote(STATE_DIR)}"
    # A rollback an interrupted deploy left pending would restore an older table
    # in the middle of this one: it goes, and this load schedules its own.
    yield (
        f"systemctl stop {ROLLBACK_UNIT}.timer {ROLLBACK_UNIT}.service 2>/dev/null; "
        f"systemctl reset-failed {ROLLBACK_UNIT}.timer {ROLLBACK_UNIT}.service 2>/dev/null; true"
    )
    # The saved file replaces the table as the ruleset does; with no table
    # before, restoring it removes the table (the host was open before).
    yield (
        f"{{ printf 'table inet {TABLE}\\ndelete table inet {TABLE}\\n'; "
        f"if nft list tables inet | grep -qx 'table inet {TABLE}'; then "
        f"nft list table inet {TABLE} || exit 1; fi; }} > {new} && mv -f {new} {saved}"
    )
    restore = f"nft -f {saved} && cp {saved} {boot}"
    yield (
        f"systemd-run --quiet --unit={ROLLBACK_UNIT} --on-active={int(rollback_seconds)}s "
        "--timer-property=AccuracySec=1s "
        f"--description={shlex.quote('Restore the firewall table saved before a deploy')} "
        f"/bin/sh -c {shlex.quote(restore)}"
    )
    yield f"nft -f {shlex.quote(path)}"


@operation()
def rollback_cancelled(comment: str, scheduled: bool = False):
    """
    Cancel a pending firewall rollback, failing if it already restored the old table.

    + comment: the comment of the table this deploy loaded (or found loaded)
    + scheduled: whether an earlier operation of this deploy scheduled one; a
      rollback an interrupted deploy left pending is cancelled too

    Call it only once the deploy has shown it still reaches the host with a new
    connection: until then the rollback must stay armed.

    **Example:**

    .. code:: python

        rollback_cancelled(
            name="Keep the new firewall ruleset (cancel its rollback)",
            comment="seawall 3f2a9c0d1e2b4a5c",
            scheduled=loaded.will_change,
        )
    """
    # The deploy asked this before any operation (seawall.facts.memo); a rollback is
    # armed only by a load, which runs commands here and so drops that answer.
    if not scheduled and not memo.get_fact(host, FirewallState)["rollback_pending"]:
        host.noop("no firewall rollback is pending")
        return
    # Not loaded (already collected) counts as stopped; the table check decides.
    yield (
        f"systemctl stop {ROLLBACK_UNIT}.timer 2>/dev/null; "
        f"! systemctl is-active --quiet {ROLLBACK_UNIT}.timer"
    )
    # A deploy slower than the rollback: the old table is back, and this must fail.
    yield (
        f"{_comment_check(comment)} || {{ echo 'the firewall rollback already restored "
        "the previous table: this deploy did not confirm the new one in time' >&2; exit 1; }"
    )
    yield f"rm -f {shlex.quote(SAVED)}"
