"""The HTTP/JSON API served by uvicorn on the gateway's event loop, beside the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass

import uvicorn

from samserve.gateway.settings import Settings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield  # the process's signals are the CLI's: it stops gRPC and HTTP together


@dataclass
class HttpServer:
    server: uvicorn.Server
    task: asyncio.Task
    port: int

    async def stop(self, grace: float = 2.0) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace + 1)
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def start_http_server(app, settings: Settings) -> HttpServer:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.http_port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind the HTTP port {settings.host}:{settings.http_port}: {exc}") from None
    port = sock.getsockname()[1]
    tls = {}
    if settings.tls_cert_file is not None:
        tls = {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
        if settings.tls_client_ca_file is not None:
            tls |= {"ssl_ca_certs": str(settings.tls_client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        limit_concurrency=settings.max_concurrent_requests
        * 4,  # beyond the RPC limit: connections for probes, the page
        h11_max_incomplete_event_size=64 * 1024,  # request line and headers
        **tls,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the start-up error
                raise OSError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
    except BaseException:
        task.cancel()
        sock.close()
        raise
    scheme = "https" if tls else "http"
    log.info("HTTP/JSON API and page on %s://%s:%d/", scheme, settings.host, port)
    return HttpServer(server, task, port)
