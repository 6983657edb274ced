"""What end-to-end tests need: the SPEC users' own API clients, the operator as a real process,
and patient checks that poll the cluster instead of sleeping blindly.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "daypass.dev", "v1alpha1"
USERS = {
    "alice": ["developers"],
    "carol": ["developers"],
    "bob": ["sre-leads"],
    "erin": ["sre-leads"],
    "dave": [],
}
INSTALL = [
    ROOT / "crds",
    ROOT / "deploy" / "namespace.yaml",
    ROOT / "deploy" / "rbac.yaml",
    ROOT / "deploy" / "user-rbac.yaml",
    ROOT / "deploy" / "admission",
]

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def eventually(check: Callable[[], T | None], timeout: float = 10.0, every: float = 0.05,
               what: str = "condition") -> T:
    """Poll until `check` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class User:
    """One person, calling the API server with their own credentials."""

    name: str
    client: ApiClient

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.client)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.client)

    @property
    def rbac(self) -> kubernetes.client.RbacAuthorizationV1Api:
        return kubernetes.client.RbacAuthorizationV1Api(self.client)

    def can_list_pods(self, namespace: str) -> bool:
        """Really list pods, as this user: the access Daypass grants or takes away."""
        try:
            self.core.list_namespaced_pod(namespace, limit=1)
        except ApiException as error:
            if error.status == 403:
                return False
            raise
        return True

    def request(self, namespace: str, role: str = "edit", kind: str = "ClusterRole",
                name: str | None = None, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AccessRequest",
            "metadata": {"name": name} if name else {"generateName": f"{self.name}-{role}-"},
            "spec": {"role": {"kind": kind, "name": role}, **spec},
        }
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "accessrequests", body
        )
        return created


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_path: str
    users: dict[str, User]
    admin: User
    operator_context: str | None
    local: Any = None
    temporary_policies: set[str] = field(default_factory=set)

    def kubectl(self, *args: str, user: str = "admin", input: str | None = None,
                ) -> subprocess.CompletedProcess[str]:
        if self.local is not None:
            result: subprocess.CompletedProcess[str] = self.local.kubectl(*args, user=user,
                                                                          input=input)
            return result
        impersonate = [] if user == "admin" else ["--as", user] + [
            f"--as-group={group}" for group in USERS.get(user, [])
        ]
        return subprocess.run([self.kubectl_path, "--kubeconfig", str(self.kubeconfig),
                               *impersonate, *args], input=input, capture_output=True,
                              text=True, check=False)

    def get_request(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.admin.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "accessrequests", name
        )
        return found

    def phase(self, namespace: str, name: str) -> str | None:
        return (self.get_request(namespace, name).get("status") or {}).get("phase")

    def wait_phase(self, namespace: str, name: str, *phases: str, timeout: float = 15,
                   ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            body = self.get_request(namespace, name)
            return body if (body.get("status") or {}).get("phase") in phases else None

        return eventually(reached, timeout, what=f"{namespace}/{name} to be {'/'.join(phases)}")

    def events(self, namespace: str, name: str) -> list[Any]:
        found = self.admin.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=AccessRequest,involvedObject.name={name}",
        ).items
        return sorted(found, key=lambda e: (e.event_time or e.first_timestamp))

    def binding(self, namespace: str, name: str) -> Any | None:
        try:
            return self.admin.rbac.read_namespaced_role_binding(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]], keep: bool = False) -> None:
        """Server-side apply as admin. Policies are deleted after the test unless `keep`."""
        documents = manifest if isinstance(manifest, list) else [manifest]
        if not keep:
            self.temporary_policies.update(d["metadata"]["name"] for d in documents
                                           if d.get("kind") == "AccessPolicy")
        text = yaml.safe_dump_all(documents)
        result = self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                              input=text)
        assert result.returncode == 0, result.stderr

    def delete_policy(self, name: str) -> None:
        try:
            self.admin.custom.delete_cluster_custom_object(GROUP, VERSION, "accesspolicies", name)
        except ApiException as error:
            if error.status != 404:
                raise

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels or {}}})


def policy(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "subjects": {"groups": ["developers"]},
        "roles": [{"kind": "ClusterRole", "name": "edit"}],
        "namespaces": {"names": ["team-a"]},
        "maxDuration": "4h",
        "defaultDuration": "1h",
    }
    base.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessPolicy",
            "metadata": {"name": name}, "spec": base}


def client_for_context(kubeconfig: Path, context: str) -> ApiClient:
    configuration = Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), context=context,
                                       client_configuration=configuration)
    return ApiClient(configuration)


def impersonating_client(kubeconfig: Path, user: str, groups: list[str]) -> ApiClient:
    configuration = Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig),
                                       client_configuration=configuration)
    client = ApiClient(configuration)
    client.set_default_header("Impersonate-User", user)
    if groups:
        client.set_default_header("Impersonate-Group", groups[0])
    return client


@dataclass
class Operator:
    """`daypass run` as a real process, its audit log in a file the tests read."""

    kubeconfig: Path
    context: str | None
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    starts: int = 0
    log_files: list[Path] = field(default_factory=list)

    @property
    def audit_path(self) -> Path:
        return self.workdir / "audit.jsonl"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.starts += 1
        log_path = self.workdir / f"operator-{self.starts}.log"
        self.log_files.append(log_path)
        command = [sys.executable, "-m", "daypass.cli.run", "run", "--kubeconfig",
                   str(self.kubeconfig), "--log-format", "json", "--audit-log",
                   str(self.audit_path)]
        if self.context:
            command += ["--context", self.context]
        command += self.extra_args
        env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, preexec_fn=_die_with_parent)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    def transitions(self, request: str) -> list[dict[str, Any]]:
        """A request's audit lines, one per transition: a line written again after a crash or
        a conflicting write carries the same `seq` and counts once."""
        seen: set[Any] = set()
        lines = []
        for line in self.audit_lines():
            if line.get("request") != request:
                continue
            key = (line.get("uid"), line.get("seq"), line["event"])
            if line.get("seq") is not None and key in seen:
                continue
            seen.add(key)
            lines.append(line)
        return lines

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.log_files
                         if path.exists())


def _die_with_parent() -> None:
    """An operator started by a test run never outlives it, even when the run is killed:
    a leftover would keep acting on the cluster and answering the next run's checks."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
