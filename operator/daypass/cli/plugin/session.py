"""The plugin's connection to the API server: kubeconfig, context, namespace and identity.

Credentials are found the way kubectl finds them. Every API failure becomes a CommandError whose
message says what was wrong and what would be right. Nothing here prints a token.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from daypass.models import GROUP, VERSION, AccessPolicy, Shape, UserInfo

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# A person waits on every call: a dead API server should be reported, not retried for minutes.
TIMEOUT = 30

S = TypeVar("S", bound=Shape)


class CommandError(Exception):
    """A failure the user can act on; the message says what was wrong and what would be right."""


class Session:
    """One user's API calls, as the chosen kubeconfig context."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None,
                 ) -> None:
        configuration = Configuration()
        context_namespace = _load(configuration, kubeconfig, context)
        configuration.retries = 1
        self.server = configuration.host
        self.namespace: str = namespace or context_namespace or "default"
        self.explicit_namespace = namespace is not None
        self.client = ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self._identity: UserInfo | None = None

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call; connection failures say which server could not be reached."""
        try:
            return function(*args, _request_timeout=TIMEOUT, **kwargs)
        except HTTPError as error:
            raise CommandError(
                f"cannot reach the API server at {self.server} ({_cause(error)}): check"
                " --context and --kubeconfig, or that the cluster is up"
            ) from error

    def failure(self, error: ApiException, doing: str) -> CommandError:
        """What to tell the user about an API error while `doing` something."""
        body = _status(error)
        message = body.get("message") or error.reason or "no message"
        if error.status == 401:
            return CommandError(
                f"the API server at {self.server} did not accept your credentials while"
                f" {doing}: log in again, or choose another --context"
            )
        if error.status == 404 and not (body.get("details") or {}).get("name"):
            return CommandError(
                f"the API server does not serve {GROUP} {VERSION} ({message}) while {doing}: is"
                " Daypass installed in this cluster? Apply its crds/ and deploy/ first"
            )
        return CommandError(f"{doing}: {message}")

    # Who the caller is, as the API server sees them: the same identity admission writes down.

    def identity(self) -> UserInfo:
        if self._identity is None:
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            try:
                review = self.call(self.custom.create_cluster_custom_object,
                                   "authentication.k8s.io", "v1", "selfsubjectreviews", body)
            except ApiException as error:
                raise self.failure(error, "asking the API server who you are") from error
            info = (review.get("status") or {}).get("userInfo") or {}
            self._identity = UserInfo(username=info.get("username") or "",
                                      groups=info.get("groups") or [])
        return self._identity

    # AccessRequests

    def get_request(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.call(self.custom.get_namespaced_custom_object,
                                              GROUP, VERSION, namespace, "accessrequests", name)
        except ApiException as error:
            if error.status == 404 and (_status(error).get("details") or {}).get("name"):
                raise CommandError(
                    f"accessrequest {name!r} not found in namespace {namespace!r}: see the"
                    f" requests there with `kubectl daypass list -n {namespace}`, or everywhere"
                    " with `kubectl daypass list -A`"
                ) from error
            raise self.failure(error, f"reading accessrequest {namespace}/{name}") from error
        return found

    def list_requests(self, namespace: str | None) -> list[dict[str, Any]]:
        """The requests in one namespace, or in all of them when `namespace` is None."""
        try:
            if namespace is None:
                found = self.call(self.custom.list_cluster_custom_object,
                                  GROUP, VERSION, "accessrequests")
            else:
                found = self.call(self.custom.list_namespaced_custom_object,
                                  GROUP, VERSION, namespace, "accessrequests")
        except ApiException as error:
            where = f"namespace {namespace}" if namespace else "all namespaces"
            raise self.failure(error, f"listing accessrequests in {where}") from error
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    def create_request(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            created: dict[str, Any] = self.call(self.custom.create_namespaced_custom_object,
                                                GROUP, VERSION, namespace, "accessrequests", body)
        except ApiException as error:
            raise self.failure(error, f"creating an accessrequest in {namespace}") from error
        return created

    # AccessReviews

    def create_review(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            created: dict[str, Any] = self.call(self.custom.create_namespaced_custom_object,
                                                GROUP, VERSION, namespace, "accessreviews", body)
        except ApiException as error:
            raise self.failure(error, f"creating an accessreview in {namespace}") from error
        return created

    def get_review(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.call(self.custom.get_namespaced_custom_object,
                                              GROUP, VERSION, namespace, "accessreviews", name)
        except ApiException as error:
            raise self.failure(error, f"reading accessreview {namespace}/{name}") from error
        return found

    # AccessPolicies and namespaces

    def policies(self, required: bool = True) -> list[AccessPolicy] | None:
        """Every AccessPolicy; None when the caller may not list them and `required` is False."""
        try:
            found = self.call(self.custom.list_cluster_custom_object,
                              GROUP, VERSION, "accesspolicies")
        except ApiException as error:
            if error.status == 403 and not required:
                return None
            raise self.failure(error, "listing accesspolicies") from error
        # A policy that does not fit the schema allows nothing, in the operator as here.
        return parsed(AccessPolicy, found.get("items") or [], quiet=True)

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        """A namespace's labels, or None when the caller may not read namespaces."""
        try:
            response = self.call(self.core.read_namespace, namespace, _preload_content=False)
        except ApiException as error:
            if error.status in (403, 404):
                return None
            raise self.failure(error, f"reading namespace {namespace}") from error
        labels: dict[str, str] = (json.loads(response.data).get("metadata") or {}).get(
            "labels") or {}
        return labels

    # Events

    def request_events(self, namespace: str, name: str) -> list[dict[str, Any]] | None:
        """The events posted on a request, or None when the caller may not list events."""
        selector = f"involvedObject.kind=AccessRequest,involvedObject.name={name}"
        try:
            response = self.call(self.core.list_namespaced_event, namespace,
                                 field_selector=selector, _preload_content=False)
        except ApiException as error:
            if error.status == 403:
                return None
            raise self.failure(error, f"listing the events of {namespace}/{name}") from error
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items


def parsed(model: type[S], items: list[dict[str, Any]], quiet: bool = False) -> list[S]:
    """Objects read into their model; one that does not fit is skipped, never fatal."""
    found = []
    for item in items:
        try:
            found.append(model.model_validate(item))
        except ValidationError as error:
            if not quiet:
                metadata = item.get("metadata") or {}
                where = "/".join(filter(None, [metadata.get("namespace"), metadata.get("name")]))
                print(f"warning: skipping {item.get('kind', 'object')} {where}: it does not fit"
                      f" its schema ({error.error_count()} problem(s))", file=sys.stderr)
    return found


def _cause(error: HTTPError) -> str:
    """The last words of urllib3's nested reasons: `Connection refused`, not three wrappers."""
    text = str(getattr(error, "reason", None) or error)
    return text.rsplit("] ", 1)[-1].rstrip("')\"") if "] " in text else text


def _status(error: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _load(configuration: Configuration, kubeconfig: str | None, context: str | None,
          ) -> str | None:
    """Fill in the credentials and return the context's namespace, as kubectl would choose them."""
    config = kubernetes.config
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    found = any(Path(part).expanduser().exists() for part in path.split(os.pathsep) if part)
    if not found and not kubeconfig and not context and os.environ.get("KUBERNETES_SERVICE_HOST"):
        load_incluster = config.load_incluster_config
        load_incluster(client_configuration=configuration)  # type: ignore[no-untyped-call]
        if IN_CLUSTER_NAMESPACE.exists():
            return IN_CLUSTER_NAMESPACE.read_text().strip() or None
        return None
    if not found:
        raise CommandError(
            f"no kubeconfig at {path}: pass --kubeconfig PATH or set KUBECONFIG"
        )

    try:
        contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=path
        )
        names = [entry["name"] for entry in contexts or []]
        if context is not None and context not in names:
            raise CommandError(
                f"context {context!r} is not in the kubeconfig {path}: choose one of"
                f" {', '.join(names) or 'none'}"
            )
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration
        )
    except config.ConfigException as error:
        raise CommandError(f"cannot use the kubeconfig {path}: {error}") from error
    chosen = next((entry for entry in contexts if entry["name"] == context), current)
    namespace: str | None = ((chosen or {}).get("context") or {}).get("namespace")
    return namespace
