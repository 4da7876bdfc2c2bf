"""Connecting to a dask.distributed cluster and spreading shard tasks over its workers.

Workers must have this package installed and see the run folder (and the images) at the same
paths as the client: shared storage. With no scheduler address, nothing here is used and the
stages run on this machine.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import DaskConfig
from pipeline.errors import UserError

CONNECT_TIMEOUT = 10  # seconds


def connect(address: str) -> Any:
    """A ``distributed.Client`` for the scheduler at ``address``, or a one-line error."""
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise UserError(f"cannot reach the dask scheduler at {address} ({error}); start one with "
                        "`dask scheduler` and workers with `dask worker ADDRESS`, or drop "
                        "--scheduler / [dask] scheduler to run on this machine") from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)  # tasks would wait forever
    except TimeoutError:
        client.close()
        raise UserError(f"the dask scheduler at {address} has no workers; start them with "
                        f"`dask worker {address}`") from None
    return client


def shard_count(client: Any, spec: DaskConfig) -> int:
    """How many shard tasks to submit: ``[dask] shards``, else one per (GPU) worker slot."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    address = client.scheduler.address
    if not workers:
        raise UserError(f"the dask scheduler at {address} has no workers; start them with "
                        f"`dask worker {address}`")
    if spec.gpu:
        gpus = sum(int(worker.get("resources", {}).get("GPU", 0)) for worker in workers)
        if not gpus:
            raise UserError(f"[dask] gpu = true but no worker of {address} declares a GPU; start "
                            f"workers with `dask worker {address} --resources GPU=1`, or set "
                            "[dask] gpu = false")
        return spec.shards or gpus
    return spec.shards or len(workers)


def run_shards(client: Any, spec: DaskConfig, func: Callable[..., Any], args: Sequence[Any],
               items: Sequence[Any], name: str, **kwargs: Any) -> list[Any]:
    """Call ``func(*args, share, **kwargs)`` once per share of ``items`` (round-robin), each as
    one task, and return the results as they finish. A worker that dies has its task rerun
    elsewhere; when a task fails or the client is interrupted, the others are cancelled."""
    from distributed import as_completed

    count = max(1, min(shard_count(client, spec), len(items)))
    token = uuid.uuid4().hex[:8]  # keys unique per call: runs of other workflows may share it
    shares = [list(items[i::count]) for i in range(count)]
    resources = {"GPU": 1} if spec.gpu else None
    futures = [client.submit(func, *args, share, key=f"{name}-{token}-shard-{i}-of-{count}",
                             resources=resources, pure=False, retries=2, **kwargs)
               for i, share in enumerate(shares)]
    print(f"[{name}] {count} shard tasks on {client.scheduler.address} "
          f"(dashboard: {client.dashboard_link})")
    results = []
    try:
        for future in as_completed(futures, loop=client.loop):
            results.append(future.result())
    except BaseException:
        client.cancel(futures)  # a task already running finishes its chunk, then its writes
        raise  # are refused once a rerun has replaced the store (see fill_share's key)
    return results
