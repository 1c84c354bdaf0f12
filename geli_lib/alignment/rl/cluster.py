"""Adaptations as Dask tasks: the reward function's files in, the adapter and curves back."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from geli_lib.alignment.rl.ppo import train_rl
from geli_lib.alignment.rl.runs import finished_run, run_dir, run_key, tensorboard_dir
from geli_lib.core.compute import grid_results
from geli_lib.core.io import progress_enabled
from geli_lib.core.params import ComputeParams, DataParams, RLParams


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its path relative to it (what a Dask task sends or returns)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack(files: dict[str, bytes], folder: Path) -> Path:
    """Write :func:`folder_files`' files under ``folder``, in their (sorted) order."""
    for rel, blob in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return folder


def adapt_task(
    train: pd.DataFrame,
    name: str,
    reward_files: dict[str, bytes],
    rl: RLParams,
    profile: str,
    corpus: str,
    seed: int,
    device: str,
    curve: pd.DataFrame | None,
    data: DataParams | None,
) -> dict[str, bytes]:
    """One adaptation of :func:`adapt_on_cluster`, where the Dask task runs: from the reward function's files,
    in a temporary folder that goes with the task. Returns the run's adapter, ``done.json`` and TensorBoard
    log (``tensorboard/…``) for the client to write; nothing stays on the worker."""
    with tempfile.TemporaryDirectory(prefix="geli-rl-") as tmp:
        run = Path(tmp) / "run"
        train_rl(
            name,
            unpack(reward_files, Path(tmp) / "reward"),
            train,
            rl,
            profile,
            corpus,
            seed,
            device,
            out_dir=run,
            curve=curve,
            data=data,
            write_results=False,
        )
        return {
            rel: blob
            for rel, blob in folder_files(run).items()
            if rel == "done.json" or rel.split("/")[0] in ("adapter", "tensorboard")
        }


def adaptations_compute(compute: ComputeParams, rl: RLParams) -> ComputeParams:
    """Where the adaptations train: ``compute``'s cluster, or, with ``compute.scheduler`` serial and ``rl.workers``
    > 1, a local cluster of ``rl.workers`` processes of ``rl.threads`` torch threads each (the result is each
    run's alone: :attr:`RLParams.threads` is part of its key)."""
    if compute.scheduler != "serial" or rl.workers == 1:
        return compute
    return dataclasses.replace(compute, scheduler="local", workers=rl.workers, threads=rl.threads)


def adapt_on_cluster(
    chosen: dict[str, Path],
    train: pd.DataFrame,
    rl: RLParams,
    profile: str,
    compute: ComputeParams,
    corpus: str = "simulated",
    seed: int = 0,
    device: str = "cpu",
    curve: pd.DataFrame | None = None,
    data: DataParams | None = None,
    results_key: str | None = None,
) -> list[str]:
    """Run the adaptations of ``chosen`` (name -> reward-function folder) that have not finished as Dask tasks,
    where ``compute`` and ``rl.workers`` say (:func:`adaptations_compute`); return their names. ``serial`` with
    ``rl.workers`` 1: nothing (:func:`train_rl` trains them here).

    Each task gets the reward function's files and trains in a temporary folder of its
    worker (:func:`adapt_task`, the same :func:`train_rl`, with this process's torch
    threads; with ``device`` cuda, on a worker offering ``GPU``). This process writes
    what comes back into :func:`run_dir` and :func:`tensorboard_dir` as each task finishes,
    so :func:`train_rl` with the same arguments then reads the finished run (and writes its
    table rows) like any finished one, and a stopped stage keeps the runs that finished. An
    interrupted task starts over: its resume state was on the worker.
    """
    compute = adaptations_compute(compute, rl)
    if compute.scheduler == "serial":
        return []
    key_of = results_key or profile
    todo = [
        n
        for n, folder in chosen.items()
        if finished_run(run_dir(key_of, n, seed, rl.algorithm), run_key(rl, folder, train, seed, curve, data)) is None
    ]
    calls = [(n, folder_files(chosen[n]), rl, profile, corpus, seed, device, curve, data) for n in todo]
    for i, files in grid_results(adapt_task, train, calls, compute, device, progress=progress_enabled()):
        name = todo[i]  # written as each finishes: a stopped 07 keeps the runs that had
        run = run_dir(key_of, name, seed, rl.algorithm)
        shutil.rmtree(run, ignore_errors=True)  # a partial run of this process: the worker's is complete
        unpack(
            {rel.split("/", 1)[1]: b for rel, b in files.items() if rel.startswith("tensorboard/")},
            tensorboard_dir(key_of, rl.algorithm, name, seed),
        )
        # adapter/ before done.json (sorted order): done.json, the completeness marker, last
        unpack({rel: b for rel, b in files.items() if not rel.startswith("tensorboard/")}, run)
    return todo
