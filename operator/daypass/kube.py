"""The few Kubernetes API calls Daypass makes.

The calls of every grant and expiry (bindings, request status, events) go over aiohttp on the
event loop: a thread per call cost the operator more CPU than the call itself, and a thousand
expiries at once waited on it. Rare calls use the `kubernetes` client on a thread pool. Both
use the credentials the kubeconfig or the pod gave. Every call here is idempotent where the API
allows it: creating what exists or deleting what is gone is not an error. Nothing here decides
anything; it only does what it is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import kubernetes
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from daypass.metrics import API_CALLS
from daypass.models import GROUP, VERSION

# How long a call that gives or takes no access waits for binding calls to drain, at most:
# a thousand expiries at once take the API server a few seconds.
HOLD_BACK = 10.0


class ApiError(Exception):
    """The API server refused a call for a reason no caller here expects."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        self.status = status
        super().__init__(f"{status}: {payload.get('message') or payload.get('reason') or ''}")


class Conflict(Exception):
    """The object changed since it was read: read it again and decide again."""


class Forbidden(Exception):
    """The operator may not do this, usually because it cannot bind the role."""


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> Configuration:
    """Credentials from a kubeconfig (its current context unless one is named), else in-cluster."""
    configuration = Configuration()
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (kubernetes.config.ConfigException, FileNotFoundError, TypeError):
        if kubeconfig or context:
            raise
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    return configuration


class Kube:
    """API calls, awaited: the frequent ones on aiohttp, the rare ones on a thread pool."""

    def __init__(self, configuration: Configuration, workers: int = 32) -> None:
        configuration.connection_pool_maxsize = workers
        self.configuration = configuration
        self.client = ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.authorization = kubernetes.client.AuthorizationV1Api(self.client)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="daypass-api")
        self.workers = workers
        # Creating and deleting bindings is what gives and takes access: when a thousand
        # grants end at once, those calls must not queue behind status writes and events.
        # They have connections of their own, and while they wait, other calls hold back.
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._urgent_waiting = 0
        self._calm = asyncio.Event()
        self._calm.set()

    @staticmethod
    def count(verb: str, resource: str) -> None:
        API_CALLS.labels(verb, resource).inc()

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A rare call, with the `kubernetes` client on a thread."""
        verb, _, resource = function.__name__.partition("_")
        self.count(verb, resource.removeprefix("namespaced_").removeprefix("cluster_"))
        await self._hold_back()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(function, *args, **kwargs))

    async def _hold_back(self) -> None:
        # Bounded: status writes and events are late under a burst, never starved.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._calm.wait(), HOLD_BACK)

    def _session(self, urgent: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(urgent)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=self.workers)
            session = aiohttp.ClientSession(connector=connector,
                                            timeout=aiohttp.ClientTimeout(total=30))
            self._sessions[urgent] = session
        return session

    def _ssl(self) -> ssl.SSLContext | bool:
        settings = self.configuration
        if not settings.host.startswith("https:"):
            return False
        context = ssl.create_default_context(cafile=settings.ssl_ca_cert)
        if not settings.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif settings.assert_hostname is False:
            context.check_hostname = False
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        return context

    async def send(self, method: str, path: str, verb: str, resource: str,
                   body: dict[str, Any] | None = None, urgent: bool = False,
                   ) -> tuple[int, dict[str, Any]]:
        """One frequent call: its status code and its decoded body."""
        self.count(verb, resource)
        headers = {"Accept": "application/json"}
        # Read for every call: the client refreshes an expiring token (in-cluster, exec).
        auth = self.configuration.auth_settings().get("BearerToken")
        if auth and auth.get("value"):
            headers["Authorization"] = str(auth["value"])
        if not urgent:
            await self._hold_back()
            return await self._exchange(False, method, path, headers, body)
        self._urgent_waiting += 1
        self._calm.clear()
        try:
            return await self._exchange(True, method, path, headers, body)
        finally:
            self._urgent_waiting -= 1
            if not self._urgent_waiting:
                self._calm.set()

    async def _exchange(self, urgent: bool, method: str, path: str, headers: dict[str, str],
                        body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        settings = self.configuration
        url = settings.host.rstrip("/") + path
        # As the `kubernetes` client does: a kubeconfig's tls-server-name and proxy-url.
        async with self._session(urgent).request(
                method, url, json=body, headers=headers, proxy=settings.proxy or None,
                server_hostname=settings.tls_server_name or None) as response:
            data = await response.read()
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            payload = {"message": data[:200].decode(errors="replace")}
        return response.status, payload if isinstance(payload, dict) else {}

    async def close_sessions(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()  # type: ignore[no-untyped-call]

    # AccessRequests

    async def _get(self, path: str, verb: str, resource: str) -> dict[str, Any] | None:
        """An object, or None when there is no such object."""
        status, found = await self.send("GET", path, verb, resource)
        if status == 404:
            return None
        _check(status, found)
        return found

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(_request_path(namespace, name), "get", "custom_object")

    async def replace_request_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write a request's status; the body's resourceVersion guards against lost updates."""
        metadata = body["metadata"]
        status, written = await self.send(
            "PUT", _request_path(metadata["namespace"], metadata["name"]) + "/status",
            "replace", "custom_object_status", body)
        if status in (404, 409):
            raise Conflict(f"{metadata['namespace']}/{metadata['name']}")
        _check(status, written)
        return written

    async def delete_request(self, namespace: str, name: str) -> bool:
        try:
            await self.call(
                self.custom.delete_namespaced_custom_object,
                GROUP, VERSION, namespace, "accessrequests", name,
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels, or None when there is no such namespace."""
        try:
            response = await self.call(self.core.read_namespace, name, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        labels: dict[str, str] = (_json(response).get("metadata") or {}).get("labels") or {}
        return labels

    async def can_bind(self, kind: str, name: str) -> bool:
        """Whether the API server lets this operator bind a role: RBAC's `bind` verb (G7)."""
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {
                    "group": "rbac.authorization.k8s.io", "verb": "bind", "name": name,
                    "resource": "clusterroles" if kind == "ClusterRole" else "roles"}}}
        response = await self.call(self.authorization.create_self_subject_access_review, body,
                                   _preload_content=False)
        return bool(_json(response).get("status", {}).get("allowed"))

    async def patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        try:
            await self.call(
                self.custom.patch_cluster_custom_object_status,
                GROUP, VERSION, "accesspolicies", name, {"status": status},
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def patch_review_status(self, namespace: str, name: str, status: dict[str, Any],
                                  ) -> None:
        try:
            await self.call(
                self.custom.patch_namespaced_custom_object_status,
                GROUP, VERSION, namespace, "accessreviews", name, {"status": status},
            )
        except ApiException as error:
            if error.status != 404:
                raise

    # RoleBindings

    async def get_binding(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(_binding_path(namespace, name), "read", "role_binding")

    async def create_binding(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a binding; None when one of that name exists already."""
        status, created = await self.send("POST", _binding_path(body["metadata"]["namespace"]),
                                          "create", "role_binding", body, urgent=True)
        if status == 409:
            return None
        if status == 403:
            raise Forbidden(_message(created))
        _check(status, created)
        return created

    async def replace_binding(self, body: dict[str, Any], observed: dict[str, Any]) -> None:
        """Make a drifted binding exact again. roleRef cannot change, so that means recreating."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if observed.get("roleRef") != body["roleRef"]:
            await self.delete_binding(namespace, name)
            await self.create_binding(body)
            return
        replacement = {**body, "metadata": {**body["metadata"],
                                            "resourceVersion": observed["metadata"].get(
                                                "resourceVersion")}}
        status, answer = await self.send("PUT", _binding_path(namespace, name), "replace",
                                         "role_binding", replacement, urgent=True)
        if status == 403:
            raise Forbidden(_message(answer))
        if status == 404:
            await self.create_binding(body)
            return
        if status == 409:
            raise Conflict(f"rolebinding {namespace}/{name}")
        _check(status, answer)

    async def delete_binding(self, namespace: str, name: str) -> bool:
        """Delete a binding; False when it was already gone."""
        status, answer = await self.send("DELETE", _binding_path(namespace, name), "delete",
                                         "role_binding", urgent=True)
        if status == 404:
            return False
        _check(status, answer)
        return True

    # Events

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        status, answer = await self.send("POST", f"/api/v1/namespaces/{namespace}/events",
                                         "create", "event", body)
        _check(status, answer)


def _request_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/accessrequests/{name}"


def _binding_path(namespace: str, name: str = "") -> str:
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
    return f"{path}/{name}" if name else path


def _check(status: int, payload: dict[str, Any]) -> None:
    if not 200 <= status < 300:
        raise ApiError(status, payload)


def _message(payload: dict[str, Any]) -> str:
    return str(payload.get("message") or payload.get("reason") or "forbidden")


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data
