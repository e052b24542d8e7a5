"""Graceful, bounded shutdown: drain in-flight requests for a grace period, then end them with an error.

On SIGINT or SIGTERM (or ``should_exit``) the server stops accepting connections and lets the
requests in flight finish, for at most ``shutdown_timeout`` seconds (``npgpt serve
--shutdown-timeout``, default :data:`SHUTDOWN_TIMEOUT_S`). Requests still running after that end
the way every error does here: a plain request gets an OpenAI-shaped 503 (code
``server_shutting_down``), a stream gets a final error event and ``data: [DONE]``; never a cut
stream or uvicorn's plain-text 500. A second SIGINT during the drain skips what is left of the
grace period and ends the requests at once, the same way. Ending them takes at most
:data:`FLUSH_S` more seconds (the final events being written); only a connection that is still
open after that is closed.

uvicorn's own shutdown waits for connections with no bound by default, and on its timeout or a
forced exit cancels the request tasks, which is what cuts streams and answers plain-text 500s;
:class:`DrainingServer` overrides that one method (``uvicorn.Server.shutdown``, using the same
server state it does) and keeps the rest of uvicorn, signal handling included.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

import uvicorn

from .connections import DeadlineProtocol
from .settings import check_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("npgpt.server")

SHUTDOWN_TIMEOUT_S = 10.0
FLUSH_S = 2.0  # for ended requests to write their final event, after the grace period
POLL_S = 0.05


class DrainingServer(uvicorn.Server):
    """A ``uvicorn.Server`` whose shutdown drains for ``shutdown_timeout`` s, then ends requests with errors.

    ``app`` is the npgpt app (its ``state.schedulers`` are closed to end the requests still running).
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, shutdown_timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        check_settings(shutdown_timeout=shutdown_timeout)
        super().__init__(config)
        self.app, self.shutdown_timeout = app, shutdown_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for server in self.servers:  # stop accepting connections
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):  # idle ones close, busy ones after their response
            connection.shutdown()
        deadline = loop.time() + self.shutdown_timeout
        if self._busy():
            log.info(
                "draining %d connection(s) for up to %g s (Ctrl+C again to end them now)",
                len(self.server_state.connections),
                self.shutdown_timeout,
            )
        while self._busy() and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
        if self._busy():
            log.warning("ending %d request(s) still running: the server is shutting down", len(self.server_state.tasks))
            await asyncio.to_thread(end_requests, self.app)
            deadline = loop.time() + FLUSH_S
            while self._busy() and loop.time() < deadline:
                await asyncio.sleep(POLL_S / 5)
            for task in self.server_state.tasks:  # past every bound: only now cut what is left
                task.cancel()
        await self.lifespan.shutdown()

    def _busy(self) -> bool:
        """Open connections or request tasks still running. Both count: a client may close its connection
        the moment it has a stream's last event while the request's task is still finishing, and cancelling
        that task then makes uvicorn log a traceback for a request that ended well."""
        return bool(self.server_state.connections or self.server_state.tasks)


def end_requests(app: FastAPI) -> None:
    """Close every scheduler of ``app``: each request still running or waiting gets its shutdown error."""
    for scheduler in getattr(app.state, "schedulers", {}).values():
        scheduler.close(timeout=1.0)


def serve(app: FastAPI, sock: socket.socket, shutdown_timeout: float = SHUTDOWN_TIMEOUT_S, **config: Any) -> None:
    """Run ``app`` with uvicorn on the bound socket ``sock`` until SIGINT/SIGTERM, then shut down as
    described above (blocks). Connections that do not send a whole request in time are closed
    (:class:`~.connections.DeadlineProtocol`). ``config``: more ``uvicorn.Config`` options (``host``, ``port``
    for its messages, ``log_level``...)."""
    server = DrainingServer(uvicorn.Config(app, **{"http": DeadlineProtocol, **config}), app, shutdown_timeout)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled; the shutdown is done, as uvicorn.run does
        pass
