"""Session fixtures: a real control plane (the local one, or $KUBECONFIG's), Daypass installed,
the operator running as the `daypass` user with the permissions in deploy/, and the SPEC users.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    INSTALL,
    USERS,
    Cluster,
    Operator,
    User,
    client_for_context,
    eventually,
    impersonating_client,
    policy,
    unique,
)

pytestmark = pytest.mark.e2e

STANDARD_POLICY = "developers-edit"
ELIGIBLE = "daypass.dev/eligible"
# The operator's metrics port during the tests, beside the API server's own port range.
METRICS_PORT = int(os.environ.get("DAYPASS_APISERVER_PORT", "16443")) + 2600
HEALTH_PORT = METRICS_PORT + 1


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    external = os.environ.get("KUBECONFIG")
    if external and not os.environ.get("DAYPASS_LOCAL_CLUSTER"):
        kubeconfig = Path(external.split(os.pathsep)[0])
        admin_client = client_for_context(kubeconfig, None)  # type: ignore[arg-type]
        users = {name: User(name, impersonating_client(kubeconfig, name, groups))
                 for name, groups in USERS.items()}
        found = Cluster(kubeconfig, shutil.which("kubectl") or "kubectl", users,
                        User("admin", admin_client), operator_context=None)
        for path in INSTALL:
            result = found.kubectl("apply", "--server-side", "--force-conflicts", "-R", "-f",
                                   str(path))
            assert result.returncode == 0, result.stderr
        return found

    from daypass.controlplane import cluster as local

    running = local.start(apply=INSTALL)
    users = {name: User(name, client_for_context(running.kubeconfig, running.context(name)))
             for name in USERS}
    admin = User("admin", client_for_context(running.kubeconfig, running.context("admin")))
    return Cluster(running.kubeconfig, str(running.bin_dir / "kubectl"), users, admin,
                   operator_context=running.context("daypass"), local=running)


@pytest.fixture(scope="session")
def namespaces(cluster: Cluster) -> tuple[str, str]:
    cluster.ensure_namespace("team-a")
    cluster.ensure_namespace("team-b")
    return ("team-a", "team-b")


@pytest.fixture(scope="session")
def standard_policy(cluster: Cluster, namespaces: tuple[str, str]) -> str:
    cluster.apply(keep=True, manifest=policy(
        STANDARD_POLICY,
        roles=[{"kind": "ClusterRole", "name": "edit"}, {"kind": "Role", "name": "debugger"}],
        namespaces={"names": ["team-a"], "selector": {"matchLabels": {ELIGIBLE: "true"}}},
        reason={"required": True, "pattern": "^[A-Z]+-[0-9]+"},
    ))
    return STANDARD_POLICY


@pytest.fixture(scope="session")
def operator(cluster: Cluster, standard_policy: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    running = Operator(cluster.kubeconfig, cluster.operator_context,
                       tmp_path_factory.mktemp("operator"), extra_args=operator_args(cluster))
    running.start()
    wait_until_serving(cluster, running, standard_policy)
    yield running
    running.stop()


def operator_args(cluster: Cluster) -> list[str]:
    """Serve the local control plane's audit webhook, so that usage is counted."""
    served = ["--metrics-port", str(METRICS_PORT), "--health-port", str(HEALTH_PORT)]
    return [*cluster.local.operator_args(), *served] if cluster.local is not None else served


def wait_until_serving(cluster: Cluster, running: Operator, policy_name: str) -> None:
    """Until this very process says it is ready (/readyz: it has listed everything it
    watches) and reports the policy Ready; a status left by an earlier run proves nothing."""
    port = next((int(running.extra_args[i + 1]) for i, arg in enumerate(running.extra_args)
                 if arg == "--health-port"), None)

    def ready() -> bool:
        assert running.process is not None and running.process.poll() is None, running.logs()
        if port is not None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                    pass
            except OSError:
                return False
        body = cluster.admin.custom.get_cluster_custom_object(
            "daypass.dev", "v1alpha1", "accesspolicies", policy_name)
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (body.get("status") or {}).get("conditions") or [])

    eventually(ready, timeout=60, every=0.2, what="the operator to be ready")


@pytest.fixture
def space(cluster: Cluster, operator: Operator) -> str:
    """A namespace of this test's own, where developers-edit allows edit."""
    name = unique("space")
    cluster.ensure_namespace(name, labels={ELIGIBLE: "true"})
    return name


@pytest.fixture
def alice(cluster: Cluster) -> User:
    return cluster.users["alice"]


@pytest.fixture
def carol(cluster: Cluster) -> User:
    return cluster.users["carol"]


@pytest.fixture
def dave(cluster: Cluster) -> User:
    return cluster.users["dave"]


@pytest.fixture(autouse=True)
def _delete_the_tests_policies(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test's own policies go when it ends, so that no test sees another's."""
    yield
    if "cluster" in request.fixturenames:
        cluster: Cluster = request.getfixturevalue("cluster")
        for name in sorted(cluster.temporary_policies):
            cluster.delete_policy(name)
        cluster.temporary_policies.clear()


@pytest.fixture(autouse=True)
def _show_operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "operator" in request.fixturenames:
        running: Operator = request.getfixturevalue("operator")
        print("---- operator log (tail) ----")
        print(running.logs()[-6000:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
