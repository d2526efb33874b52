"""DebInstallState's command, run here: dpkg answers for the named packages only, a name it
never saw does not hide the others, and the policy-rc.d probe tells ours from another's."""

import subprocess
from pathlib import Path

import pytest

from seawall.components import common
from seawall.facts.deb import DebInstallState


def _gather(policy: Path) -> dict[str, object]:
    fact = DebInstallState()
    command = fact.command(
        ["coreutils", "seawall-no-such-package", "dpkg"], str(policy), common._POLICY_MARKER
    )
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return fact.process(done.stdout.splitlines())


@pytest.mark.parametrize(
    ("content", "verdict"),
    [(None, None), (common._POLICY_RC_D_SCRIPT, "ours"), ("#!/bin/sh\nexit 0\n", "other")],
)
def test_installed_versions_and_policy(tmp_path: Path, content: str | None, verdict: str) -> None:
    policy = tmp_path / "policy-rc.d"
    if content is not None:
        policy.write_text(content)
    state = _gather(policy)
    # coreutils and dpkg are Essential: installed on every Debian controller.
    expected = {
        name: subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, check=True
        ).stdout
        for name in ("coreutils", "dpkg")
    }
    assert state == {"installed": expected, "policy_rc_d": verdict}
