"""Readiness, watched once for every transport: SERVING while Triton's models are ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from samserve.gateway.engine import SamEngine

log = logging.getLogger(__name__)


class HealthWatch:
    """Polls the engine's readiness; the model info is re-read when Triton returns. Listeners
    (the gRPC health service) hear every change; `ready` is the state now (HTTP's /v1/health)."""

    def __init__(self, engine: SamEngine, period_s: float = 1.0) -> None:
        self.engine = engine
        self.period_s = period_s
        self.ready = False
        self._listeners: list[Callable[[bool], Awaitable[None]]] = []
        self._task: asyncio.Task | None = None

    def on_change(self, listener: Callable[[bool], Awaitable[None]]) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        was_ready = None
        while True:
            ready = await self.engine.ready()
            if ready and was_ready is False:
                with contextlib.suppress(Exception):
                    await self.engine.model(refresh=True)
            if ready != was_ready:
                self.ready = ready
                for listener in self._listeners:
                    await listener(ready)
                if ready:
                    log.info("health: SERVING")
                else:
                    log.warning("health: NOT_SERVING: %s", self.engine.not_ready)
                was_ready = ready
            await asyncio.sleep(self.period_s)
