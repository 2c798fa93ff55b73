"""What asyncio containment caught in this process: the `contained_*` counts of `GET /debug/runtime`.

The server runs no asyncio loop (its media transport is Trio only), so in `app.py`
nothing is ever counted here and both counts stay 0. Containment itself (a
trio-asyncio loop on which an aiortc task's error is logged instead of ending the
program) is for aiortc *clients* and lives in the client package
(clients/python: `media_server_client.containment`, with counters of its own),
which the server does not import.
"""

from __future__ import annotations


class ContainmentStatistics:
    __slots__ = ("task_errors", "unowned_errors")

    def __init__(self) -> None:
        self.task_errors = 0  # owned asyncio tasks that ended with an exception
        self.unowned_errors = 0  # reports that reached an asyncio loop's exception handler


statistics = ContainmentStatistics()
