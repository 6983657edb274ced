"""Fixtures for the install tests: kubectl and helm built from their Go modules, and a private
local control plane of their own.

The private control plane has its own state directory and ports, never the shared one: these
tests install and delete CRDs and cluster-wide RBAC, which would pull the floor from under
anyone else's tests. Set DAYPASS_INSTALL_CLUSTER_DIR, DAYPASS_INSTALL_APISERVER_PORT and
DAYPASS_INSTALL_ETCD_PORT to move it. It is stopped at the end of the session unless it was
already running before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from daypass.controlplane import build, cluster

from .manifests import Manifest, Tools, parse

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def tools() -> Tools:
    bins = build.bin_dir() if build.binaries_present() else build.build()
    return Tools(kubectl=bins / "kubectl", helm=build.build_helm())


@pytest.fixture(scope="session")
def kustomized(tools: Tools) -> list[Manifest]:
    return parse(tools.kustomize())


@pytest.fixture(scope="session")
def charted(tools: Tools) -> list[Manifest]:
    """The chart with its defaults, rendering the namespace too, as deploy/ does."""
    return parse(tools.chart("--set", "createNamespace=true"))


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[cluster.LocalCluster]:
    state = Path(os.environ.get("DAYPASS_INSTALL_CLUSTER_DIR")
                 or build.cache_root() / "install-cluster")
    ports = {
        "DAYPASS_APISERVER_PORT": os.environ.get("DAYPASS_INSTALL_APISERVER_PORT", "17443"),
        "DAYPASS_ETCD_PORT": os.environ.get("DAYPASS_INSTALL_ETCD_PORT", "13379"),
    }
    was_running = all(component.running for component in cluster.status(state))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ports.items():
            patch.setenv(name, value)
        running = cluster.start(state_dir=state)
    yield running
    if not was_running:
        cluster.stop(state_dir=state)
