"""A real two-process ``distributed.LocalCluster`` shared by the cluster tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def cluster():
    """The cluster; the environment is restored once it is up, because distributed sets
    OMP_NUM_THREADS=1 (and more) in *this* process for its workers, and every pipeline run a
    later test starts would inherit it: one torch thread instead of two trains a different
    model in the last bits than the reference runs made before."""
    from distributed import LocalCluster

    environment = dict(os.environ)
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster:
            os.environ.clear()
            os.environ.update(environment)
            yield cluster
    finally:
        os.environ.clear()
        os.environ.update(environment)
