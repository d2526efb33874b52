"""Facts gathered once per host and run, while no operation has changed that host.

pyinfra 3 keeps no fact cache: each ``host.get_fact`` runs its command again.
Deploy code asks some facts on every host about the same few hosts (every host
asks each Redis host whether it runs seawall's ACL file), and an operation asks
again what the deploy code asked: a no-op redeploy gathered 105 facts twice.

``get_fact(host, Fact, ...)`` answers a repeated question from this run's
memo. It is for facts that describe what seawall's own operations change
(files, keys, certificates, a firewall table): such a value changes only when
an operation runs commands on that host, and then that host's answers are
dropped once the operation ends (on every host: pyinfra runs each operation
on all hosts before the next). Facts about a cluster's live state (who leads,
is a unit running) change on their own and are never asked through here.

Concurrent askers (one greenlet per host while the deploy code runs) wait for
the first one's answer instead of running the command again. ``ask_all`` asks
several at once, where an operation would otherwise wait for each in turn.

Every host is asked at most ``SESSIONS`` facts at a time through here
(``ask_live`` too, for live state): each is an SSH session on the one connection
pyinfra keeps to the host, and OpenSSH's server refuses sessions past
``MaxSessions`` (10). With 14 hosts asking the ops host for their certificates at
once, it refused them and the ops host failed the deploy.
"""

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import gevent
from gevent.event import AsyncResult
from gevent.lock import BoundedSemaphore
from pyinfra.api import FactBase
from pyinfra.api.state import BaseStateCallback, State
from pyinfra.context import ContextObject, ctx_host

T = TypeVar("T")

# Sessions one host is asked at once through here, well under sshd's MaxSessions
# (10): the host's own operation may hold one, and pyinfra's own facts others.
SESSIONS = 4


class _Memo(BaseStateCallback):
    """One run's answers, by host; dropped for a host an operation ran commands on."""

    def __init__(self) -> None:
        self.answers: dict[Any, dict[tuple[Any, ...], AsyncResult]] = {}
        self.sessions: dict[Any, BoundedSemaphore] = {}

    def session(self, host: Any) -> BoundedSemaphore:
        """The bound on ``host``'s concurrent facts asked through here."""
        found = self.sessions.get(host)
        if found is None:
            found = self.sessions[host] = BoundedSemaphore(SESSIONS)
        return found

    def operation_end(self, state: State, op_hash: str) -> None:  # type: ignore[override]
        for host, ops in state.ops.items():
            data = ops.get(op_hash)
            if data is not None and data.operation_meta.executed:
                self.answers.pop(host, None)


_MEMOS: "WeakKeyDictionary[State, _Memo]" = WeakKeyDictionary()


def _memo(state: State) -> _Memo:
    memo = _MEMOS.get(state)
    if memo is None:
        memo = _MEMOS[state] = _Memo()
        state.add_callback_handler(memo)
    return memo


def get_fact(host: Any, fact: type[FactBase[T]], *args: Any, **kwargs: Any) -> T:
    """``host.get_fact(fact, *args, **kwargs)``, asked at most once per host while no
    operation has run commands on it. Raises what ``host.get_fact`` raises (and the
    next ask tries again)."""
    host = _itself(host)
    state = getattr(host, "state", None)
    if not isinstance(state, State):
        return host.get_fact(fact, *args, **kwargs)
    memo = _memo(state)
    answers = memo.answers.setdefault(host, {})
    key = (fact, repr(args), repr(sorted(kwargs.items())))
    pending = answers.get(key)
    if pending is not None:
        return pending.get()
    pending = answers[key] = AsyncResult()
    try:
        with memo.session(host):
            value = host.get_fact(fact, *args, **kwargs)
    except BaseException as error:
        answers.pop(key, None)
        pending.set_exception(error)
        raise
    pending.set(value)
    return value


def ask_all(questions: Iterable[tuple[Any, type[FactBase[Any]], Mapping[str, Any]]]) -> None:
    """Ask every (host, fact, keyword arguments) at the same time, into the memo: one
    round trip's wait for them all, read back with ``get_fact``. Raises the first
    error (the other answers are kept)."""

    def ask(host: Any, fact: type[FactBase[Any]], kwargs: Mapping[str, Any]) -> None:
        with ctx_host.use(host):
            get_fact(host, fact, **kwargs)

    real = [(_itself(host), fact, kwargs) for host, fact, kwargs in questions]
    gevent.joinall(
        [gevent.spawn(ask, host, fact, kwargs) for host, fact, kwargs in real],
        raise_error=True,
    )


def ask_live(host: Any, fact: type[FactBase[T]], *args: Any, **kwargs: Any) -> T:
    """``host.get_fact(...)`` asked anew (live state: who leads, what runs), within the
    host's bound on concurrent sessions."""
    host = _itself(host)
    state = getattr(host, "state", None)
    if not isinstance(state, State):
        return host.get_fact(fact, *args, **kwargs)
    with _memo(state).session(host):
        return host.get_fact(fact, *args, **kwargs)


def _itself(host: Any) -> Any:
    """The host itself: pyinfra's ``host`` names whichever host the current greenlet
    deploys, and the memo's keys and ask_all's greenlets need the host it names now."""
    return host._get_module() if isinstance(host, ContextObject) else host
