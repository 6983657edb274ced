"""HTTP endpoints beside the operator: liveness, readiness, metrics and the audit webhook.

Served with aiohttp on the operator's own event loop. Nothing here changes a request: the
audit webhook only hands events to the usage counter.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daypass.metrics import REGISTRY

log = logging.getLogger("daypass")


class Endpoints:
    """Starts the servers that were asked for, and says whether the operator is ready."""

    def __init__(self) -> None:
        self.ready = False
        self.standing_by = False
        self.alive: Callable[[], bool] = lambda: True
        self.on_audit_events: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None
        self._runners: list[web.AppRunner] = []

    async def _healthz(self, _: web.Request) -> web.Response:
        if not self.alive():
            return web.Response(status=503, text="not alive\n")
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        # A standby is ready too: it is healthy and waiting, and a rolling update or a drain
        # must be able to count on it.
        if not (self.ready or self.standing_by):
            return web.Response(status=503, text="not ready: still listing the cluster\n")
        return web.Response(text="ok\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _audit(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json(loads=json.loads)
        except ValueError:
            return web.Response(status=400, text="expected an audit.k8s.io EventList\n")
        items = payload.get("items") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            return web.Response(status=400, text="expected an audit.k8s.io EventList\n")
        if self.on_audit_events is None:
            # A standby replica counts nothing: refusing makes the API server send the batch
            # again, and its retry can reach the active replica behind the same Service.
            return web.Response(status=503, text="standby: not counting usage\n")
        await self.on_audit_events([item for item in items if isinstance(item, dict)])
        return web.Response(text="ok\n")

    async def serve(self, *, health_port: int = 0, metrics_port: int = 0,
                    audit_port: int = 0, audit_cert: str | None = None,
                    audit_key: str | None = None, host: str = "0.0.0.0") -> None:
        routes: dict[int, list[web.RouteDef]] = {}
        if health_port:
            routes.setdefault(health_port, []).extend([
                web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)])
        if metrics_port:
            routes.setdefault(metrics_port, []).append(web.get("/metrics", self._metrics))
        for port, port_routes in routes.items():
            await self._start(port, port_routes, host, None)
        if audit_port:
            context = None
            if audit_cert and audit_key:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(audit_cert, audit_key)
            await self._start(audit_port, [web.post("/audit", self._audit)], host, context)

    async def _start(self, port: int, routes: list[web.RouteDef], host: str,
                     context: ssl.SSLContext | None) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=context).start()
        self._runners.append(runner)
        log.info("serving %s on %s:%d", ", ".join(r.path for r in routes), host, port)

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
