"""etcd with client-certificate TLS on the real lab (issue 14, item 2).

Run by the lead, never by a helper. A lab still on plain http reaches TLS
in at most three runs of the etcd and Postgres deploys (components/etcd.py,
"Moving a running plain-HTTP cluster"); Patroni keeps its leader through
them. Then: no client without a certificate from the etcd CA, from any host,
gets an answer on the client port; plain http gets none; a member's own
certificate lists the members; /health stays open on the metrics port.
"""

import shlex
import subprocess

import pytest

from seawall.inventory import Topology
from seawall.postgres import drill
from seawall.postgres.status import postgres_status
from seawall.ssh import run as ssh_run
from tests.lab.conftest import changed_operations, run_deploy

DEPLOYS = ("deploys/etcd.py", "deploys/postgres.py")
STAGE = "SEAWALL_ETCD_TLS_STAGE"


def etcdctl(topology: Topology, host: str, command: str, certificate: bool = True) -> str:
    """An etcdctl command line on etcd member ``host``, over https to its own address.

    With ``certificate``, the member's own (root reads its key): how seawall's
    tools and these tests talk to etcd.
    """
    data = topology.host(host).data
    tls_dir = data["etcd_tls_dir"]
    endpoint = f"https://{topology.host(host).address}:{data['etcd_client_port']}"
    files = f"--cacert={tls_dir}/ca.pem"
    if certificate:
        files += f" --cert={tls_dir}/host.pem --key={tls_dir}/host.key"
    return (
        f"ETCDCTL_API=3 etcdctl --endpoints={endpoint} {files} "
        f"--dial-timeout=3s --command-timeout=5s {command}"
    )


def _stages(topology: Topology) -> dict[str, str]:
    stages = {}
    for member in topology.group("etcd"):
        line = ssh_run(topology, member.name, f"grep ^{STAGE}= /etc/default/etcd || true")
        stages[member.name] = line.stdout.strip().partition("=")[2].strip('"')
    return stages


@pytest.fixture(scope="module")
def tls_lab(deployed_lab: Topology) -> Topology:
    """The lab on TLS: the etcd and Postgres deploys run until every member is at the last step."""
    healthy, _ = drill.wait_healthy(deployed_lab, 180)
    assert healthy, postgres_status(deployed_lab).to_text()
    leader = postgres_status(deployed_lab).leader
    for _ in range(3):
        if set(_stages(deployed_lab).values()) == {"3"}:
            break
        for deploy in DEPLOYS:
            result = run_deploy(deploy)
            assert result.returncode == 0, result.stderr[-3000:]
        # No step cost Patroni its leader: the same member leads after each run.
        assert postgres_status(deployed_lab).leader == leader
    assert set(_stages(deployed_lab).values()) == {"3"}, _stages(deployed_lab)
    return deployed_lab


def _member_list_request(address: str, port: int, scheme: str, extra: str = "") -> str:
    # etcd 3.4's JSON gateway: the member list, as any HTTP client can ask it.
    url = shlex.quote(f"{scheme}://{address}:{port}/v3/cluster/member/list")
    return f"curl -sS --max-time 5 {extra} -X POST -d '{{}}' {url}"


def test_a_member_certificate_lists_every_member(tls_lab: Topology) -> None:
    first = tls_lab.group("etcd")[0].name
    listed = ssh_run(tls_lab, first, etcdctl(tls_lab, first, "member list"), check=True)
    for member in tls_lab.group("etcd"):
        assert f", started, {member.name}, https://{member.address}:" in listed.stdout
    # Health over TLS too, every member by its advertised https URL.
    health = ssh_run(tls_lab, first, etcdctl(tls_lab, first, "endpoint health --cluster"))
    assert (health.stdout + health.stderr).count("is healthy") == len(tls_lab.group("etcd"))


@pytest.mark.parametrize("source", ["gw-1", "app-1", "data-3"])
def test_no_answer_without_a_client_certificate(tls_lab: Topology, source: str) -> None:
    """From the edge, an app host and a data host (the firewall lets data hosts through)."""
    target = tls_lab.group("etcd")[0]
    port = target.data["etcd_client_port"]
    # -k: whatever server it trusts, a client without a certificate gets no answer.
    asked = ssh_run(tls_lab, source, _member_list_request(target.address, port, "https", "-k"))
    assert asked.returncode != 0, (source, asked.stdout)
    assert '"members"' not in asked.stdout
    if source in {m.name for m in tls_lab.group("etcd")}:
        # etcdctl too, with the CA but without the member's certificate.
        refused = ssh_run(tls_lab, source, etcdctl(tls_lab, source, "member list", False))
        assert refused.returncode != 0
        assert target.name not in refused.stdout


@pytest.mark.parametrize("source", ["data-3", "data-1"])
def test_plain_http_gets_no_answer_on_the_client_port(tls_lab: Topology, source: str) -> None:
    for target in tls_lab.group("etcd"):
        port = target.data["etcd_client_port"]
        asked = ssh_run(tls_lab, source, _member_list_request(target.address, port, "http"))
        assert '"members"' not in asked.stdout, (source, target.name, asked.stdout)


def test_with_a_member_certificate_curl_gets_the_list(tls_lab: Topology) -> None:
    """The same request as above, with a certificate: the refusals are the certificate's doing."""
    source = "data-3"
    tls_dir = tls_lab.host(source).data["etcd_tls_dir"]
    target = tls_lab.group("etcd")[0]
    extra = f"--cacert {tls_dir}/ca.pem --cert {tls_dir}/host.pem --key {tls_dir}/host.key"
    asked = ssh_run(
        tls_lab,
        source,
        _member_list_request(target.address, target.data["etcd_client_port"], "https", extra),
        check=True,
    )
    assert '"members"' in asked.stdout and target.name in asked.stdout


def test_the_metrics_port_serves_health_and_nothing_of_the_store(tls_lab: Topology) -> None:
    target = tls_lab.group("etcd")[0]
    port = target.data["etcd_metrics_port"]
    health = ssh_run(
        tls_lab, "data-3", f"curl -sS --max-time 5 http://{target.address}:{port}/health"
    )
    assert '"health":"true"' in health.stdout
    store = ssh_run(tls_lab, "data-3", _member_list_request(target.address, port, "http"))
    assert '"members"' not in store.stdout


def test_patroni_still_has_a_leader_over_tls(tls_lab: Topology) -> None:
    status = postgres_status(tls_lab)
    assert status.leader is not None, status.to_text()
    assert all(member.healthy for member in status.etcd), status.to_text()
    # Patroni's file says https, and its key is readable by postgres only.
    for host in tls_lab.group("postgres"):
        tls_dir = host.data["etcd_client_tls_dir"]
        key = ssh_run(tls_lab, host.name, f"stat -c '%U:%G %a' {tls_dir}/host.key", check=True)
        assert key.stdout.strip() == "root:postgres 640"


def test_a_redeploy_on_tls_changes_nothing(tls_lab: Topology) -> None:
    for deploy in DEPLOYS:
        result: subprocess.CompletedProcess[str] = run_deploy(deploy)
        assert result.returncode == 0, result.stderr[-3000:]
        assert changed_operations(result) == {}, deploy
