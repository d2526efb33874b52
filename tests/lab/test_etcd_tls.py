"""etcd over TLS on the lab (issue 14): who etcd answers, and who it refuses.

- a client without a certificate from the etcd CA gets nothing, over plain HTTP
  or HTTPS; the member's own certificate (``names.etcdctl``) gets every member
  healthy, each with an HTTPS peer URL in the membership;
- ``/health`` and ``/metrics`` answer plain HTTP on the metrics port, the way
  Prometheus, ``seawall status`` and the rolling restart ask;
- Patroni reaches etcd over HTTPS (its file names it, and it leads): the
  cluster is not left paused, and no host keeps a pause or restart mark.

The move of a running plaintext cluster is not a test here (it needs a lab
built plain); it was run on the lab and measured (docs/security.md, "etcd").
"""

import shlex

from seawall import names
from seawall.inventory import Topology
from seawall.postgres.status import etcd_health_url, http_json, postgres_status
from seawall.ssh import run as ssh


def test_etcd_refuses_a_client_without_a_certificate(deployed_lab: Topology) -> None:
    member = deployed_lab.group("etcd")[-1]
    other = deployed_lab.group("etcd")[0]
    client = f"{other.address}:{other.data['etcd_client_port']}"
    cacert = names.etcd_tls_files(member.data)[0]
    plain = ssh(deployed_lab, member.name, f"curl -s -m 3 http://{client}/health")
    assert '"health":"true"' not in plain.stdout
    # HTTPS, the server trusted, but no client certificate: refused too.
    anonymous = ssh(
        deployed_lab,
        member.name,
        f"ETCDCTL_API=3 etcdctl --endpoints=https://{client} --cacert={shlex.quote(cacert)} "
        "--dial-timeout=3s --command-timeout=3s get /service --prefix --keys-only",
    )
    assert anonymous.returncode != 0, anonymous.stdout


def test_every_member_is_healthy_over_https_with_https_peers(deployed_lab: Topology) -> None:
    member = deployed_lab.group("etcd")[0]
    health = ssh(
        deployed_lab, member.name, f"{names.etcdctl(member.data)} endpoint health --cluster"
    )
    assert health.returncode == 0, health.stderr
    # etcdctl reports health on stderr.
    output = health.stdout + health.stderr
    assert output.count("is healthy") == len(deployed_lab.group("etcd")), output
    assert "http://" not in output
    listed = ssh(deployed_lab, member.name, f"{names.etcdctl(member.data)} member list", check=True)
    for one in deployed_lab.group("etcd"):
        assert f", {one.name}, https://{one.address}:{one.data['etcd_peer_port']}, " in (
            listed.stdout
        ), listed.stdout


def test_health_and_metrics_answer_plain_http_on_the_metrics_port(deployed_lab: Topology) -> None:
    for one in deployed_lab.group("etcd"):
        status, body = http_json(etcd_health_url(one))
        assert status == 200 and isinstance(body, dict) and body.get("health") == "true", one.name
        metrics = ssh(
            deployed_lab,
            "ops-1",
            f"curl -s -m 3 http://{one.address}:{one.data['etcd_metrics_port']}/metrics",
        )
        assert "etcd_server_has_leader 1" in metrics.stdout, one.name


def test_patroni_leads_over_https_and_nothing_is_left_paused(deployed_lab: Topology) -> None:
    report = postgres_status(deployed_lab)
    assert report.ok, report.to_text()
    for one in deployed_lab.group("postgres"):
        config = names.patroni_config_path(one.data)
        store = ssh(deployed_lab, one.name, f"grep -c '^  protocol: https$' {config}")
        assert store.stdout.strip() == "1", one.name
        marks = ssh(
            deployed_lab,
            one.name,
            f"ls {names.PATRONI_PAUSE_MARKER} {names.PATRONI_RESTART_MARKER} 2>/dev/null",
        )
        assert marks.stdout.strip() == "", (one.name, marks.stdout)
