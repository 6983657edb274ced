"""Fixtures for the local control plane's own end-to-end tests.

They start the shared local control plane (or reuse the running one) and never stop it:
other test modules and people use it too.
"""

from __future__ import annotations

import pytest
from daypass.controlplane import cluster


@pytest.fixture(scope="session")
def local_cluster() -> cluster.LocalCluster:
    return cluster.start()
