"""Containing asyncio: no task of aiortc/aioice can end a trio program that drives aiortc.

trio-asyncio's loop re-raises every error reported to its exception handler
into its nursery (`TrioEventLoop.default_exception_handler`), so one
"Task exception was never retrieved" (aiortc's ``__connect`` failing with
``InvalidStateError`` after a close mid-handshake) or one "Task was destroyed
but it is pending" ended the whole process (once the server, every room with
it; today the bots, tests and benchmarks, the server having no asyncio). Two
mechanisms, installed once on the loop by :func:`contain_loop`:

- **Task ownership.** A task factory gives every asyncio task to the
  :class:`TaskOwner` current in the context that creates it (a context
  variable; asyncio tasks and callbacks inherit their creator's context, so
  every task aiortc and aioice start for a connection, however indirectly,
  belongs to that connection). An owner retrieves the exception of each of its
  tasks as it ends (logged with the owner's label, counted) and, at close,
  :meth:`TaskOwner.reap` waits for the rest and cancels what is left.
- **A loop exception handler that never raises.** What is still reported
  (an error in a plain callback, a task nobody owns) is logged with its
  owner's label when one can be found, and counted; it never reaches
  ``trio_asyncio.open_loop``.

Public asyncio API only (``set_task_factory``, ``set_exception_handler``,
context variables); the server repository's tests/test_transport_contract.py
checks that trio-asyncio still routes task creation and error reports through
them. Needs trio-asyncio: part of the `bots` extra.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator, Coroutine, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio_asyncio

logger = logging.getLogger(__name__)

_current_owner: contextvars.ContextVar[TaskOwner | None] = contextvars.ContextVar("bbms_task_owner", default=None)
_owner_of_task: weakref.WeakKeyDictionary[asyncio.Future[Any], TaskOwner] = weakref.WeakKeyDictionary()


class ContainmentStatistics:
    """Process-wide counts of what containment caught."""

    __slots__ = ("task_errors", "unowned_errors")

    def __init__(self) -> None:
        self.task_errors = 0  # owned tasks that ended with an exception (retrieved and logged)
        self.unowned_errors = 0  # reports that reached the loop's handler (logged, never raised)


statistics = ContainmentStatistics()


class TaskOwner:
    """The asyncio tasks of one connection (or anything else with a lifetime)."""

    __slots__ = ("__weakref__", "_tasks", "label", "task_errors")

    def __init__(self, label: str) -> None:
        self.label = label
        self._tasks: set[asyncio.Task[Any]] = set()
        self.task_errors = 0

    @contextmanager
    def current(self) -> Iterator[None]:
        """Tasks created inside this block (and, transitively, by them) are owned."""
        token = _current_owner.set(self)
        try:
            yield
        finally:
            _current_owner.reset(token)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def adopt(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        _owner_of_task[task] = self
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved: asyncio will not report it again
        if error is not None:
            self.task_errors += 1
            statistics.task_errors += 1
            logger.info("%s: task %s ended with %r", self.label, task.get_name(), error)

    async def reap(self, grace: float) -> None:
        """Wait up to ``grace`` s for every owned task to end, then cancel the rest
        (and wait for them as long again). Tasks started meanwhile are included."""
        current = asyncio.current_task()
        for _ in range(2):
            tasks = [task for task in self._tasks if task is not current]
            if not tasks:
                return
            _, still = await asyncio.wait(tasks, timeout=grace)
            for task in still:
                logger.debug("%s: cancelling %r at close", self.label, task)
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=grace)
        left = [task for task in self._tasks if task is not current]
        if left:
            logger.warning("%s: %d asyncio task(s) still running after close", self.label, len(left))


def _owned_task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
    *,
    context: contextvars.Context | None = None,
) -> asyncio.Task[Any]:
    task = asyncio.Task(coro, loop=loop, context=context)
    owner = context.get(_current_owner) if context is not None else _current_owner.get()
    if owner is not None:
        owner.adopt(task)
    return task


def _owner_in(context: dict[str, Any]) -> TaskOwner | None:
    for key in ("task", "future"):
        future = context.get(key)
        if isinstance(future, asyncio.Future):
            owner = _owner_of_task.get(future)
            if owner is not None:
                return owner
    return None


def _contained_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    statistics.unowned_errors += 1
    owner = _owner_in(context)
    label = owner.label if owner is not None else "asyncio"
    message = context.get("message") or "unhandled error in the asyncio loop"
    error = context.get("exception")
    source = context.get("task") or context.get("future") or context.get("handle")
    # Logged, never raised: trio-asyncio's default handler would re-raise it into the loop's nursery.
    logger.warning("%s: %s (%r) %s", label, message, error, source if source is not None else "", exc_info=error)


def contain_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Install task ownership and the non-raising exception handler on ``loop``. Idempotent."""
    loop.set_task_factory(_owned_task_factory)
    loop.set_exception_handler(_contained_exception_handler)


def loop_is_contained(loop: asyncio.AbstractEventLoop) -> bool:
    return (
        loop.get_task_factory() is _owned_task_factory and loop.get_exception_handler() is _contained_exception_handler
    )


@asynccontextmanager
async def open_contained_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """``trio_asyncio.open_loop()`` with :func:`contain_loop` applied: what any trio
    program using aiortc (bots, tests, benchmarks) should open."""
    async with trio_asyncio.open_loop() as loop:
        contain_loop(loop)
        yield loop
