"""The ``slurm`` tests' cluster: two nodes of a real SLURM on this machine (tests/slurm/cluster.py),
started once for the module, skipped with the reason where SLURM is not installed or we are not root."""

from __future__ import annotations

import pytest

from cluster import SlurmCluster


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    why = SlurmCluster.available()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    print(f"\ntest SLURM cluster: {len(cluster.nodes)} nodes up in {cluster.startup_s:.1f} s")
    yield cluster
    cluster.stop()
