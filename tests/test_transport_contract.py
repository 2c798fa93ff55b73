"""Contract test: every private aiortc / aioice hook of the client's
media_server_client.aiortc_hooks (clients/python) still exists.

If one of these fails after an aiortc or aioice upgrade, the message names the
hook, what the adapter uses it for, and what changed. Fix the adapter (and
its HOOKS table) before anything else: the bots, the tests' aiortc peers and
the benchmarks depend on these.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version
from typing import Any

import pytest
import trio
import trio_asyncio

from media_server_client import aiortc_hooks as adapter
from media_server_client.aiortc_hooks import HOOKS, Hook


def _resolve(dotted: str) -> Any:
    """Import ``a.b.C.meth`` (module prefix, then attributes)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _fail(hook: Hook, problem: str) -> None:
    pytest.fail(
        f"aiortc/aioice hook moved: {hook.owner}.{hook.attribute} ({hook.kind}; "
        f"media_server_client.aiortc_hooks.{hook.used_by} uses it: {hook.why}): {problem}",
        pytrace=False,
    )


async def _instances() -> dict[str, Any]:
    """Real objects to look for instance attributes on (no sockets are opened)."""
    from aioice import Candidate
    from aioice.ice import CandidatePair
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video")
    dtls = pc.getTransceivers()[0].receiver.transport
    gatherer = dtls.transport.iceGatherer
    candidate = Candidate("f", 1, "udp", 1, "127.0.0.1", 9, "host")
    found = {
        "aiortc.rtcdtlstransport.RTCDtlsTransport": dtls,
        "aiortc.rtcicetransport.RTCIceGatherer": gatherer,
        "aioice.ice.Connection": gatherer._connection,
        "aioice.ice.CandidatePair": CandidatePair(object(), candidate),  # type: ignore[arg-type]
        "aiortc.rtcrtpsender.RTCRtpSender": pc.getTransceivers()[0].sender,
        "aiortc.rtcrtpreceiver.RTCRtpReceiver": pc.getTransceivers()[0].receiver,
    }
    await pc.close()
    return found


def _instances_sync() -> dict[str, Any]:
    result: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(10):
            async with trio_asyncio.open_loop():
                result.update(await trio_asyncio.aio_as_trio(_instances)())

    trio.run(main)
    return result


_INSTANCES: dict[str, Any] = {}


@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: f"{h.owner.rsplit('.', 1)[-1]}.{h.attribute}")
def test_hook_exists(hook: Hook) -> None:
    try:
        owner = _resolve(hook.owner)
    except (ImportError, AttributeError) as exc:
        _fail(hook, f"cannot import {hook.owner} ({exc!r})")

    if hook.kind == "instance attribute":
        if not _INSTANCES:
            _INSTANCES.update(_instances_sync())
        instance = _INSTANCES.get(hook.owner)
        assert instance is not None, f"test has no instance of {hook.owner}"
        if not hasattr(instance, hook.attribute):
            _fail(hook, f"a new {hook.owner} instance has no attribute {hook.attribute!r}")
    elif hook.kind == "property":
        if not isinstance(inspect.getattr_static(owner, hook.attribute, None), property):
            _fail(hook, "is no longer a property")
    else:
        target = getattr(owner, hook.attribute, None)
        if target is None or not callable(target):
            _fail(hook, "does not exist or is not callable")
        assert target is not None
        if hook.kind == "method" and not inspect.iscoroutinefunction(target):
            # the adapter replaces them with coroutine functions, which aiortc awaits
            _fail(hook, "is no longer a coroutine function")
        names = [p.name for p in inspect.signature(target).parameters.values() if p.name != "self"]
        if tuple(names) != hook.parameters and hook.parameters:
            _fail(hook, f"parameters are now {names}, expected {list(hook.parameters)}")

    if hook.caller:
        try:
            source = inspect.getsource(_resolve(hook.caller))
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            _fail(hook, f"cannot read the source of {hook.caller} ({exc!r})")
        for snippet in hook.caller_contains:
            if snippet not in source:
                _fail(hook, f"{hook.caller} no longer contains {snippet!r}")


def test_pinned_versions() -> None:
    found = {"aiortc": version("aiortc"), "aioice": version("aioice")}
    pinned = {"aiortc": adapter.PINNED_AIORTC, "aioice": adapter.PINNED_AIOICE}
    assert found == pinned, (
        f"installed {found} but media_server_client/aiortc_hooks.py was written against {pinned}: "
        "re-read every HOOKS entry against the new source, then update the pins"
    )


def test_every_private_access_of_the_adapter_is_in_hooks() -> None:
    """A crude guard: each private aiortc/aioice name the adapter touches is listed."""
    source = inspect.getsource(adapter)
    listed = {hook.attribute for hook in HOOKS}
    for name in (
        "_handle_rtp_data",
        "_handle_rtcp_data",
        "_rx_srtp",
        "_connection",
        "get_component_candidates",
        "_send_rtp",
    ):
        assert name in source and name in listed, name


# ---- containment (media_server_client/containment.py): the mechanism, checked on trio-asyncio itself ----


def test_trio_asyncio_still_reraises_loop_errors_into_its_nursery() -> None:
    """Why containment exists: trio-asyncio's default handler raises whatever is reported."""
    from trio_asyncio._async import TrioEventLoop

    source = inspect.getsource(TrioEventLoop.default_exception_handler)
    assert "propagate_asyncio_error" in source and "self._nursery.start_soon" in source


async def test_a_contained_loop_gives_tasks_to_their_owner_and_never_raises() -> None:
    import asyncio
    import gc

    from media_server_client.containment import TaskOwner, loop_is_contained, open_contained_loop, statistics

    async def fail() -> None:
        raise RuntimeError("boom")

    async def main() -> TaskOwner:
        owner = TaskOwner("contract")
        with owner.current():
            failing = asyncio.ensure_future(fail())  # a detached task, as aiortc starts them
            waiting = asyncio.ensure_future(asyncio.sleep(3600))
        unowned = asyncio.ensure_future(fail())  # nobody's: reported to the loop's handler
        await asyncio.sleep(0.05)
        assert owner.task_errors == 1 and owner.pending == 1
        await owner.reap(0.1)  # cancels the sleeper
        assert owner.pending == 0 and waiting.cancelled() and failing.done()
        del unowned  # its exception is never retrieved: reported when it is collected
        orphan = asyncio.ensure_future(asyncio.sleep(3600))
        del orphan  # "Task was destroyed but it is pending!" at collection
        gc.collect()
        await asyncio.sleep(0.05)
        return owner

    unowned_before = statistics.unowned_errors
    with trio.fail_after(10):
        async with open_contained_loop() as loop:
            assert loop_is_contained(loop)
            await trio_asyncio.aio_as_trio(main)()
            await trio.sleep(0.05)
    assert statistics.unowned_errors > unowned_before  # logged, and the loop (this test) lived on


async def test_an_aiortc_client_closed_mid_handshake_raises_nothing_out_of_the_loop() -> None:
    """The failure that ended the server before (aiortc's __connect raising InvalidStateError
    once its ICE transport is closed) now only reaches the contained loop's handler."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from media_server_client.containment import open_contained_loop

    async def main() -> None:
        offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        offerer.addTransceiver("video", direction="recvonly")
        adapter.restrict_host_addresses(offerer, ["127.0.0.1"])
        await offerer.setLocalDescription(await offerer.createOffer())
        answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await answerer.setRemoteDescription(RTCSessionDescription(offerer.localDescription.sdp, "offer"))
        await answerer.close()  # before __connect ran: it fails on the closed ICE transport
        await offerer.close()

    with trio.fail_after(20):
        async with open_contained_loop():
            await trio_asyncio.aio_as_trio(main)()
            await trio.sleep(0.2)
