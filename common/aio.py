"""``start_now``: run a coroutine on the caller's stack until it first has to wait.

Writing one event to 10,000 SDK streams by awaiting each server ``send()`` in turn would let one
client that reads slowly hold up all the others; a task per write costs a task switch per stream.
``start_now`` does what Python 3.12's eager tasks (``asyncio.eager_task_factory``) do, for one
coroutine on Python 3.11: an ASGI server's ``send()`` that can write at once finishes inside the call,
and only one that has to wait (the server's flow control paused writing) becomes a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


def start_now(awaitable: Awaitable[Any]) -> asyncio.Task[Any] | None:
    """Run ``awaitable`` (a coroutine) until it finishes or first waits. None when it finished (an
    exception it raised is raised here, as a plain call's would be); else a task, on the running
    loop, that finishes it."""
    coro = awaitable.__await__()
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_Resumed(coro, waiting_on))


class _Resumed(Coroutine[Any, Any, Any]):
    """``coro`` handed to a task where ``start_now`` left it: the task's first step is given what
    ``coro`` first waited on (so the task waits on it as on anything a coroutine awaits), and every
    later step goes to ``coro`` itself. The task's own cancellation is then a task's: what ``coro``
    waits on is cancelled and the cancellation thrown into ``coro`` — also when the task is cancelled
    before its first step (a wrapper coroutine would be ended there without ``coro`` being told)."""

    __slots__ = ("_coro", "_first", "_started")

    def __init__(self, coro: Generator[Any, None, Any], first: Any) -> None:
        self._coro = coro
        self._first = first
        self._started = False

    def send(self, value: Any) -> Any:
        if not self._started:
            self._started = True
            first, self._first = self._first, None
            return first
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        first, self._first = self._first, None
        if not self._started and asyncio.isfuture(first) and (
                isinstance(typ, asyncio.CancelledError) or typ is asyncio.CancelledError):
            first.cancel()  # (as a task cancelled while it waits on it: what it waits on first)
        self._started = True
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Any:  # (awaiting it is iterating it: ``send`` and ``throw`` as above)
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)
