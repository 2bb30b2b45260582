"""The tracker settings an xgboost.dask fit takes from the cluster spec, on a real scheduler."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import yaml

from churn.clusters import ClusterError, worker_threads, xgboost_collective
from churn.config import LocalClusterSpec, SlurmSpec
from tests.conftest import ROOT
from tests.servers import free_port


def _slurm(**xgboost) -> SlurmSpec:
    return SlurmSpec.model_validate({**yaml.safe_load((ROOT / "cluster" / "slurm.yaml").read_text()),
                                     "xgboost": xgboost})


def test_the_tracker_listens_where_the_workers_reach_the_scheduler(client):
    """No host in the spec: the host of the scheduler's own address; a range: its first free port on
    that host; a range wholly taken: one ClusterError; kinds without an xgboost section: None."""
    assert xgboost_collective(LocalClusterSpec(), client) is None
    assert xgboost_collective(_slurm(), client) == {"tracker_host_ip": "127.0.0.1", "tracker_port": 0}
    assert xgboost_collective(_slurm(tracker_host="10.1.0.5", tracker_port=8789, timeout=30), client) == {
        "tracker_host_ip": "10.1.0.5", "tracker_port": 8789, "timeout": 30}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ClusterError, match=rf"every port of {port}-{port} is in use .*127\.0\.0\.1"):
            xgboost_collective(_slurm(tracker_port=f"{port}-{port}"), client)
        picked = xgboost_collective(_slurm(tracker_port=f"{port}-{port + 50}"), client)["tracker_port"]
        assert port < picked <= port + 50


def test_an_xgboost_dask_fit_runs_with_the_spec_tracker(client):
    """The kwargs make the full-data fit's xgboost.collective.Config (churn.modeling.full_data.collective_config,
    what train.run passes it), which a real xgboost.dask fit on the suite's cluster accepts, its
    tracker on the port the spec fixed, nthread the workers' threads."""
    dxgb = pytest.importorskip("xgboost.dask")
    import dask.array as da

    from churn.modeling.full_data import collective_config

    port = free_port()
    kwargs = xgboost_collective(_slurm(tracker_port=port, timeout=60), client)
    assert kwargs == {"tracker_host_ip": "127.0.0.1", "tracker_port": port, "timeout": 60}
    coll = collective_config(kwargs)
    assert (coll.tracker_host_ip, coll.tracker_port, coll.timeout) == ("127.0.0.1", port, 60)  # the spec's timeout wins
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = (X[:, 0] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    nthread = next(iter(client.nthreads().values()))
    with client.as_current():  # xgboost.dask asks for the current client even when given one
        dtrain = dxgb.DaskDMatrix(client, da.from_array(X, chunks=100), da.from_array(y, chunks=100))
        out = dxgb.train(client, {"objective": "binary:logistic", "nthread": nthread, "tree_method": "hist"},
                         dtrain, num_boost_round=3, coll_cfg=coll)
    assert out["booster"].num_boosted_rounds() == 3
    assert worker_threads(LocalClusterSpec(threads_per_worker=1)) == nthread == 1
