"""Logs with native journal fields (issue 12, item 1), asked of the lab's journals.

- a request sent through the gateway with an X-Request-ID is in the answering
  app host's journal as REQUEST_ID (with SERVICE), and in the gateway's journal
  under its access-log tag with the same id;
- a secret-looking token sent in a header, a JSON body and a query string is in
  no lab host's journal, the central one on the ops host included (nor in the
  gateway's access log file).

Every address, port, tag and route comes from the inventory; requests go to the
gateway only once the lab's bridge is known to be up (``require_lab_network``).
"""

import http.client
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from seawall.components.gateway import tls_paths
from seawall.inventory import Host, Topology
from seawall.names import CENTRAL_JOURNAL
from seawall.netguard import require_lab_network
from seawall.settings import setting
from seawall.ssh import run as ssh
from tests.lab.test_services import CATALOGUE, wait_until

# journalctl -o json prints fields over 4096 bytes as null unless --all: a leak
# in a long line must not hide behind that.
JOURNAL_JSON = "journalctl --no-pager -o json --all"


def gateway_host(topology: Topology) -> Host:
    return topology.group("gateway")[0]


def item_service() -> dict[str, Any]:
    """A service behind a prefix route (not the catch-all /), answering GET items/N."""
    return next(s for s in CATALOGUE.values() if s["route"].endswith("/") and s["route"] != "/")


class Gateway:
    """HTTPS to the gateway's address and port from the inventory, one request per connection."""

    def __init__(self, topology: Topology) -> None:
        require_lab_network(topology)  # the bridge is up: lab addresses route to the lab
        self.host = gateway_host(topology)
        cert, _, _ = tls_paths(self.host.data)
        pem = ssh(topology, self.host.name, f"cat {cert}", check=True).stdout
        self.context = ssl.create_default_context(cadata=pem)
        self.port = int(setting(self.host.data, "gateway_https_port"))

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(
            self.host.address, self.port, context=self.context, timeout=25
        )
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except json.JSONDecodeError:
            return response.status, raw.decode(errors="replace")


@pytest.fixture(scope="module")
def gateway(deployed_lab: Topology) -> Iterator[Gateway]:
    yield Gateway(deployed_lab)


def journal(topology: Topology, host: str, since: int, *matches: str) -> list[dict[str, Any]]:
    """Return ``host``'s journal entries since ``since`` (epoch s) matching ``matches``."""
    result = ssh(
        topology, host, f"{JOURNAL_JSON} --since @{since} {' '.join(matches)}", timeout=120
    )
    # journalctl exits 1 when nothing matches (systemd 252 says "-- No entries --" on stderr).
    assert result.returncode in (0, 1), f"{host}: {result.stderr.strip()}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def message(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON line an entry carries as MESSAGE, or None."""
    text = entry.get("MESSAGE")
    if not isinstance(text, str):
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def lines_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON lines an entry carries as MESSAGE: the gateway's copier sends many
    access lines per entry, one per line."""
    text = entry.get("MESSAGE")
    if not isinstance(text, str):
        return []
    parsed = (message({"MESSAGE": line}) for line in text.split("\n"))
    return [line for line in parsed if line is not None]


def test_a_request_id_is_a_journal_field_on_the_app_host_and_in_the_gateway_line(
    deployed_lab: Topology, gateway: Gateway
) -> None:
    service = item_service()
    request_id = f"lab-fields-{uuid.uuid4().hex}"
    since = int(time.time()) - 2
    status, body = gateway.request(
        "GET", f"{service['route']}items/3", {"X-Request-ID": request_id}
    )
    assert status == 200, body
    app = body["host"]
    assert app in [h.name for h in deployed_lab.group("app")]

    # The app host: found by the field itself, no JSON parsing of messages.
    found: list[dict[str, Any]] = []

    def app_logged() -> bool:
        found[:] = journal(deployed_lab, app, since, f"REQUEST_ID={request_id}")
        return bool(found)

    wait_until(app_logged, within=10, step=0.5, what=f"{app} journals REQUEST_ID={request_id}")
    access = [e for e in found if e.get("LOGGER") == "access"]
    assert access, found
    entry = access[0]
    assert entry["REQUEST_ID"] == request_id and entry["SERVICE"] == service["name"]
    assert entry["PRIORITY"] == "6"  # INFO
    line = message(entry)
    assert line is not None, entry["MESSAGE"]
    assert line["request_id"] == request_id and line["service"] == service["name"]
    assert line["host"] == app and line["status"] == 200

    # The gateway: its JSON access line under the tag, with the same id.
    tag = setting(gateway.host.data, "gateway_journal_tag")
    assert tag, "gateway_journal_tag is empty: the gateway does not log to the journal"
    lines: list[dict[str, Any]] = []

    def gateway_logged() -> bool:
        entries = journal(deployed_lab, gateway.host.name, since, "-t", tag)
        lines[:] = [m for e in entries for m in lines_of(e) if m["request_id"] == request_id]
        return bool(lines)

    wait_until(gateway_logged, within=10, step=0.5, what=f"{gateway.host.name} journals the id")
    assert lines[0]["uri"] == f"{service['route']}items/3" and lines[0]["status"] == 200


def test_a_secret_reaches_no_journal(deployed_lab: Topology, gateway: Gateway) -> None:
    token = f"sk_live_{uuid.uuid4().hex}"
    request_id = f"lab-secret-{uuid.uuid4().hex}"
    since = int(time.time()) - 2
    service = item_service()
    in_header = {
        "X-Request-ID": request_id,
        "Authorization": f"Bearer {token}",
        "X-Api-Key": token,
        "Cookie": f"session={token}",
    }
    status, body = gateway.request("GET", f"{service['route']}items/4?token={token}", in_header)
    assert status == 200, body
    # A JSON body the service parses and stores (an order), with the token in
    # fields named like secrets and not; the query string carries it too.
    orders = setting(gateway.host.data, "gateway_trading_paths")[0]
    order = {"symbol": "BTC", "qty": 1, "api_token": token, "password": token, "note": token}
    status, body = gateway.request(
        "POST",
        f"{orders}?access_token={token}",
        {**in_header, "X-Request-ID": f"{request_id}-order", "Content-Type": "application/json"},
        json.dumps(order).encode(),
    )
    assert status in (200, 201), body
    # The gateway's file log is flushed every second, and its copier sends a batch
    # within gateway_journal_batch_wait: wait (bounded) until the gateway has it.
    gateway_host = gateway.host.name
    wait_until(
        lambda: bool(journal(deployed_lab, gateway_host, since, f"--grep={request_id}")),
        within=15,
        step=0.5,
        what=f"{gateway_host} journals {request_id}",
    )

    seen_id: dict[str, bool] = {}
    for host in deployed_lab:
        result = ssh(deployed_lab, host.name, f"{JOURNAL_JSON} --since @{since}", timeout=120)
        assert result.returncode in (0, 1), f"{host.name}: {result.stderr.strip()}"
        assert token not in result.stdout, f"{host.name}'s journal holds the token"
        seen_id[host.name] = request_id in result.stdout
    # Not vacuous: the requests' own lines are in the window searched.
    assert seen_id[gateway.host.name], "the gateway's lines are not in its journal"
    apps = [h.name for h in deployed_lab.group("app")]
    assert any(seen_id[name] for name in apps), "no app host journaled the request"

    # The central journal on the ops host, once the request's lines have arrived there.
    ops = deployed_lab.group("ops")[0].name
    central = f"{JOURNAL_JSON} -D {CENTRAL_JOURNAL} --since @{since}"
    shipped: dict[str, str] = {}

    def arrived() -> bool:
        result = ssh(deployed_lab, ops, central, timeout=120)
        shipped["text"] = result.stdout
        return result.returncode in (0, 1) and request_id in result.stdout

    wait_until(arrived, within=60, step=2, what="the request's lines in the central journal")
    assert token not in shipped["text"], "the central journal holds the token"

    # The access log file has the path, never the query string.
    access_log = setting(gateway.host.data, "gateway_access_log")
    tail = ssh(deployed_lab, gateway.host.name, f"tail -n 2000 {access_log}", check=True)
    assert token not in tail.stdout
    logged = [json.loads(line) for line in tail.stdout.splitlines() if request_id in line]
    assert logged and all("?" not in entry["uri"] for entry in logged)
