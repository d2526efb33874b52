"""A point in a deploy that every host calling it passes together."""

from pyinfra import host
from pyinfra.api import operation


@operation()
def barrier(point: str):
    """
    Change nothing; order what hosts do around this call.

    + point: what every host calling it has done by then (shown as its no-op)

    pyinfra orders a run's operations by the hosts' own sequences only, and
    runs each on every host before the next: an operation that some hosts
    call and others don't (a CA's signing, a member's request) has no order
    against the other hosts' operations. Called from one line on every host
    involved, this one operation ties them: all that any of them called
    before it runs first, all that any calls after it runs later. (Not with
    ``--serial`` or ``--no-wait``, which run each host's operations alone.)

    **Example:**

    .. code:: python

        barrier(
            name="Wait until every member has its key and request",
            point="every member has its key and request",
        )
    """
    host.noop(point)
    yield from ()
