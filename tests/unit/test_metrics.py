"""The metrics deploy: templates rendered with lab data, Prometheus's targets, checks, secrets."""

import base64
import json
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from seawall import defaults, inventory, redis_acl
from seawall.components import metrics
from seawall.components.templates import template_path
from seawall.facts.metrics import BCRYPT, BasicAuthHash
from seawall.facts.postgres import PostgresRole, role_query
from seawall.operations.postgres import monitoring_role_sql
from tests.unit.postgres_server import PostgresServer, pg, postgres_server  # noqa: F401
from tests.unit.redis_server import free_port
from tests.unit.test_inventory import problems, write_inventory

HOSTS = ("data-1", "data-2", "data-3", "app-1", "app-2", "gw-1", "ops-1")
# A rule file as small as promtool accepts; the real one is another module's static file.
PLACEHOLDER_RULES = "groups: []\n"
PLACEHOLDER_MTAIL = (
    'counter seawall_placeholder_lines_total\n/"status":/ {\n'
    "  seawall_placeholder_lines_total++\n}\n"
)


def args_of(text: str) -> list[str]:
    """Return the words of an /etc/default file's ARGS, as systemd splits ``$ARGS``."""
    (line,) = [line for line in text.splitlines() if line.startswith("ARGS=")]
    return shlex.split(line.removeprefix("ARGS="))[0].split()


def context_of(lab: inventory.Topology, name: str) -> dict[str, Any]:
    return metrics.context(lab.host(name).data, list(lab))


@pytest.mark.parametrize("target", metrics.TEMPLATES)
def test_every_template_names_its_target_first(lab: inventory.Topology, target: str) -> None:
    assert template_path(metrics.CONCERN, target).is_file()
    context = context_of(lab, "ops-1") | {"scrape_hash": "$2b$12$" + "x" * 53}
    first = metrics.render(target, context).splitlines()[0]
    assert first == f"# {target} - managed by seawall"


@pytest.mark.parametrize("name", HOSTS)
def test_every_daemon_listens_on_the_private_address_only(
    lab: inventory.Topology, name: str
) -> None:
    context = context_of(lab, name)
    address = lab.host(name).address
    for package in (metrics.NODE, metrics.REDIS, metrics.POSTGRES, metrics.NGINX):
        text = metrics.render(metrics.defaults_file(package), context)
        listen = [w for w in args_of(text) if w.startswith("--web.listen-address=")]
        assert len(listen) == 1 and listen[0].split("=", 1)[1].startswith(f"{address}:"), package
    for package in (metrics.BLACKBOX, metrics.PROMETHEUS):
        text = metrics.render(metrics.defaults_file(package), context)
        assert f"--web.listen-address={address}:" in text
    mtail = metrics.render(metrics.defaults_file(metrics.MTAIL), context)
    assert f"HOST={address}\n" in mtail and f"PORT={context['mtail_port']}\n" in mtail


def test_node_exporter_reads_the_failure_recorders_directory(lab: inventory.Topology) -> None:
    text = metrics.render(metrics.defaults_file(metrics.NODE), context_of(lab, "app-1"))
    directory = defaults.SERVICES["services_textfile_dir"]
    assert f"--collector.textfile.directory={directory} " in text


def test_the_lab_watches_its_overlay_roots_and_production_keeps_node_exporters_default(
    lab: inventory.Topology,
) -> None:
    flag = "--collector.filesystem.fs-types-exclude="
    lab_args = args_of(
        metrics.render(metrics.defaults_file(metrics.NODE), context_of(lab, "app-1"))
    )
    (exclude,) = [word.removeprefix(flag) for word in lab_args if word.startswith(flag)]
    assert re.fullmatch(exclude, "tmpfs") is None and re.fullmatch(exclude, "overlay") is None
    assert re.fullmatch(exclude, "proc") and re.fullmatch(exclude, "cgroup2")
    production = {**context_of(lab, "app-1"), "node_exporter_fs_types_exclude": None}
    text = metrics.render(metrics.defaults_file(metrics.NODE), production)
    assert not [word for word in args_of(text) if word.startswith(flag)]


def test_exporters_reach_their_local_servers(lab: inventory.Topology) -> None:
    context = context_of(lab, "data-1")
    redis = metrics.render(metrics.defaults_file(metrics.REDIS), context)
    assert f"--redis.addr=redis://127.0.0.1:{defaults.REDIS['redis_port']}" in redis
    postgres = metrics.render(metrics.defaults_file(metrics.POSTGRES), context)
    # The socket, as the exporter's unit user, no password (peer authentication).
    assert (
        'DATA_SOURCE_NAME="host=/var/run/postgresql port=5432 user=prometheus '
        'dbname=postgres sslmode=disable"'
    ) in postgres
    assert "password" not in postgres.split("DATA_SOURCE_NAME=")[1].lower()
    nginx = metrics.render(metrics.defaults_file(metrics.NGINX), context_of(lab, "gw-1"))
    status = defaults.GATEWAY["gateway_status_port"]
    assert f"--nginx.scrape-uri=http://127.0.0.1:{status}/stub_status" in nginx
    mtail = metrics.render(metrics.defaults_file(metrics.MTAIL), context_of(lab, "gw-1"))
    assert f"LOGS={defaults.GATEWAY['gateway_access_log']}\n" in mtail


def test_redis_passwords_come_from_the_root_only_file(lab: inventory.Topology) -> None:
    context = context_of(lab, "data-1")
    secret = metrics.redis_secret_file(lab.host("data-1").data)
    dropin = metrics.render(metrics.REDIS_DROPIN, context).splitlines()
    # Copied by root at each start into the unit's own directory, for its user alone.
    assert "RuntimeDirectory=prometheus-redis-exporter" in dropin
    assert "RuntimeDirectoryMode=0700" in dropin
    copy = "/usr/bin/install -m 0400 -o prometheus -g prometheus"
    assert f"ExecStartPre=+{copy} {secret} {metrics.REDIS_PASSWORD_FILE}" in dropin
    assert f"Environment=REDIS_PASSWORD_FILE={metrics.REDIS_PASSWORD_FILE}" in dropin
    assert metrics.REDIS_PASSWORD_FILE.startswith(metrics.REDIS_RUNTIME_DIR + "/")
    args = args_of(metrics.render(metrics.defaults_file(metrics.REDIS), context))
    assert args and not [a for a in args if "password" in a.lower()]


def test_the_password_map_keys_are_the_uris_the_exporter_is_given(
    lab: inventory.Topology,
) -> None:
    member = lab.host("data-2")
    values = {"redis_password": 'r"1', "sentinel_password": "s 2"}
    passwords = json.loads(metrics.redis_passwords(member.data, member.groups, values))
    args = args_of(metrics.render(metrics.defaults_file(metrics.REDIS), context_of(lab, "data-2")))
    (addr,) = [a.split("=", 1)[1] for a in args if a.startswith("--redis.addr=")]
    sentinel = targets_of(scrape_config(lab), "sentinel", label="__param_target")
    (target,) = [t for t, host in sentinel if host == "data-2"]
    assert passwords == {addr: 'r"1', target: "s 2"}
    # A Redis host that runs no Sentinel gets no Sentinel password.
    assert list(json.loads(metrics.redis_passwords(member.data, ["redis"], values))) == [addr]
    # As the exporter user (REDIS_USER, one user for every target): its secret for both,
    # and no admin secret asked for.
    assert metrics.redis_secrets(member.groups, True) == [redis_acl.EXPORTER_SECRET]
    own = {redis_acl.EXPORTER_SECRET: "e 3"}
    as_user = json.loads(metrics.redis_passwords(member.data, member.groups, own, True))
    assert as_user == {addr: "e 3", target: "e 3"}


def scrape_config(lab: inventory.Topology) -> dict[str, Any]:
    return yaml.safe_load(metrics.render(metrics.PROMETHEUS_YML, context_of(lab, "ops-1")))


def targets_of(config: dict[str, Any], job: str, label: str | None = None) -> set[tuple[str, str]]:
    """Return (target, host) of a job; with ``label``, that label's value instead of the target."""
    (found,) = [j for j in config["scrape_configs"] if j["job_name"] == job]
    return {
        (s["labels"][label] if label else t, s["labels"]["host"])
        for s in found["static_configs"]
        for t in s["targets"]
    }


@pytest.mark.parametrize(
    ("job", "group", "port_key"),
    [
        ("node", None, "node_exporter_port"),
        ("redis", "redis", "redis_exporter_port"),
        ("postgres", "postgres", "postgres_exporter_port"),
        ("patroni", "postgres", "patroni_rest_port"),
        ("etcd", "etcd", "etcd_metrics_port"),
        ("nginx", "gateway", "nginx_exporter_port"),
        ("mtail", "gateway", "mtail_port"),
        ("prometheus", "ops", "prometheus_port"),
    ],
)
def test_prometheus_scrapes_what_the_inventory_groups_say(
    lab: inventory.Topology, job: str, group: str | None, port_key: str
) -> None:
    hosts = [h.name for h in lab] if group is None else [h.name for h in lab.group(group)]
    port = defaults.all_defaults()[port_key]
    want = {(f"{lab.host(h).address}:{port}", h) for h in hosts}
    assert want and targets_of(scrape_config(lab), job) == want


def test_each_sentinel_is_scraped_through_the_exporter_on_its_host(
    lab: inventory.Topology,
) -> None:
    config = scrape_config(lab)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "sentinel"]
    assert job["metrics_path"] == "/scrape"
    sentinels = [h for h in lab.group("sentinel") if "redis" in h.groups]
    want = {
        (f"{h.address}:9121", h.name, f"redis://{h.address}:26379", f"{h.address}:26379")
        for h in sentinels
    }
    got = {
        (t, s["labels"]["host"], s["labels"]["__param_target"], s["labels"]["instance"])
        for s in job["static_configs"]
        for t in s["targets"]
    }
    assert len(want) == 3 and got == want


def test_every_health_endpoint_is_probed_through_the_blackbox_exporter(
    lab: inventory.Topology,
) -> None:
    config = scrape_config(lab)
    (health,) = [j for j in config["scrape_configs"] if j["job_name"] == "blackbox"]
    got = {
        (t, s["labels"]["host"], s["labels"]["service"])
        for s in health["static_configs"]
        for t in s["targets"]
    }
    want = {
        (f"http://{app.address}:{service['port']}/health", app.name, service["name"])
        for app in lab.group("app")
        for service in defaults.SERVICES["services"]
    }
    gateway = lab.host("gw-1")
    port = defaults.GATEWAY["gateway_internal_http_port"]
    want.add((f"http://{gateway.address}:{port}/api/health", "gw-1", "gateway"))
    assert got == want and len(want) == 2 * 8 + 1
    ops = lab.host("ops-1")
    assert health["params"] == {"module": [metrics.PROBE_MODULE]}
    assert {"target_label": "__address__", "replacement": f"{ops.address}:9115"} in health[
        "relabel_configs"
    ]
    blackbox = yaml.safe_load(metrics.render(metrics.BLACKBOX_YML, context_of(lab, "ops-1")))
    module = blackbox["modules"][metrics.PROBE_MODULE]
    assert module["http"]["valid_status_codes"] == [200] and module["timeout"] == "5s"


def test_rules_and_intervals_are_the_settings(lab: inventory.Topology) -> None:
    config = scrape_config(lab)
    assert config["rule_files"] == [metrics.ALERTS_YML]
    assert config["global"] == {
        "scrape_interval": "15s",
        "scrape_timeout": "10s",
        "evaluation_interval": "15s",
    }


def render_for_promtool(lab: inventory.Topology, tmp_path: Path, **override: Any) -> Path:
    """Render prometheus.yml into ``tmp_path``, its rule file a placeholder beside it."""
    rules = tmp_path / "alerts.yml"
    rules.write_text(PLACEHOLDER_RULES)
    context = context_of(lab, "ops-1") | {"alerts_file": str(rules)} | override
    config = tmp_path / "prometheus.yml.seawall-new"
    config.write_text(metrics.render(metrics.PROMETHEUS_YML, context))
    return config


def run_check(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    """Run a validated_file check as the deploy does (``{path}`` is the candidate)."""
    return subprocess.run(
        ["sh", "-c", command.format(path=path)], capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_rendered_configuration(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    config = render_for_promtool(lab, tmp_path)
    result = run_check("promtool check config {path}", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_configuration(lab: inventory.Topology, tmp_path: Path) -> None:
    # The check is what keeps a bad file out: it must fail on one.
    config = render_for_promtool(lab, tmp_path, prometheus_scrape_timeout="30s")
    assert run_check("promtool check config {path}", config).returncode != 0
    (tmp_path / "alerts.yml").write_text("groups: [{name: x, rules: [{alert: X}]}]\n")
    assert run_check("promtool check rules {path}", tmp_path / "alerts.yml").returncode != 0


def test_mtail_check_compiles_the_candidate_under_its_real_name(tmp_path: Path) -> None:
    good = tmp_path / "gateway.mtail.seawall-new"
    good.write_text(PLACEHOLDER_MTAIL)
    result = run_check(metrics.MTAIL_CHECK, good)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.seawall-new"
    bad.write_text("counter x\n/GET/ {\n  y++\n}\n")
    assert run_check(metrics.MTAIL_CHECK, bad).returncode != 0
    # The scratch directory is gone either way.
    assert not list(Path("/tmp").glob("tmp*/gateway.mtail"))


def test_monitoring_role_sql_makes_a_login_member_of_pg_monitor(pg: PostgresServer) -> None:  # noqa: F811
    def state() -> dict[str, Any] | None:
        with pg.connect(autocommit=True) as conn:
            rows = conn.execute(role_query("seawall_monitor")).fetchall()
        lines = [f"{'t' if login else 'f'}\t{members}" for login, members in rows]
        return PostgresRole().process(lines) if lines else None

    def apply() -> None:
        with pg.connect(autocommit=True) as conn:
            for sql in monitoring_role_sql("seawall_monitor", "pg_monitor", state()):
                conn.execute(sql)

    try:
        assert state() is None
        apply()
        assert state() == {"login": True, "member_of": ["pg_monitor"]}
        assert monitoring_role_sql("seawall_monitor", "pg_monitor", state()) == []
        with pg.connect(autocommit=True) as conn:
            conn.execute("ALTER ROLE seawall_monitor NOLOGIN")
            conn.execute("REVOKE pg_monitor FROM seawall_monitor")
        apply()
        assert state() == {"login": True, "member_of": ["pg_monitor"]}
    finally:
        with pg.connect(autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS seawall_monitor")


def test_scrape_timeout_over_the_interval_is_refused(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, group_data='prometheus_scrape_timeout = "20s"\n')
    assert any("prometheus_scrape_timeout: 20s is longer" in p for p in problems(path))


def test_probe_timeout_must_be_under_the_scrape_timeout(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, group_data='blackbox_probe_timeout = "10s"\n')
    assert any("blackbox_probe_timeout: must be shorter" in p for p in problems(path))


def test_an_exporter_port_clash_is_refused(tmp_path: Path) -> None:
    path = write_inventory(tmp_path, group_data="mtail_port = 6379\n")
    assert any("mtail_port" in p and "6379" in p for p in problems(path))


def test_metrics_ports_are_free_on_the_lab(lab: inventory.Topology) -> None:
    assert not [p for p in inventory.validate(lab, check_secrets=False) if "port" in p.message]


def test_the_rules_go_where_their_first_line_says() -> None:
    first = metrics.static_file(metrics.ALERTS_SOURCE).splitlines()[0]
    assert first == f"# {metrics.ALERTS_YML} - managed by seawall"


def test_every_job_the_rules_name_is_scraped(lab: inventory.Topology) -> None:
    rules = metrics.static_file(metrics.ALERTS_SOURCE)
    named = set(re.findall(r'job="([a-z]+)"', rules))
    jobs = {j["job_name"] for j in scrape_config(lab)["scrape_configs"]}
    assert named and named <= jobs


def test_promtool_accepts_the_configuration_with_the_real_rules(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    config = render_for_promtool(lab, tmp_path)
    (tmp_path / "alerts.yml").write_text(metrics.static_file(metrics.ALERTS_SOURCE))
    result = run_check("promtool check config {path}", config)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_mtail_check_accepts_the_real_program(tmp_path: Path) -> None:
    candidate = tmp_path / "gateway.mtail.seawall-new"
    candidate.write_text(metrics.static_file(metrics.MTAIL_SOURCE))
    result = run_check(metrics.MTAIL_CHECK, candidate)
    assert result.returncode == 0, result.stderr


# Basic auth (#14): the exporters that take exporter-toolkit's web configuration.
SCRAPE_PASSWORD = "scrape-s3cret-never-printed"


def crypt_verifies(hashed: str, password: str) -> bool:
    """Check a hash with crypt(3) directly, not through the code under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, hashed) == hashed


def web_users(text: str) -> dict[str, str]:
    body = yaml.safe_load(text)
    assert list(body) == ["basic_auth_users"], body
    return dict(body["basic_auth_users"])


@pytest.mark.parametrize("package", list(metrics.WEB_CONFIG_JOBS))
def test_a_web_config_holds_only_a_bcrypt_hash_of_the_secret(
    lab: inventory.Topology, package: str
) -> None:
    text = metrics.web_config(package, context_of(lab, "ops-1"), SCRAPE_PASSWORD, None)
    assert SCRAPE_PASSWORD not in text
    users = web_users(text)
    assert list(users) == [defaults.METRICS["metrics_scrape_user"]]
    (hashed,) = users.values()
    assert BCRYPT.fullmatch(hashed) and hashed.startswith("$2b$"), hashed
    assert crypt_verifies(hashed, SCRAPE_PASSWORD)
    assert not crypt_verifies(hashed, SCRAPE_PASSWORD + "x")
    # The fact the deploy reads back finds the same hash in the file.
    assert BasicAuthHash().process(["prometheus", *text.splitlines()]) == hashed


@pytest.mark.parametrize("package", list(metrics.WEB_CONFIG_JOBS))
def test_an_unchanged_secret_keeps_the_web_config_and_a_new_one_replaces_it(
    lab: inventory.Topology, package: str
) -> None:
    context = context_of(lab, "app-1")
    first = metrics.web_config(package, context, SCRAPE_PASSWORD, None)
    current = BasicAuthHash().process(["prometheus", *first.splitlines()])
    assert metrics.web_config(package, context, SCRAPE_PASSWORD, current) == first
    rotated = metrics.web_config(package, context, "a-new-secret", current)
    (hashed,) = web_users(rotated).values()
    assert rotated != first and crypt_verifies(hashed, "a-new-secret")


def test_every_supporting_exporter_takes_its_web_config(lab: inventory.Topology) -> None:
    # ops-1's context renders every template; the flag names each exporter's own file.
    context = context_of(lab, "ops-1")
    for package in metrics.WEB_CONFIG_JOBS:
        args = args_of(metrics.render(metrics.defaults_file(package), context))
        assert f"--web.config.file={metrics.web_config_file(package)}" in args, package
    for package in (metrics.REDIS, metrics.NGINX):
        text = metrics.render(metrics.defaults_file(package), context)
        assert "web.config" not in text, package


def test_every_job_of_a_supporting_exporter_sends_basic_auth(lab: inventory.Topology) -> None:
    jobs = {job["job_name"]: job for job in scrape_config(lab)["scrape_configs"]}
    want = {
        "username": defaults.METRICS["metrics_scrape_user"],
        "password_file": metrics.SCRAPE_PASSWORD_FILE,
    }
    api = {
        "username": defaults.METRICS["prometheus_api_user"],
        "password_file": metrics.API_PASSWORD_FILE,
    }
    assert set(metrics.WEB_CONFIG_JOBS.values()) <= set(jobs)
    for name, job in jobs.items():
        if name in metrics.WEB_CONFIG_JOBS.values():
            assert job.get("basic_auth") == want, name
        elif name == "prometheus":
            # Its own /metrics is behind its API login, not the exporters'.
            assert job.get("basic_auth") == api, name
        else:
            # An exporter without basic auth would be sent the password for nothing.
            assert "basic_auth" not in job, name


@pytest.mark.parametrize("name", HOSTS)
def test_the_scrape_password_is_in_no_rendered_file_but_its_own(
    lab: inventory.Topology, name: str
) -> None:
    context = context_of(lab, name) | {"scrape_hash": "$2b$12$" + "x" * 53}
    for target in metrics.TEMPLATES:
        assert SCRAPE_PASSWORD not in metrics.render(target, context), target


def test_an_exporter_admits_the_scrape_user_with_the_secret_only(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    # Prometheus serves its /metrics through the same exporter-toolkit as the
    # bookworm exporters; a real server checks the file the deploy writes.
    web = tmp_path / "web.yml"
    web.write_text(
        metrics.web_config(metrics.NODE, context_of(lab, "app-1"), SCRAPE_PASSWORD, None)
    )
    (tmp_path / "empty.yml").write_text("scrape_configs: []\n")
    port = free_port()
    command = [
        "prometheus",
        f"--config.file={tmp_path / 'empty.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.config.file={web}",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        status = first_status(server, url)
        user = defaults.METRICS["metrics_scrape_user"]
        assert status == 401
        assert get_status(url, (user, SCRAPE_PASSWORD + "x")) == 401
        assert get_status(url, ("someone", SCRAPE_PASSWORD)) == 401
        assert get_status(url, (user, SCRAPE_PASSWORD)) == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def get_status(url: str, auth: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    # No proxy from the environment: the server is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def first_status(server: subprocess.Popen[bytes], url: str) -> int:
    """The status of ``url`` without credentials, once the started ``server`` answers
    (at most 30 s; it must not exit meanwhile)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return get_status(url, None)
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.2)


API_PASSWORD = "api-s3cret-never-printed"


def test_prometheus_takes_its_own_web_config(lab: inventory.Topology) -> None:
    context = context_of(lab, "ops-1")
    args = args_of(metrics.render(metrics.defaults_file(metrics.PROMETHEUS), context))
    assert f"--web.config.file={metrics.PROMETHEUS_WEB_CONFIG}" in args
    text = metrics.web_config(
        metrics.PROMETHEUS, context, API_PASSWORD, None, metrics.PROMETHEUS_WEB_CONFIG
    )
    assert API_PASSWORD not in text
    users = web_users(text)
    assert list(users) == [defaults.METRICS["prometheus_api_user"]]
    assert crypt_verifies(users[defaults.METRICS["prometheus_api_user"]], API_PASSWORD)


def test_prometheus_api_admits_its_user_only_and_its_self_scrape_gets_in(
    lab: inventory.Topology, tmp_path: Path
) -> None:
    # A real Prometheus (the controller's, the ops host's release) with the web
    # configuration the deploy writes and the self-scrape job it renders.
    context = context_of(lab, "ops-1")
    web = tmp_path / "web-config.yml"
    web.write_text(
        metrics.web_config(
            metrics.PROMETHEUS, context, API_PASSWORD, None, metrics.PROMETHEUS_WEB_CONFIG
        )
    )
    password_file = tmp_path / "api-password"
    password_file.write_text(API_PASSWORD)
    port = free_port()
    rendered = yaml.safe_load(metrics.render(metrics.PROMETHEUS_YML, context))
    (self_job,) = [j for j in rendered["scrape_configs"] if j["job_name"] == "prometheus"]
    self_job["basic_auth"]["password_file"] = str(password_file)
    self_job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    self_job["scrape_interval"] = "1s"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [self_job]}))
    command = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.config.file={web}",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    user = defaults.METRICS["prometheus_api_user"]
    scrape_user = defaults.METRICS["metrics_scrape_user"]
    url = f"http://127.0.0.1:{port}/api/v1/query?query=up"
    try:
        status = first_status(server, url)
        assert status == 401
        assert get_status(url, (user, API_PASSWORD + "x")) == 401
        # The exporters' login is not Prometheus's.
        assert get_status(url, (scrape_user, API_PASSWORD)) == 401
        assert get_status(url, (user, API_PASSWORD)) == 200
        # Its self-scrape sends the password from the file: `up` turns 1 within 20 s.
        deadline = time.monotonic() + 20
        while query_up(url, (user, API_PASSWORD)) != ["1"]:
            assert time.monotonic() < deadline, "the self-scrape never got in"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def query_up(url: str, auth: tuple[str, str]) -> list[str]:
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    return [sample["value"][1] for sample in body["data"]["result"]]


def test_scrape_hash_keeps_a_hash_of_its_cost_and_remakes_one_of_another_cost() -> None:
    crypt = metrics._crypt()
    password = "s3cret-for-the-scrape"
    ours = metrics.scrape_hash(password, None)
    assert ours.startswith(f"$2b${metrics.BCRYPT_LOG_ROUNDS:02d}$")
    assert metrics.hash_verifies(ours, password)
    # Kept while it verifies: no new salt, so a second deploy changes nothing.
    assert metrics.scrape_hash(password, ours) == ours
    # A hash from before the cost changed (crypt's default, 12) is made again, once.
    old = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**12))
    remade = metrics.scrape_hash(password, old)
    assert remade != old and remade.startswith(f"$2b${metrics.BCRYPT_LOG_ROUNDS:02d}$")
    assert metrics.hash_verifies(remade, password)
    # Another password's hash of our cost is replaced too.
    assert metrics.scrape_hash("rotated", ours) != ours
