"""``start_now``: run a coroutine on the caller's stack until it first has to wait.

Writing one event to 10,000 SDK streams by awaiting each server ``send()`` in turn would let one
client that reads slowly hold up all the others; a task per write costs a task switch per stream.
``start_now`` does what Python 3.12's eager tasks (``asyncio.eager_task_factory``) do, for one
coroutine on Python 3.11: an ASGI server's ``send()`` that can write at once finishes inside the call,
and only one that has to wait (the server's flow control paused writing) becomes a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
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
    return asyncio.get_running_loop().create_task(_finish(coro, waiting_on))


async def _finish(coro: Generator[Any, None, Any], waiting_on: Any) -> Any:
    """The rest of ``coro``, driven as a task would drive it: each time it yields an asyncio future
    (the thing it waits on), resume it once that future is done; a bare ``yield`` (``sleep(0)``)
    gives the loop one turn. Cancelling this task cancels what ``coro`` waits on and throws the
    cancellation into ``coro``."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                # The flag a task clears when it takes the future over (asyncio.Future.__await__).
                waiting_on._asyncio_future_blocking = False
                if not waiting_on.done():
                    await asyncio.wait((waiting_on,))
        except asyncio.CancelledError as exc:
            if waiting_on is not None:
                waiting_on.cancel()
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration as stop:
            return stop.value
