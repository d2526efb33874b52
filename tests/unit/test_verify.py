"""seawall.verify's judgement of what hosts answer (no host needed)."""

import subprocess
from typing import Any

from seawall import defaults
from seawall.verify import (
    CHECKS,
    Check,
    HostReport,
    Probe,
    VerifyReport,
    judge,
    parse_probes,
    parse_sshd_t,
    probe_script,
)

DATA: dict[str, Any] = defaults.all_defaults() | {"apt_proxy": "http://10.77.0.1:3142"}
ROLES = ["redis", "sentinel"]

SSHD_T = """\
port 22
logingracetime 30
maxauthtries 3
permitrootlogin without-password
passwordauthentication no
kbdinteractiveauthentication no
permitemptypasswords no
x11forwarding no
"""


def healthy(container: str = "lxc", **changes: Probe) -> dict[str, Probe]:
    probes = {
        "container": Probe(0, container),
        "timezone": Probe(0, "UTC"),
        "timesyncd": Probe(0, "active\nyes"),
        "apt": Probe(0, f'Acquire::http::Proxy "{DATA["apt_proxy"]}";'),
        "sshd": Probe(0, SSHD_T),
        "journald": Probe(0, "[Journal]\n#Storage=auto\n[Journal]\nStorage=persistent"),
        "journal_file": Probe(0, ""),
        "roles": Probe(0, "# /etc/seawall/roles - managed by seawall\nredis\nsentinel"),
        "sysctl": Probe(
            0, "net.core.somaxconn = 1024\nvm.overcommit_memory = 1\nvm.swappiness = 1"
        ),
        "thp": Probe(0, "always madvise [never]"),
    }
    return probes | changes


ADMIN_OK = Probe(0, "seawall")


def failed(checks: tuple[Check, ...]) -> list[str]:
    return [check.name for check in checks if not check.ok]


def test_probe_script_output_splits_back_per_probe() -> None:
    script = probe_script({"one": "echo a; echo b", "two": "echo oops >&2; false", "three": ":"})
    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert parse_probes(output) == {
        "one": Probe(0, "a\nb"),
        "two": Probe(1, "oops"),
        "three": Probe(0, ""),
    }


def test_a_healthy_container_passes_every_check_in_order() -> None:
    checks = judge(DATA, ROLES, healthy(), ADMIN_OK)
    assert [check.name for check in checks] == list(CHECKS)
    assert failed(checks) == []
    assert "skipped: container (lxc)" in checks[CHECKS.index("kernel tuning")].detail


def test_a_real_host_is_held_to_its_kernel_settings() -> None:
    probes = healthy("none", sysctl=Probe(0, "vm.overcommit_memory = 0"))
    checks = judge(DATA, ROLES, probes, ADMIN_OK)
    assert failed(checks) == ["kernel tuning"]
    assert "vm.overcommit_memory=0 (want 1)" in checks[-1].detail


def test_a_real_host_needs_timesyncd_running() -> None:
    checks = judge(DATA, ROLES, healthy("none", timesyncd=Probe(3, "inactive\nno")), ADMIN_OK)
    assert failed(checks) == ["time sync"]


def test_sshd_with_passwords_fails() -> None:
    sshd = Probe(0, SSHD_T.replace("passwordauthentication no", "passwordauthentication yes"))
    checks = judge(DATA, ROLES, healthy(sshd=sshd), ADMIN_OK)
    assert failed(checks) == ["sshd keys only"]
    assert "passwordauthentication yes (want no)" in checks[CHECKS.index("sshd keys only")].detail


def test_sshd_t_keeps_the_first_value() -> None:
    assert parse_sshd_t("PermitRootLogin no\npermitrootlogin yes")["permitrootlogin"] == "no"


def test_journal_in_memory_fails() -> None:
    probes = healthy(
        journald=Probe(0, "[Journal]\nStorage=persistent\n[Journal]\nStorage=volatile"),
        journal_file=Probe(1, ""),
    )
    assert failed(judge(DATA, ROLES, probes, ADMIN_OK)) == ["journal persistent"]


def test_wrong_roles_proxy_timezone_and_admin_fail() -> None:
    probes = healthy(
        roles=Probe(0, "redis"),
        apt=Probe(0, ""),
        timezone=Probe(0, "Etc/UTC"),
    )
    admin = Probe(255, "seawall@10.77.0.11: Permission denied (publickey).")
    checks = judge(DATA, ROLES, probes, admin)
    assert failed(checks) == ["timezone", "apt proxy", "admin login", "role marker"]


def test_report_renders_rows_json_and_text() -> None:
    report = VerifyReport(
        (
            HostReport("data-1", (Check("timezone", True, "UTC"),)),
            HostReport("app-1", (Check("timezone", False, "Etc/UTC"),)),
        )
    )
    assert not report.ok
    assert report.rows() == [
        ("data-1", "timezone", "ok", "UTC"),
        ("app-1", "timezone", "FAIL", "Etc/UTC"),
    ]
    assert report.to_json()["hosts"]["app-1"] == {
        "ok": False,
        "checks": [{"name": "timezone", "ok": False, "detail": "Etc/UTC"}],
    }
    assert report.to_text().endswith("1/2 checks hold on 2 hosts")
