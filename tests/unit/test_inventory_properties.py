"""The lab inventory mutated at random: always valid or refused naming a key, never a traceback."""

import copy
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall import inventory, schema
from seawall.components import gateway, services

KEYS = sorted(schema.HostData.model_fields)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "0", "-1", "auto", "10s", "a b", "x\ny", "/", "$(id)", "%n", "redis"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _relevant(problems: list[inventory.Problem]) -> list[inventory.Problem]:
    # The lab's admin key appears with `seawall lab up`; the test is not about it.
    return [p for p in problems if p.key != "admin_ssh_public_key_file"]


def _mutate(data: dict[str, Any], draw: Any) -> str:
    """Change one key, or one value nested in it; return the key changed."""
    key = draw(st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=20)))
    value = draw(values)
    current = data.get(key)
    if isinstance(current, dict | list) and current and draw(st.booleans()):
        # Reach into the structure: a rate zone, a timeout, a service's field.
        inner = copy.deepcopy(current)
        target = inner
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            children = list(target.items()) if isinstance(target, dict) else list(enumerate(target))
            nested = [(k, v) for k, v in children if isinstance(v, dict | list) and v]
            if not nested:
                break
            _, target = draw(st.sampled_from(nested))
        if isinstance(target, dict):
            slot = draw(st.one_of(st.sampled_from(sorted(target, key=str)), st.text(max_size=8)))
            target[slot] = value
        elif target:
            target[draw(st.integers(min_value=0, max_value=len(target) - 1))] = value
        data[key] = inner
    else:
        data[key] = value
    return key


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_random_mutation_is_valid_or_refused_naming_a_key(lab: inventory.Topology, data) -> None:
    assert _relevant(inventory.validate(lab, check_secrets=False)) == []
    hosts = list(lab.hosts)
    everywhere = data.draw(st.booleans())
    chosen = range(len(hosts)) if everywhere else [data.draw(st.integers(0, len(hosts) - 1))]
    mutated = dict(hosts[chosen[0]].data)
    key = _mutate(mutated, data.draw)
    for index in chosen:
        hosts[index] = replace(hosts[index], data={**hosts[index].data, key: mutated[key]})
    topology = replace(lab, hosts=tuple(hosts))

    problems = _relevant(inventory.validate(topology, check_secrets=False))

    for problem in problems:
        assert problem.key and problem.message
        assert f"{problem.host}: {problem.key}: " in str(problem)
    if key not in schema.KNOWN_KEYS:
        assert any(p.key == key for p in problems)
    if not problems:
        # Valid means the deploys can use it: routes, units and the restart pause build.
        for host in topology:
            gateway.routes(host.data)
            services.restart_pause(host.data)
            for service in host.data["services"]:
                services.unit_context(host.data, service, "/etc/x.json", "/etc/x.env")
