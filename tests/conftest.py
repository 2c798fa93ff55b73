from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.serving import RunningServer, make_config, running_server


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with running_server(make_config(debug={"fault_injection": True})) as running:
        yield running
