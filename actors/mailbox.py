"""Request/reply over memory channels.

A request carries a one-slot reply channel. The actor answers with a value or
with an `ActorRefusal` instance, and always closes the reply channel (also when
it crashes while handling the request), so a caller never waits forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from actors.errors import ActorGone, ActorRefusal

R = TypeVar("R")

MAILBOX_SIZE = 64


def open_mailbox() -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    return trio.open_memory_channel[Any](MAILBOX_SIZE)


async def call(mailbox: trio.MemorySendChannel[Any], build: Callable[[trio.MemorySendChannel[Any]], Any]) -> Any:
    """Send `build(reply_channel)` to `mailbox` and wait for the answer.

    Raises the `ActorRefusal` the actor answered with, or `ActorGone` if the
    actor's mailbox is closed or it dropped the request without answering.
    """
    reply_send, reply_receive = trio.open_memory_channel[Any](1)
    with reply_receive:
        try:
            await mailbox.send(build(reply_send))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ActorGone("the actor has stopped") from exc
        try:
            answer = await reply_receive.receive()
        except trio.EndOfChannel as exc:
            raise ActorGone("the actor stopped before answering") from exc
    if isinstance(answer, ActorRefusal):
        raise answer
    return answer


def answer(reply: trio.MemorySendChannel[Any], value: Any) -> None:
    """Send the answer to a request; the one-slot reply channel never blocks."""
    # BrokenResourceError: the caller gave up (cancelled); nothing to tell it.
    with reply, contextlib.suppress(trio.BrokenResourceError):
        reply.send_nowait(value)
