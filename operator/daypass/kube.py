"""The few Kubernetes API calls Daypass makes, with the `kubernetes` client, off the event loop.

Every call here is idempotent where the API allows it: creating what exists or deleting what is
gone is not an error. Nothing here decides anything; it only does what it is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from daypass.metrics import API_CALLS
from daypass.models import GROUP, VERSION

# How long a call that gives or takes no access waits for binding calls to drain, at most.
HOLD_BACK = 0.5


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
    """Blocking API calls run on a thread pool sized for bursts of grants and expiries."""

    def __init__(self, configuration: Configuration, workers: int = 32) -> None:
        configuration.connection_pool_maxsize = workers
        self.configuration = configuration
        self.client = ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.authorization = kubernetes.client.AuthorizationV1Api(self.client)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="daypass-api")
        # Creating and deleting bindings is what gives and takes access: when a thousand
        # grants end at once, those calls must not queue behind status writes and events.
        self.urgent = ThreadPoolExecutor(max_workers=workers // 2,
                                         thread_name_prefix="daypass-bind")
        # The API server is the bottleneck: while binding calls wait, other calls hold back.
        self._urgent_waiting = 0
        self._calm = asyncio.Event()
        self._calm.set()

    @staticmethod
    def count(verb: str, resource: str) -> None:
        API_CALLS.labels(verb, resource).inc()

    async def call(self, function: Callable[..., Any], *args: Any, urgent: bool = False,
                   **kwargs: Any) -> Any:
        verb, _, resource = function.__name__.partition("_")
        self.count(verb, resource.removeprefix("namespaced_").removeprefix("cluster_"))
        loop = asyncio.get_running_loop()
        work = functools.partial(function, *args, **kwargs)
        if not urgent:
            # Bounded: status writes and events are late under a burst, never starved.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._calm.wait(), HOLD_BACK)
            return await loop.run_in_executor(self.pool, work)
        self._urgent_waiting += 1
        self._calm.clear()
        try:
            return await loop.run_in_executor(self.urgent, work)
        finally:
            self._urgent_waiting -= 1
            if not self._urgent_waiting:
                self._calm.set()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.urgent.shutdown(wait=False, cancel_futures=True)
        self.client.close()  # type: ignore[no-untyped-call]

    # AccessRequests

    async def get_request(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self.call(
                self.custom.get_namespaced_custom_object,
                GROUP, VERSION, namespace, "accessrequests", name,
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    async def replace_request_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write a request's status; the body's resourceVersion guards against lost updates."""
        metadata = body["metadata"]
        try:
            written: dict[str, Any] = await self.call(
                self.custom.replace_namespaced_custom_object_status,
                GROUP, VERSION, metadata["namespace"], "accessrequests", metadata["name"], body,
            )
            return written
        except ApiException as error:
            if error.status in (404, 409):
                raise Conflict(f"{metadata['namespace']}/{metadata['name']}") from error
            raise

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
        try:
            response = await self.call(
                self.rbac.read_namespaced_role_binding, name, namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _json(response)

    async def create_binding(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a binding; None when one of that name exists already."""
        try:
            response = await self.call(
                self.rbac.create_namespaced_role_binding,
                body["metadata"]["namespace"], body, _preload_content=False, urgent=True,
            )
        except ApiException as error:
            if error.status == 409:
                return None
            if error.status == 403:
                raise Forbidden(_reason(error)) from error
            raise
        return _json(response)

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
        try:
            await self.call(
                self.rbac.replace_namespaced_role_binding, name, namespace, replacement,
                _preload_content=False, urgent=True,
            )
        except ApiException as error:
            if error.status == 403:
                raise Forbidden(_reason(error)) from error
            if error.status == 404:
                await self.create_binding(body)
                return
            if error.status == 409:
                raise Conflict(f"rolebinding {namespace}/{name}") from error
            raise

    async def delete_binding(self, namespace: str, name: str) -> bool:
        """Delete a binding; False when it was already gone."""
        try:
            await self.call(
                self.rbac.delete_namespaced_role_binding, name, namespace,
                _preload_content=False, urgent=True,
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    # Events

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self.call(self.core.create_namespaced_event, namespace, body, _preload_content=False)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def _reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except (TypeError, ValueError):
        return str(error.reason)
