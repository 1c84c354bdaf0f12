"""The compute section: where parallel work runs (this process, a local Dask cluster, a scheduler, SLURM)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from geli_lib.core.params.base import _check, _check_choices

#: ``compute.scheduler`` values other than an address (see :class:`ComputeParams`).
SCHEDULERS = ("serial", "local", "slurm")
#: Environment variables that set ``compute.scheduler`` / ``compute.workers`` for every
#: :func:`load_params` of a process: how ``python -m geli_lib run --scheduler`` reaches the notebooks'
#: kernels (where a cluster runs changes no result, so it is no notebook parameter).
COMPUTE_ENV = {"scheduler": "GELI_SCHEDULER", "workers": "GELI_WORKERS"}


@dataclass
class SlurmParams:
    """The SLURM jobs of ``compute.scheduler: slurm``: each job is one Dask worker (``dask_jobqueue.SLURMCluster``).

    ``queue``, ``cores``, ``memory`` and ``walltime`` have no default: a wrong guess
    would be rejected by the queue, or worse, accepted and killed mid-run.
    """

    queue: str = ""
    """SLURM partition the jobs go to (``#SBATCH -p``); required."""
    cores: int = 0
    """CPU cores per job (``--cpus-per-task``); the worker runs that many tasks at once on a CPU job; required."""
    memory: str = ""
    """Memory per job, e.g. ``16GB`` (``--mem``; also the worker's memory limit); required."""
    gpus: int = 0
    """GPUs per job: 0, or 1 (``--gres=gpu:1`` and the worker resource ``GPU=1``). One worker uses one GPU:
    for more GPUs ask for more jobs."""
    walltime: str = ""
    """Longest run of a job, ``HH:MM:SS`` or ``D-HH:MM:SS`` (``-t``); required."""
    jobs: int = 1
    """SLURM jobs (Dask workers) submitted when the grid starts; they end when it does."""
    directives: list[str] = field(default_factory=list)
    """Extra ``#SBATCH`` options of each job, e.g. ``["--account=myproject"]``."""

    def validate(self) -> None:
        _check_choices(self)
        _check(self.cores >= 0, "cores", "must be >= 0", self.cores)
        _check(self.gpus in (0, 1), "gpus", "must be 0 or 1 (one GPU per worker; more jobs for more GPUs)", self.gpus)
        _check(self.jobs >= 1, "jobs", "must be >= 1", self.jobs)
        _check(
            not self.memory or re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", self.memory) is not None,
            "memory",
            "must be an amount such as 16GB",
            self.memory,
        )
        _check(
            not self.walltime or re.fullmatch(r"(\d+-)?\d{1,3}:\d{2}:\d{2}", self.walltime) is not None,
            "walltime",
            "must be HH:MM:SS or D-HH:MM:SS",
            self.walltime,
        )
        _check(
            all(d.startswith("-") for d in self.directives),
            "directives",
            "must be sbatch options starting with -",
            self.directives,
        )

    def missing(self) -> list[str]:
        """The required fields left unset."""
        return [name for name in ("queue", "cores", "memory", "walltime") if not getattr(self, name)]


@dataclass
class ComputeParams:
    """Where the reward-function grid (methods × seeds) runs; see :mod:`geli_lib.core.compute`.

    Where a task runs changes no result: a task trains with the same torch
    threads as this process (``threads``), and this process writes everything.
    So these settings never make a run ad hoc and never re-run a stage.
    """

    scheduler: str = "serial"
    """``serial`` (in this process, one task after the other: the default), ``local`` (an embedded Dask
    LocalCluster of ``workers`` processes), ``tcp://HOST:PORT`` (an existing ``dask scheduler``), or
    ``slurm`` (SLURM jobs as Dask workers, see ``slurm``). Also ``$GELI_SCHEDULER`` / ``--scheduler``."""
    workers: int = 2
    """Worker processes of ``local`` (one task each at a time). Also ``$GELI_WORKERS`` / ``--workers``."""
    threads: int = 0
    """torch threads of a task on a worker; 0 = as many as this process uses, so a task gives bit for bit
    what the serial path gives (matrix products may sum in another order on another thread count).
    1 keeps several workers on one machine from oversubscribing its cores, at the price of possible
    last-bit differences."""
    slurm: SlurmParams = field(default_factory=SlurmParams)
    """The SLURM jobs of ``scheduler: slurm``."""

    def validate(self) -> None:
        _check_choices(self)
        _check(
            self.scheduler in SCHEDULERS or re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d+", self.scheduler) is not None,
            "scheduler",
            "must be serial, local, slurm or a scheduler address tcp://HOST:PORT",
            self.scheduler,
        )
        _check(self.workers >= 1, "workers", "must be >= 1", self.workers)
        _check(self.threads >= 0, "threads", "must be >= 0", self.threads)
        if self.scheduler == "slurm":
            for name in self.slurm.missing():
                _check(False, f"slurm.{name}", "is required with scheduler: slurm", getattr(self.slurm, name))
