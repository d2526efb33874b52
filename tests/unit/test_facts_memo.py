"""seawall.facts.memo: a fact asked once per host and run, until an operation changes that host."""

import time
from types import SimpleNamespace
from typing import Any

import gevent
import pytest
from pyinfra.api import FactBase
from pyinfra.api import state as pyinfra_state
from pyinfra.context import ctx_host
from pyinfra.context import host as pyinfra_host

from seawall.facts import memo


class Answer(FactBase[str]):
    def command(self, path: str) -> str:
        return f"cat {path}"


class Other(FactBase[str]):
    def command(self) -> str:
        return "true"


class State(pyinfra_state.State):
    """pyinfra's State with only what the memo uses: operations by host, callbacks."""

    def __init__(self) -> None:
        self.ops: dict[Any, dict[str, Any]] = {}
        self.callback_handlers: list[Any] = []

    def end_operation(self, op_hash: str, executed: set[Any]) -> None:
        """An operation ran on every host; ``executed``: the hosts it ran commands on."""
        for host in self.ops:
            self.ops[host][op_hash] = SimpleNamespace(
                operation_meta=SimpleNamespace(executed=host in executed)
            )
        self.trigger_callbacks("operation_end", op_hash)


class Host:
    def __init__(self, state: State | None, name: str, delay: float = 0.0) -> None:
        self.state, self.name, self.delay = state, name, delay
        self.asked: list[tuple[Any, ...]] = []
        self.fail = False
        if state is not None:
            state.ops[self] = {}

    def get_fact(self, fact: type, *args: Any, **kwargs: Any) -> str:
        self.asked.append((fact, args, kwargs))
        gevent.sleep(self.delay)
        if self.fail:
            raise ConnectionError(f"{self.name} unreachable")
        return f"{self.name}:{fact.__name__}:{sorted(kwargs.items())}:{len(self.asked)}"


def test_a_repeated_question_is_asked_once_and_other_arguments_are_asked_apart() -> None:
    state = State()
    one = Host(state, "one")
    first = memo.get_fact(one, Answer, path="/a")
    assert memo.get_fact(one, Answer, path="/a") == first
    assert len(one.asked) == 1
    memo.get_fact(one, Answer, path="/b")
    memo.get_fact(one, Other)
    assert len(one.asked) == 3
    assert len(state.callback_handlers) == 1


def test_askers_at_the_same_time_wait_for_the_first_answer() -> None:
    state = State()
    slow = Host(state, "slow", delay=0.05)
    askers = [gevent.spawn(memo.get_fact, slow, Answer, path="/a") for _ in range(5)]
    gevent.joinall(askers, timeout=5, raise_error=True)
    assert len({asker.value for asker in askers}) == 1
    assert len(slow.asked) == 1


def test_an_operation_that_ran_commands_on_a_host_drops_only_that_hosts_answers() -> None:
    state = State()
    one, two = Host(state, "one"), Host(state, "two")
    before_one = memo.get_fact(one, Answer, path="/a")
    before_two = memo.get_fact(two, Answer, path="/a")
    state.end_operation("op-without-commands", executed=set())
    assert memo.get_fact(one, Answer, path="/a") == before_one
    state.end_operation("op-changing-one", executed={one})
    assert memo.get_fact(one, Answer, path="/a") != before_one
    assert len(one.asked) == 2
    assert memo.get_fact(two, Answer, path="/a") == before_two
    assert len(two.asked) == 1


def test_runs_do_not_share_answers() -> None:
    first, second = State(), State()
    host = Host(first, "one")
    memo.get_fact(host, Answer, path="/a")
    host.state = second
    memo.get_fact(host, Answer, path="/a")
    assert len(host.asked) == 2


def test_a_failed_question_is_asked_again() -> None:
    state = State()
    host = Host(state, "one")
    host.fail = True
    with pytest.raises(ConnectionError):
        memo.get_fact(host, Answer, path="/a")
    host.fail = False
    assert memo.get_fact(host, Answer, path="/a")
    assert len(host.asked) == 2


def test_a_host_outside_a_run_is_asked_every_time() -> None:
    host = Host(None, "alone")
    memo.get_fact(host, Answer, path="/a")
    memo.get_fact(host, Answer, path="/a")
    assert len(host.asked) == 2


def test_ask_all_asks_at_once_and_leaves_the_answers_in_the_memo() -> None:
    state = State()
    slow = [Host(state, f"host-{n}", delay=0.2) for n in range(5)]
    started = time.monotonic()
    memo.ask_all([(host, Answer, {"path": "/a"}) for host in slow])
    # Five answers of 0.2 s each in about one's time: asked at the same time.
    assert time.monotonic() - started < 0.6
    assert all(len(host.asked) == 1 for host in slow)
    for host in slow:
        memo.get_fact(host, Answer, path="/a")
    assert all(len(host.asked) == 1 for host in slow)


def test_pyinfras_current_host_is_remembered_as_the_host_itself() -> None:
    state = State()
    one, two = Host(state, "one"), Host(state, "two")
    with ctx_host.use(one):
        memo.ask_all([(pyinfra_host, Answer, {"path": "/a"})])
        first = memo.get_fact(pyinfra_host, Answer, path="/a")
    with ctx_host.use(two):
        assert memo.get_fact(pyinfra_host, Answer, path="/a") != first
    assert memo.get_fact(one, Answer, path="/a") == first
    assert (len(one.asked), len(two.asked)) == (1, 1)


def test_a_host_is_asked_at_most_sessions_facts_at_once() -> None:
    # sshd refuses sessions past MaxSessions (10) on pyinfra's one connection: 14 hosts
    # asking the ops host for their certificates at once failed the ops host.
    state = State()
    busy = Host(state, "ops", delay=0.05)
    now, most = [0], [0]
    asked = busy.get_fact

    def counting(fact: type, *args: Any, **kwargs: Any) -> str:
        now[0] += 1
        most[0] = max(most[0], now[0])
        try:
            return asked(fact, *args, **kwargs)
        finally:
            now[0] -= 1

    busy.get_fact = counting  # type: ignore[method-assign]
    memo.ask_all([(busy, Answer, {"path": f"/cert/{n}"}) for n in range(14)])
    live = [gevent.spawn(memo.ask_live, busy, Other) for _ in range(6)]
    gevent.joinall(live, timeout=5, raise_error=True)
    assert len(busy.asked) == 20
    assert 1 < most[0] <= memo.SESSIONS
