"""The reward-function grid on Dask: a real scheduler and workers give the serial rows; bad settings are named."""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import dask
import pytest
import torch
from distributed import Client
from fixtures import tiny_reward_data

from geli_lib.core.compute import (
    NoGPUWorkers,
    SchedulerUnreachable,
    close_grid_clients,
    connect,
    dashboard_link,
    dask_client,
    free_port,
    grid_results,
    loopback_cluster,
    slurm_cluster,
)
from geli_lib.core.params import ComputeParams, SlurmParams
from geli_lib.reward import experiments as ex

#: Seconds a start-up or a run of the loopback cluster may take: generous, because the suite runs
#: beside other CPU-heavy work on 2 cores and each worker imports torch for its first task.
CLUSTER_TIMEOUT_S = 300
#: The grid of the issue: two methods (a GE and an LI one) × two seeds.
SPECS = [ex.MethodSpec("rrd", "GE: RRD", "rrd"), ex.VISUAL_AFFECT]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def reward_data(tmp_path_factory):
    """The smoke profile's reward training on a tiny simulated corpus with random features (no encoder)."""
    params, data = tiny_reward_data(tmp_path_factory.mktemp("corpus"))
    return dataclasses.replace(params, adhoc=""), data


@pytest.fixture(scope="module")
def serial(reward_data, tmp_path_factory):
    """The grid's rows and saved reward functions, run in this process (the default ``serial``)."""
    params, data = reward_data
    cache = tmp_path_factory.mktemp("serial-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GELI_CACHE", str(cache))
        rows, _ = ex.run_methods(data, SPECS, SEEDS, params)
    return rows, cache


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    """A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1; the grid's clients are
    closed before they stop."""
    with loopback_cluster(tmp_path_factory.mktemp("logs"), timeout=CLUSTER_TIMEOUT_S) as cluster:
        try:
            yield cluster
        finally:
            close_grid_clients()


def _heads(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every saved reward function's head under ``cache`` (name/seed -> state dict)."""
    return {
        str(p.parent.relative_to(cache)): torch.load(p, weights_only=True)
        for p in sorted(cache.glob("reward_functions/**/head.pt"))
    }


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_grid_on_a_loopback_cluster_gives_the_serial_rows_and_heads(
    reward_data, serial, loopback, tmp_path, monkeypatch
):
    """Two methods × two seeds as tasks on a real scheduler + 2 workers, with an empty cache (every
    training runs on a worker): the same table and, bit for bit, the same saved heads as the serial run."""
    from distributed import Client, get_task_stream

    params, data = reward_data
    serial_rows, serial_cache = serial
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    on_cluster = dataclasses.replace(params, compute=ComputeParams(scheduler=loopback.address))
    with Client(loopback.address, timeout=CLUSTER_TIMEOUT_S) as watcher, get_task_stream(watcher) as stream:
        rows, _ = ex.run_methods(data, SPECS, SEEDS, on_cluster)
        workers = set(watcher.scheduler_info()["workers"])
    ran = [t for t in stream.data if t["key"].startswith("_in_threads")]
    assert len(ran) == len(SPECS) * len(SEEDS) and {t["worker"] for t in ran} <= workers
    assert rows.equals(serial_rows), (rows, serial_rows)
    got, want = _heads(tmp_path), _heads(serial_cache)
    assert sorted(got) == sorted(want) and len(got) == len(SPECS) * len(SEEDS)
    for name in want:  # written here, by the client, from what the workers returned
        assert all(torch.equal(got[name][k], want[name][k]) for k in want[name]), name
    # the cache the client wrote is what a later grid reads: nothing more is submitted
    with Client(loopback.address, timeout=CLUSTER_TIMEOUT_S) as watcher, get_task_stream(watcher) as stream:
        again, _ = ex.run_methods(data, SPECS, SEEDS, on_cluster, save=False)
    assert again.equals(serial_rows) and not [t for t in stream.data if t["key"].startswith("_in_threads")]


@pytest.mark.slow
def test_cuda_on_a_scheduler_without_gpu_workers_is_refused_before_submitting(
    reward_data, loopback, tmp_path, monkeypatch
):
    params, data = reward_data
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    on_gpu = dataclasses.replace(params, device="cuda", compute=ComputeParams(scheduler=loopback.address))
    with pytest.raises(
        NoGPUWorkers,
        match=rf"compute.scheduler {loopback.address}: device is cuda, but none of "
        r"its 2 workers offers a GPU; .*--resources GPU=1",
    ):
        ex.run_methods(data, SPECS, SEEDS, on_gpu)
    assert _files(tmp_path) == []


def test_unreachable_scheduler_is_named_and_nothing_is_written(reward_data, tmp_path, monkeypatch):
    params, data = reward_data
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    closed = f"tcp://127.0.0.1:{free_port()}"
    nowhere = dataclasses.replace(params, compute=ComputeParams(scheduler=closed))
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(SchedulerUnreachable, match=f"compute.scheduler {closed}: no Dask scheduler answered"),
    ):
        ex.run_methods(data, SPECS, SEEDS, nowhere)
    assert _files(tmp_path) == []


def test_failed_connect_leaves_no_half_built_client_for_the_garbage_collector():
    """A refused or malformed address leaves no live Client behind, even with the collector off.

    Such a Client, collected later, closed itself inside the next LocalCluster's
    start-up while that held the lock Client.close waits for: the test suite hung
    (2 of 5 runs of three Dask tests here; the last CI run timed out on it).
    """
    closed = f"tcp://127.0.0.1:{free_port()}"

    def open_clients() -> set[int]:  # other tests' clients (the grid keeps its own open) are not ours
        return {id(o) for o in gc.get_objects() if type(o) is Client and o.status != "closed"}

    gc.disable()  # only connect() itself may clean up
    try:
        for address, expected in [(closed, "no Dask scheduler answered"), ("localhost:port", "not a Dask scheduler")]:
            before = open_clients()
            with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
                with pytest.raises(SchedulerUnreachable) as err:
                    connect(address)
            assert expected in str(err.value) and err.value.__context__ is None
            assert open_clients() - before == set(), address
    finally:
        gc.enable()


def test_slurm_job_script_asks_for_the_section_and_needs_no_sbatch():
    """What each SLURM job runs, built on a machine without SLURM: constructing submits nothing."""
    assert shutil.which("sbatch") is None  # this machine has no SLURM: nothing may have been submitted
    slurm = SlurmParams(
        queue="gpu", cores=4, memory="16GB", gpus=1, walltime="02:00:00", jobs=3, directives=["--account=geli"]
    )
    with slurm_cluster(slurm) as cluster:
        script = cluster.job_script()
        assert len(cluster.workers) == 0
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH -t 02:00:00",
        "#SBATCH --account=geli",
        "#SBATCH --gres=gpu:1",
    ):
        assert line in script.splitlines(), (line, script)
    assert "#SBATCH --mem=15G" in script  # 16 GB in GiB, as dask-jobqueue writes it
    worker = script.strip().splitlines()[-1]
    assert "distributed.cli.dask_worker" in worker and "--resources GPU=1" in worker and "--nthreads 4" in worker
    with slurm_cluster(dataclasses.replace(slurm, gpus=0)) as cluster:
        cpu_script = cluster.job_script()
    assert "--gres" not in cpu_script and "--resources" not in cpu_script
    with pytest.raises(ValueError, match="compute.slurm.walltime: is required"):
        slurm_cluster(dataclasses.replace(slurm, walltime=""))


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["serial", "local"])
def test_grid_results_arrive_as_each_task_finishes_and_a_failure_keeps_the_earlier_ones(scheduler):
    """An adaptation takes minutes: its caller writes each result as it arrives (grid_results), so what
    finished before a failing (or interrupted) task is not lost; each result comes with its call's index."""
    import operator

    compute = ComputeParams(scheduler=scheduler, workers=1)
    try:
        got = []
        with pytest.raises(ZeroDivisionError):
            for i, value in grid_results(operator.truediv, 1.0, [(2.0,), (0.0,), (4.0,)], compute):
                got.append((i, value))
        assert got == [(0, 0.5)]  # one worker, one task at a time: the first finished before the second failed
        assert sorted(grid_results(operator.truediv, 1.0, [(2.0,), (4.0,)], compute)) == [(0, 0.5), (1, 0.25)]
    finally:
        close_grid_clients()


def test_local_cluster_workers_keep_the_thread_limits_but_not_the_malloc_trim_threshold():
    """Dask's MALLOC_TRIM_THRESHOLD_ turns off glibc's adaptive mmap threshold (slower frame decoding): not set."""
    with dask_client(None, 1) as client:
        names = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")
        (env,) = client.run(lambda: {k: os.environ.get(k) for k in names}).values()
        assert _status(dashboard_link(client)) == 200  # the dashboard, served by default
    assert env == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}
    with dask_client(None, 1, dashboard=False) as client:
        assert _status(dashboard_link(client)) == 404  # nobody watches: the scheduler's web server has no dashboard


def _status(url: str) -> int:
    """HTTP status of a GET of ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
