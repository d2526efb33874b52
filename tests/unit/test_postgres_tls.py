"""Postgres TLS in the deploys: what each member's file and each PgBouncer say, when, and in
which order a run does it.

- the rule, pure: a member serves TLS only with its files there or arriving in
  this run; requires it only when no PgBouncer is still plain; clients verify
  only once every member serves it; never a step back;
- the rendered files (Patroni's, PgBouncer's) for each stage;
- the plans of the postgres and pgroute deploys on fake hosts (facts given);
- pyinfra's own ordering: the site's deploys on the lab's hosts, through a real
  pyinfra ``State`` (its operation DAG), with the ops host's chain much shorter
  than the members' (as in the site deploy, where members run Redis and etcd
  first): the CA signs after every request exists and before any member
  installs its certificate or writes its Patroni file. The reverted first
  version failed exactly there (ssl on, no certificate yet).
"""

from collections.abc import Iterator
from typing import Any

import pyinfra
import pytest
import yaml
from pyinfra.api import Config, State
from pyinfra.api.host import Host
from pyinfra.api.inventory import Inventory
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_inventory, ctx_state
from pyinfra.facts.files import File
from pyinfra.operations import server

from seawall import inventory, names, secrets
from seawall.components import common, etcd, pgroute, postgres
from seawall.components.postgres import MemberTls, TlsPlan
from seawall.components.templates import render
from seawall.facts.deb import DebInstallState
from seawall.facts.patroni import PatroniStore
from seawall.facts.postgres import PgbouncerServerTls, PostgresTls
from seawall.facts.systemd import UnitState
from tests.unit import tls_inventory
from tests.unit.test_common_templates import (
    Call,
    FakeHost,
    Recorder,
    one_call,
    ops_of,
    record_seawall_ops,
)
from tests.unit.test_deploy_phases import SECRET_NAMES, SECRET_VALUE
from tests.unit.tls_inventory import CONVERGED, FRESH, PLAIN, SERVED, FakeInventory, Scenario

APPS = ["app-1", "app-2"]
TLS_DIR = "/etc/seawall/postgres-tls"


def members(scenario: Scenario, down: tuple[str, ...] = ()) -> list[MemberTls]:
    return [
        MemberTls(name, active=False) if name in down else MemberTls(name, **scenario.postgres)
        for name in ("data-1", "data-2")
    ]


def plan_of(
    scenario: Scenario,
    ca_active: bool = True,
    down: tuple[str, ...] = (),
    bouncers: dict[str, str | None] | None = None,
) -> TlsPlan:
    found = members(scenario, down)
    modes = {app: scenario.pgbouncer for app in APPS} if bouncers is None else bouncers
    return postgres.member_tls_plan(found[0], found, modes, APPS, ca_active)


# --- the rule ------------------------------------------------------------------------------


def test_a_new_cluster_serves_requires_and_verifies_from_its_first_start() -> None:
    assert plan_of(FRESH) == TlsPlan(on=True, required=True, verify=True)


def test_a_member_without_its_files_and_without_the_ca_in_the_run_stays_plain() -> None:
    # The reverted version's failure: ssl on before the certificate was there.
    assert plan_of(FRESH, ca_active=False) == TlsPlan()
    assert plan_of(PLAIN, ca_active=False) == TlsPlan()
    # Its files in place, it needs no CA host in the run.
    held = Scenario({**FRESH.postgres, "files": True}, None)
    assert plan_of(held, ca_active=False) == TlsPlan(on=True, required=True, verify=True)


def test_a_running_plain_cluster_first_serves_tls_and_requires_it_a_deploy_later() -> None:
    # Deploy 1: TLS served (a reload), nobody refused: pg_hba still takes plain TCP,
    # and PgBouncer (default disable) is still plain; nobody verifies a plain member.
    assert plan_of(PLAIN) == TlsPlan(on=True, required=False, verify=False)
    # Deploy 2: every member serves TLS, every PgBouncer asks for it.
    assert plan_of(SERVED) == TlsPlan(on=True, required=True, verify=True)
    # Deploy 3 finds it all in place: the same file.
    assert plan_of(CONVERGED) == plan_of(SERVED)


def test_tls_is_not_required_while_any_pgbouncer_is_plain_or_out_of_the_run() -> None:
    assert not plan_of(SERVED, bouncers={"app-1": "prefer", "app-2": "disable"}).required
    # Out of the run: its PgBouncer may still be plain.
    assert not plan_of(SERVED, bouncers={"app-1": "prefer"}).required
    # No PgBouncer file at all (a new app host): none routes here yet.
    assert plan_of(SERVED, bouncers={"app-1": None, "app-2": "verify-ca"}).required


def test_nobody_verifies_while_a_member_is_plain_or_out_of_the_run() -> None:
    one_plain = [MemberTls("data-1", **SERVED.postgres), MemberTls("data-2", **PLAIN.postgres)]
    plan = postgres.member_tls_plan(
        one_plain[0], one_plain, dict.fromkeys(APPS, "prefer"), APPS, True
    )
    # data-1 serves TLS and every PgBouncer asks for it: required; not verified yet.
    assert plan == TlsPlan(on=True, required=True, verify=False)
    assert plan_of(SERVED, down=("data-2",)).verify is False


def test_never_a_step_back_with_a_member_out_of_the_run() -> None:
    assert plan_of(CONVERGED, down=("data-2",), ca_active=False) == TlsPlan(True, True, True)
    # A plain member coming back is turned on; it requires TLS once it serves it.
    back = [MemberTls("data-1", **CONVERGED.postgres), MemberTls("data-2", **PLAIN.postgres)]
    plan = postgres.member_tls_plan(back[1], back, dict.fromkeys(APPS, "verify-ca"), APPS, True)
    assert plan == TlsPlan(on=True, required=False, verify=False)


def test_pgbouncer_prefers_until_every_member_serves_tls_then_verifies_the_ca() -> None:
    mode = postgres.pgbouncer_tls_mode
    assert mode("disable", members(PLAIN), True, True) == "prefer"
    assert mode("prefer", members(SERVED), True, True) == "verify-ca"
    assert mode(None, members(FRESH), True, True) == "verify-ca"
    # Never without the CA's certificate on the host (or arriving in this run).
    assert mode(None, members(FRESH), True, False) == "prefer"
    # A member out of the run: no new verification, but no step back either.
    assert mode("prefer", members(SERVED, down=("data-2",)), True, True) == "prefer"
    assert mode("verify-ca", members(SERVED, down=("data-2",)), False, True) == "verify-ca"


# --- the files -----------------------------------------------------------------------------


def patroni_file(lab: inventory.Topology, tls: TlsPlan, name: str = "data-1") -> dict[str, Any]:
    context = postgres.patroni_context(
        name,
        lab.host(name).data,
        etcd_members=[h.address for h in lab.group("etcd")],
        postgres_peers=[h.address for h in lab.group("postgres")],
        clients=[h.address for h in lab.group("app")],
        passwords={secret: f"secret-{secret}" for secret in postgres.SECRET_NAMES},
        tls=tls,
    )
    loaded: dict[str, Any] = yaml.safe_load(render("postgres", postgres.PATRONI_TEMPLATE, context))
    return loaded["postgresql"]


def test_without_tls_the_file_has_no_ssl_and_plain_pg_hba(lab: inventory.Topology) -> None:
    found = patroni_file(lab, TlsPlan())
    assert not any(key.startswith("ssl") for key in found["parameters"])
    assert all("sslmode" not in auth for auth in found["authentication"].values())
    kinds = {line.split()[0] for line in found["pg_hba"]}
    assert kinds == {"local", "host"}


def test_served_but_not_required_keeps_pg_hba_open_to_plain_tcp(lab: inventory.Topology) -> None:
    found = patroni_file(lab, TlsPlan(on=True))
    parameters = found["parameters"]
    assert parameters["ssl"] == "on"
    assert parameters["ssl_min_protocol_version"] == "TLSv1.2"
    assert parameters["ssl_cert_file"] == f"{TLS_DIR}/host.pem"
    assert parameters["ssl_key_file"] == f"{TLS_DIR}/host.key"
    assert parameters["ssl_ca_file"] == f"{TLS_DIR}/ca.pem"
    assert {line.split()[0] for line in found["pg_hba"]} == {"local", "host"}
    # libpq's default (prefer) until every member serves TLS.
    assert all("sslmode" not in auth for auth in found["authentication"].values())


def test_required_every_tcp_line_is_hostssl_after_the_rejects(lab: inventory.Topology) -> None:
    found = patroni_file(lab, TlsPlan(on=True, required=True, verify=True))
    lines = [line.split() for line in found["pg_hba"]]
    assert lines[0] == ["local", "all", "all", "peer"]
    assert lines[1:5] == [
        ["hostnossl", "all", "all", "0.0.0.0/0", "reject"],
        ["hostnossl", "replication", "all", "0.0.0.0/0", "reject"],
        ["hostnossl", "all", "all", "::/0", "reject"],
        ["hostnossl", "replication", "all", "::/0", "reject"],
    ]
    rest = lines[5:]
    assert rest and all(fields[0] == "hostssl" for fields in rest), rest
    # Same lines as without TLS, but for their type: nobody gains or loses a login.
    plain = [line.split() for line in patroni_file(lab, TlsPlan())["pg_hba"]][1:]
    assert [fields[1:] for fields in rest] == [fields[1:] for fields in plain]
    auth = found["authentication"]
    for kind in ("replication", "rewind"):
        assert auth[kind]["sslmode"] == "verify-full"
        assert auth[kind]["sslrootcert"] == f"{TLS_DIR}/ca.pem"
    assert "sslmode" not in auth["superuser"]  # the socket only


def test_pgbouncer_asks_for_tls_and_verifies_only_with_the_ca(lab: inventory.Topology) -> None:
    members = [(h.name, h.address) for h in lab.group("postgres")]
    data = lab.host("app-1").data

    def ini(mode: str) -> list[str]:
        context = pgroute.pgroute_context(data, members, {}, mode)
        return render(pgroute.CONCERN, pgroute.PGBOUNCER_INI, context).splitlines()

    prefer, verify = ini("prefer"), ini("verify-ca")
    assert "server_tls_sslmode = prefer" in prefer
    assert not any(line.startswith("server_tls_ca_file") for line in prefer)
    assert "server_tls_sslmode = verify-ca" in verify
    assert f"server_tls_ca_file = {TLS_DIR}/ca.pem" in verify
    for text in (prefer, verify):
        assert "server_tls_protocols = tlsv1.2,tlsv1.3" in text
        assert [line for line in text if line.startswith("server_tls_sslmode")] == [
            line for line in text if "server_tls_sslmode =" in line and not line.startswith(";")
        ]
    assert names.postgres_tls_files(data)["ca"] == f"{TLS_DIR}/ca.pem"


def test_each_stage_renders_the_same_file_on_the_next_deploy(lab: inventory.Topology) -> None:
    # What a run writes is what the next run, finding it in place, wants: no change.
    fresh, converged = plan_of(FRESH), plan_of(CONVERGED)
    assert patroni_file(lab, fresh) == patroni_file(lab, converged)
    served, after = plan_of(SERVED), plan_of(CONVERGED)
    assert patroni_file(lab, served) == patroni_file(lab, after)
    # The first TLS deploy on a plain cluster does change it the next time (it requires).
    assert patroni_file(lab, plan_of(PLAIN)) != patroni_file(lab, served)


# --- the plans -----------------------------------------------------------------------------


def plan(
    monkeypatch: pytest.MonkeyPatch,
    lab: inventory.Topology,
    module: Any,
    name: str,
    scenario: Scenario,
    down: tuple[str, ...] = (),
    facts: dict[tuple[Any, ...], Any] | None = None,
) -> tuple[FakeHost, list[Call]]:
    """Run ``module``'s deploy for ``name`` on a fake host; return it and the operations."""
    lab_host = lab.host(name)
    data = dict(lab_host.data) | {"secrets_file": None}
    for secret in SECRET_NAMES:
        monkeypatch.setenv(secrets.env_name(secret), SECRET_VALUE)
    unit = names.patroni_unit(data)
    held = scenario.postgres["files"]
    known: dict[tuple[Any, ...], Any] = {
        (DebInstallState,): {"installed": {}, "policy_rc_d": None},
        (UnitState, ("unit", unit)): {"sub": "dead" if scenario is FRESH else "running"},
        (PgbouncerServerTls, ("path", names.PGBOUNCER_INI)): scenario.pgbouncer,
        (File, ("path", f"{TLS_DIR}/ca.pem")): {"mode": 644} if held else None,
        # Patroni already on etcd over TLS: no restart onto its store (test_etcd_tls).
        (PatroniStore, ("config", names.patroni_config_path(data))): "https",
        (File, ("path", names.PATRONI_RESTART_MARKER)): None,
        **(facts or {}),
    }
    fake = FakeHost(data=data, groups=list(lab_host.groups), facts=known, name=name)
    calls: list[Call] = []
    fake_inventory = FakeInventory(lab, scenario, down)
    # common and etcd too: host_secrets, group_members and pause_host read the host
    # and inventory there.
    for target in (common, etcd, postgres, pgroute):
        monkeypatch.setattr(target, "host", fake)
        monkeypatch.setattr(target, "inventory", fake_inventory, raising=False)
    for target in (postgres, pgroute):
        for module_name in ("files", "server", "systemd"):
            monkeypatch.setattr(target, module_name, Recorder(module_name, calls), raising=False)
        monkeypatch.setattr(target, "any_changed", lambda *c: c, raising=False)
        record_seawall_ops(monkeypatch, target, calls)
    for target in (postgres, pgroute):
        monkeypatch.setattr(
            target,
            "install_packages",
            lambda name, packages: calls.append(
                Call("install", {"name": name, "packages": packages})
            ),
        )
        monkeypatch.setattr(target, "unit_dropin", lambda *args: Call("dropin", {"name": args[0]}))
    deploy = postgres.deploy_postgres if module is postgres else pgroute.deploy_pgroute
    deploy._inner()
    return fake, calls


def patroni_src(calls: list[Call]) -> str:
    return str(one_call(calls, "seawall.secret_file").kwargs["src"])


def test_a_new_member_checks_its_files_then_writes_tls_on(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = plan(monkeypatch, lab, postgres, "data-2", FRESH)
    tls = [op for op in ops_of(calls) if op.startswith("seawall.")]
    assert tls[:6] == [
        "seawall.debian_cluster_absent",
        "seawall.tls_key",
        "seawall.barrier",
        "seawall.barrier",
        "seawall.tls_certificate",
        "seawall.tls_ready",
    ]
    assert tls[6] == "seawall.secret_file"
    key = one_call(calls, "seawall.tls_key").kwargs
    assert (key["directory"], key["group"], key["common_name"]) == (TLS_DIR, "postgres", "data-2")
    ready = one_call(calls, "seawall.tls_ready").kwargs
    assert (ready["directory"], ready["key_group"]) == (TLS_DIR, "postgres")
    config = yaml.safe_load(patroni_src(calls))["postgresql"]
    assert config["parameters"]["ssl"] == "on"
    assert config["pg_hba"][1].startswith("hostnossl all all 0.0.0.0/0 reject")


def test_a_member_without_a_certificate_and_without_the_ca_renders_no_ssl(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    me, calls = plan(monkeypatch, lab, postgres, "data-1", FRESH, down=("ops-1",))
    assert "seawall.tls_certificate" not in ops_of(calls)
    assert "seawall.tls_ready" not in ops_of(calls)
    config = yaml.safe_load(patroni_src(calls))["postgresql"]
    assert not any(key.startswith("ssl") for key in config["parameters"])
    assert not any(line.startswith("hostssl") for line in config["pg_hba"])
    assert "ops-1 is not in this run: Postgres certificates wait for the next deploy" in me.logs


def test_the_ca_host_makes_the_ca_and_signs_between_the_barriers(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = plan(monkeypatch, lab, postgres, "ops-1", FRESH, down=("data-2",))
    assert [op for op in ops_of(calls) if op.startswith("seawall.")] == [
        "seawall.tls_ca",
        "seawall.barrier",
        "seawall.tls_signed",
        "seawall.barrier",
    ]
    assert one_call(calls, "seawall.tls_ca").kwargs["directory"] == "/etc/seawall/postgres-ca"
    signed = one_call(calls, "seawall.tls_signed").kwargs
    # Only this run's members: data-2, down, keeps the certificate it has.
    assert signed["peers"] == [("data-1", f"{TLS_DIR}/host.csr", "10.77.0.11")]
    assert (signed["names"], signed["extended_key_usage"]) == (["localhost"], "serverAuth")
    assert (signed["days"], signed["renew_days"]) == (397, 30)
    # Nothing else of Postgres on the ops host.
    assert "seawall.secret_file" not in ops_of(calls)


def test_an_app_host_trusts_the_ca_after_the_barriers(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = plan(monkeypatch, lab, postgres, "app-1", FRESH)
    assert ops_of(calls) == ["seawall.barrier", "seawall.barrier", "seawall.tls_ca_trusted"]
    trusted = calls[-1].kwargs
    assert trusted["directory"] == TLS_DIR and trusted["ca_host"] == "ops-1"


def test_the_barriers_are_one_call_for_every_host(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    seen = set()
    for name in ("ops-1", "data-1", "app-1"):
        with monkeypatch.context() as patch:
            _, calls = plan(patch, lab, postgres, name, FRESH)
        seen.add(tuple(c.kwargs["name"] for c in calls if c.op == "seawall.barrier"))
    assert len(seen) == 1 and len(next(iter(seen))) == 2


def test_a_redeploy_with_a_member_down_keeps_tls_and_reloads_on_change_only(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = plan(monkeypatch, lab, postgres, "data-1", CONVERGED, down=("data-2",))
    config = yaml.safe_load(patroni_src(calls))["postgresql"]
    assert config["authentication"]["replication"]["sslmode"] == "verify-full"
    assert config["pg_hba"][1].startswith("hostnossl")
    reload = next(c for c in calls if c.kwargs.get("name", "").startswith("Reload Patroni"))
    wait = next(c for c in calls if c.kwargs.get("name", "").startswith("Wait until Postgres"))
    written = one_call(calls, "seawall.secret_file")
    certificate = one_call(calls, "seawall.tls_certificate")
    assert reload.kwargs["_if"] == wait.kwargs["_if"] == (written, certificate)


def test_pgbouncer_verifies_with_the_ca_after_checking_it_is_there(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = plan(monkeypatch, lab, pgroute, "app-1", FRESH)
    ops = [c.kwargs.get("name", c.op) for c in calls]
    ready = one_call(calls, "seawall.tls_ready")
    assert ready.kwargs == {
        "name": "Check the Postgres CA's certificate is here before PgBouncer checks with it",
        "directory": TLS_DIR,
    }
    ini = next(c for c in calls if c.kwargs.get("dest") == names.PGBOUNCER_INI)
    assert ops.index(ready.kwargs["name"]) < ops.index(ini.kwargs["name"])
    assert "server_tls_sslmode = verify-ca" in ini.kwargs["src"].getvalue()


def test_pgbouncer_on_a_plain_cluster_asks_for_tls_without_verifying(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> None:
    _, calls = plan(monkeypatch, lab, pgroute, "app-1", PLAIN)
    assert "seawall.tls_ready" not in ops_of(calls)
    ini = next(c for c in calls if c.kwargs.get("dest") == names.PGBOUNCER_INI)
    assert "server_tls_sslmode = prefer" in ini.kwargs["src"].getvalue()


# --- pyinfra's own order -------------------------------------------------------------------


def _fact(self: Host, cls: Any, *args: Any, **kwargs: Any) -> Any:
    """Every host is new: nothing installed, nothing running, no TLS file."""
    if cls is DebInstallState:
        return {"installed": {}, "policy_rc_d": None}
    if cls is UnitState:
        return {"sub": "dead"}
    if cls is PostgresTls:
        return dict(FRESH.postgres)
    return None


def _members_first() -> None:
    # What the site runs on members before Postgres (Redis, etcd): a long chain.
    for i in range(40):
        server.shell(name=f"earlier work on a member {i}", commands=["true"])


def _apps_first() -> None:
    for i in range(15):
        server.shell(name=f"earlier work on an app host {i}", commands=["true"])


def _site(one: Host) -> None:
    if "postgres" in one.groups:
        _members_first()
    elif "app" in one.groups:
        _apps_first()
    postgres.deploy_postgres()
    pgroute.deploy_pgroute()


@pytest.fixture
def pyinfra_run(
    monkeypatch: pytest.MonkeyPatch, lab: inventory.Topology
) -> Iterator[tuple[State, Inventory]]:
    """A pyinfra State with the lab's hosts (all reached), in CLI ordering mode."""
    for secret in SECRET_NAMES:
        monkeypatch.setenv(secrets.env_name(secret), SECRET_VALUE)
    groups: dict[str, Any] = {}
    for one in lab:
        for group in one.groups:
            groups.setdefault(group, ([], {}))[0].append(one.name)
    hosts = [(one.name, dict(one.data) | {"secrets_file": None}) for one in lab]
    pyinfra_inventory = Inventory((hosts, {}), **groups)
    state = State(pyinfra_inventory, Config(), check_for_changes=False)
    for one in pyinfra_inventory:
        state.activate_host(one)
    state.current_stage = StateStage.Prepare
    # The CLI orders operations by the lines they are called from, as `pyinfra` does.
    monkeypatch.setattr(pyinfra, "is_cli", True)
    monkeypatch.setattr(Host, "get_fact", _fact)
    yield state, pyinfra_inventory


def _order(state: State, pyinfra_inventory: Inventory) -> list[tuple[str, set[str]]]:
    with ctx_state.use(state), ctx_inventory.use(pyinfra_inventory):
        for one in pyinfra_inventory:
            with ctx_host.use(one):
                _site(one)
    out = []
    for op_hash in state.get_op_order():
        name = next(iter(state.get_op_meta(op_hash).names)).split(" | ", 1)[-1]
        out.append((name, {one.name for one in pyinfra_inventory if op_hash in state.ops[one]}))
    return out


def _at(order: list[tuple[str, set[str]]], words: str) -> int:
    found = [i for i, (name, _) in enumerate(order) if name.startswith(words)]
    assert len(found) == 1, (words, [name for name, _ in order])
    return found[0]


def test_pyinfra_runs_the_ca_between_the_requests_and_the_installs(
    pyinfra_run: tuple[State, Inventory],
) -> None:
    order = _order(*pyinfra_run)
    ca = _at(order, "Make the Postgres CA")
    key = _at(order, "Give this member a Postgres TLS key")
    sign = _at(order, "Sign every Postgres member's certificate")
    install = _at(order, "Install this member's Postgres certificate")
    trust = _at(order, "Trust the Postgres CA")
    ready = _at(order, "Check this member's key and certificate")
    patroni = _at(order, "Configure this Patroni member")
    start = _at(order, "Start and enable Patroni")
    pgbouncer_ready = _at(order, "Check the Postgres CA's certificate is here")
    pgbouncer = _at(order, "Configure PgBouncer")
    assert order[key][1] == order[install][1] == order[patroni][1] == {"data-1", "data-2"}
    assert order[sign][1] == {"ops-1"} and order[trust][1] == {"app-1", "app-2"}
    assert key < sign < install < ready < patroni < start
    assert ca < trust < pgbouncer_ready < pgbouncer


def test_without_the_barriers_the_ca_would_sign_before_any_request(
    monkeypatch: pytest.MonkeyPatch, pyinfra_run: tuple[State, Inventory]
) -> None:
    # The reverted first version's order, reproduced: this test's setup can see it.
    monkeypatch.setattr(postgres, "barrier", lambda **kwargs: None)
    order = _order(*pyinfra_run)
    assert _at(order, "Sign every Postgres member's certificate") < _at(
        order, "Give this member a Postgres TLS key"
    )


def test_scenarios_are_what_the_facts_say() -> None:
    # The fake hosts answer exactly the TLS facts of their scenario.
    peer = tls_inventory.Peer("data-1", {}, ["postgres"], SERVED)
    assert peer.get_fact(PostgresTls) == SERVED.postgres
    with pytest.raises(AssertionError):
        peer.get_fact(PgbouncerServerTls)
