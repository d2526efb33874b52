"""Restart services that hang: ``python3 -m seawall.runtime.healthwatch --config FILE``.

Every ``interval`` seconds it asks each running service's /health. Any HTTP
answer counts as alive (a 503 DOWN because Redis is away is not a hang: a
restart would not help). No answer within ``timeout`` ``failures`` times in a
row means hung: the unit is sent SIGKILL, so systemd's Restart=on-failure
starts it again and its ExecStopPost records the failure.

Only the standard library and systemctl.
"""

import argparse
import json
import logging
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seawall.runtime import jsonlog

log = logging.getLogger("healthwatch")


@dataclass(frozen=True)
class Watched:
    unit: str
    url: str


@dataclass
class Settings:
    services: list[Watched]
    interval: float = 3.0
    timeout: float = 4.0
    failures: int = 3

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Settings":
        return cls(
            services=[Watched(s["unit"], s["url"]) for s in raw["services"]],
            interval=float(raw.get("interval", 3.0)),
            timeout=float(raw.get("timeout", 4.0)),
            failures=int(raw.get("failures", 3)),
        )


def answers(url: str, timeout: float) -> bool:
    """Return True if ``url`` gives any HTTP answer within ``timeout``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def is_running(unit: str) -> bool:
    """True when the unit is active (started and, for Type=notify, ready)."""
    state = subprocess.run(
        ["systemctl", "show", "-p", "ActiveState", "--value", unit],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return state == "active"


def kill(unit: str) -> None:
    """SIGKILL the unit's processes: Restart=on-failure starts it again."""
    subprocess.run(["systemctl", "kill", "--signal=SIGKILL", unit], check=False)


@dataclass
class Watcher:
    settings: Settings
    misses: dict[str, int] = field(default_factory=dict)
    running: Callable[[str], bool] = is_running
    restart: Callable[[str], None] = kill

    def check(self, service: Watched) -> None:
        if not self.running(service.unit):
            # Stopped, starting or restarting: systemd is already on it.
            self.misses[service.unit] = 0
            return
        if answers(service.url, self.settings.timeout):
            self.misses[service.unit] = 0
            return
        count = self.misses.get(service.unit, 0) + 1
        self.misses[service.unit] = count
        log.warning(
            "%s gave no answer on %s (%d of %d)",
            service.unit,
            service.url,
            count,
            self.settings.failures,
            extra={"unit": service.unit, "misses": count},
        )
        if count >= self.settings.failures:
            log.error(
                "%s is hung: killing it so systemd restarts it",
                service.unit,
                extra={"unit": service.unit, "event": "hung"},
            )
            self.restart(service.unit)
            self.misses[service.unit] = 0

    def run_once(self, pool: ThreadPoolExecutor) -> None:
        list(pool.map(self.check, self.settings.services))

    def run_forever(self) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(self.settings.services))) as pool:
            while True:
                started = time.monotonic()
                self.run_once(pool)
                time.sleep(max(0.0, self.settings.interval - (time.monotonic() - started)))


def main() -> None:
    parser = argparse.ArgumentParser(description="Restart platform services that hang.")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    jsonlog.configure("healthwatch")
    settings = Settings.from_dict(json.loads(Path(args.config).read_text()))
    log.info("watching %d services", len(settings.services))
    Watcher(settings).run_forever()


if __name__ == "__main__":
    main()
