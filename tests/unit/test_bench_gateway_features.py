"""bench/gateway_features.py's configuration variants, on the lab's rendered gateway.

Each variant must take out exactly its part and keep the rest, or the bench would
measure nothing (a pattern that stopped matching the template changes nothing).
The bench itself runs against the lab."""

import re
from types import ModuleType

import pytest

from seawall import defaults, inventory
from seawall.components import gateway as gateway_component
from tests.unit.benches import load_bench


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("gateway_features")


@pytest.fixture(scope="module")
def conf(lab: inventory.Topology) -> str:
    data = lab.host("gw-1").data
    return gateway_component.render(
        gateway_component.NGINX_CONF, gateway_component.context(data, ["127.0.0.1"])
    )


def servers(bench: ModuleType, text: str) -> list[str]:
    return [text[start:end] for start, end in bench.server_blocks(text)]


def test_only_the_internal_listener_is_kept_on_its_own_port_and_files(
    bench: ModuleType, conf: str, lab: inventory.Topology
) -> None:
    address = lab.host("gw-1").address
    internal = defaults.GATEWAY["gateway_internal_http_port"]
    assert len(servers(bench, conf)) == 4  # redirect, internal, https, stub_status
    kept = bench.internal_only(conf, address, internal, 18100, "unit-x")
    (server,) = servers(bench, kept)
    assert f"listen {address}:18100;" in server and "ssl_certificate" not in kept
    assert "pid /run/unit-x.pid;" in kept
    assert "error_log /run/unit-x.error.log warn;" in kept
    assert re.search(r"access_log /run/unit-x\.access\.log seawall_json", kept)
    # The rest of the http block (upstreams, zones, the map, the log format) stays.
    upstreams = re.compile(r"^\s*upstream \S+ \{", re.M)
    assert len(upstreams.findall(kept)) == len(upstreams.findall(conf)) > 0
    assert "limit_req_zone" in kept and "log_format seawall_json" in kept


def test_each_variant_takes_out_its_part_and_only_it(bench: ModuleType, conf: str) -> None:
    variants = {name: change(conf) for name, change in bench.VARIANTS.items()}
    assert variants["full"] == conf
    assert len(set(variants.values())) == len(variants)

    no_log = variants["no access log"]
    assert "seawall_json buffer" not in no_log and "access_log off;" in no_log

    no_limits = variants["no rate limits"]
    assert (
        "limit_req_zone" in conf and "limit_req zone=" in conf and "limit_conn per_client" in conf
    )
    assert "limit_req zone=" not in no_limits and "limit_conn per_client " not in no_limits

    no_id = variants["no request id"]
    uses = re.compile(r"^\s*(proxy_set_header|add_header) X-Request-ID \$req_id", re.M)
    assert uses.search(conf) and not uses.search(no_id)
    assert '"request_id":"$req_id",' in conf and '"request_id":"$req_id",' not in no_id

    no_headers = variants["no extra headers"]
    assert "proxy_set_header X-Forwarded-For" in conf
    for header in ("Host", "X-Real-IP", "X-Forwarded-For", "X-Forwarded-Proto", "X-Seawall-Edge"):
        assert f"proxy_set_header {header} " not in no_headers
    assert "proxy_set_header Connection" in no_headers

    none = variants["none of these"]
    for single in ("no access log", "no rate limits", "no request id", "no extra headers"):
        assert len(none) < len(variants[single])
    assert "proxy_pass http://" in none
