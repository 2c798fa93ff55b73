"""Request/reply over memory channels.

A request carries a one-slot reply channel. The actor answers with a value or
with an `ActorRefusal` instance, and always closes the reply channel (also when
it crashes while handling the request). An actor that stops closes its mailbox
with `close_mailbox`, which answers every request still queued in it. And every
`call` has an absolute deadline: a caller never waits forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import trio

from actors.errors import ActorCrashed, ActorGone, ActorRefusal, ActorTimeout

R = TypeVar("R")

MAILBOX_SIZE = 64
#: How long a caller waits for an actor to take and answer a request, by default.
CALL_TIMEOUT_SECONDS = 5.0


def open_mailbox() -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
    return trio.open_memory_channel[Any](MAILBOX_SIZE)


async def call(
    mailbox: trio.MemorySendChannel[Any],
    build: Callable[[trio.MemorySendChannel[Any]], Any],
    *,
    wait_at_most: float = CALL_TIMEOUT_SECONDS,
) -> Any:
    """Send `build(reply_channel)` to `mailbox` and wait for the answer, at most `wait_at_most` s.

    Raises the `ActorRefusal` the actor answered with, `ActorGone` if the
    actor's mailbox is closed, `ActorCrashed` (an `ActorGone`) if it closed the
    reply without answering (it raised while handling the request: an actor that
    stops answers what it drops), or `ActorTimeout` (an `ActorGone`) when the
    deadline passes first.
    """
    reply_send, reply_receive = trio.open_memory_channel[Any](1)
    with reply_receive, trio.move_on_after(wait_at_most):
        try:
            await mailbox.send(build(reply_send))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ActorGone("the actor has stopped") from exc
        try:
            answer = await reply_receive.receive()
        except trio.EndOfChannel as exc:
            raise ActorCrashed("the actor crashed before answering") from exc
        if isinstance(answer, ActorRefusal):
            raise answer
        return answer
    raise ActorTimeout(f"no answer within {wait_at_most:g} s")


def answer(reply: trio.MemorySendChannel[Any], value: Any) -> None:
    """Send the answer to a request; the one-slot reply channel never blocks."""
    # BrokenResourceError: the caller gave up (cancelled, or its deadline passed); nothing to tell it.
    with reply, contextlib.suppress(trio.BrokenResourceError):
        reply.send_nowait(value)


def tell(mailbox: trio.MemorySendChannel[Any], build: Callable[[trio.MemorySendChannel[Any]], Any]) -> bool:
    """Post `build(reply_channel)` to `mailbox` without waiting, and without anyone waiting for
    the answer (the actor's answer goes nowhere). False if the mailbox is full or closed."""
    reply_send, reply_receive = trio.open_memory_channel[Any](1)
    reply_receive.close()
    try:
        mailbox.send_nowait(build(reply_send))
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        reply_send.close()
        return False
    return True


def forward(mailbox: trio.MemorySendChannel[Any], request: Any, *, busy: str) -> None:
    """Hand a request on to another actor, which answers its caller directly. The request's
    reply channel is cloned (the forwarding actor closes its own handle when its handler
    ends); if `mailbox` is full or closed the caller is answered `ActorGone(busy)` at once."""
    forwarded = msgspec.structs.replace(request, reply=request.reply.clone())
    try:
        mailbox.send_nowait(forwarded)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        answer(forwarded.reply, ActorGone(busy))


def close_mailbox(
    mailbox: tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]],
    answer_for: Callable[[Any], Any],
) -> int:
    """Close an actor's mailbox and answer each request still queued in it with
    `answer_for(request)` (a value or an `ActorRefusal`). Senders still blocked on
    a full mailbox get `ActorGone`. Returns how many queued requests were answered."""
    send, receive = mailbox
    send.close()
    answered = 0
    while True:
        try:
            request = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
        answer(request.reply, answer_for(request))
        answered += 1
    receive.close()
    return answered
