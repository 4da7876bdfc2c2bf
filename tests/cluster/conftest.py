"""A real two-process ``distributed.LocalCluster`` shared by the cluster tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster:
        yield cluster
