"""Where parallel work runs: an embedded Dask ``LocalCluster``, an existing Dask scheduler, or SLURM jobs.

One place decides it, so the same task code runs on this machine's cores and on
many machines (``dask scheduler`` on one, ``dask worker tcp://HOST:8786`` on
each of the others). Dask, not a home-made pool, because it already does what a
long extraction needs: a task whose worker dies is run again on another worker
(up to ``distributed.scheduler.allowed-failures`` times), a progress bar, and a
dashboard in the browser.

The reward-function grid (:func:`grid_results`) follows the study's ``compute``
parameters (:class:`geli_lib.core.params.ComputeParams`): ``serial`` runs the tasks
in this process as before; ``local``, an address or ``slurm`` send them to Dask
workers. Tasks return their results and this process writes them, since workers
on other machines do not share its disk. With ``device: cuda`` every task asks
for the worker resource ``GPU=1``, so a GPU runs one task at a time, and a
scheduler whose workers offer no GPU is refused before anything is submitted.
"""

from __future__ import annotations

import atexit
import gc
import socket
import subprocess
import sys
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence, TypeVar

import dask
from distributed import Client, Future, LocalCluster, as_completed, progress

from geli_lib.core.params import SCHEDULERS, ComputeParams, SlurmParams

T = TypeVar("T")


class SchedulerUnreachable(ConnectionError):
    """No Dask scheduler answered at the address the user gave."""


class NoGPUWorkers(RuntimeError):
    """The device is cuda, but no worker of the scheduler offers the resource ``GPU``."""


def connect(address: str, option: str = "scheduler") -> Client:
    """A client of the Dask scheduler at ``address``; :class:`SchedulerUnreachable` naming ``option`` if none answers.

    The wait is Dask's own setting ``distributed.comm.timeouts.connect`` (30 s
    by default), named in the message so a slow network can be given longer.
    """
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:
        return Client(address)
    except ValueError as e:  # not an address at all: no point waiting
        problem = f"not a Dask scheduler address, expected tcp://HOST:PORT ({e})"
    except (OSError, TimeoutError) as e:  # refused until the timeout, or no answer at all
        problem = (
            f"no Dask scheduler answered within {timeout} (distributed.comm.timeouts.connect): "
            f"start one with `dask scheduler` or fix the address [{type(e).__name__}: {e}]"
        )
    # The half-built Client sits in a reference cycle with the traceback. Left to the
    # garbage collector, its __del__ (Client.close) ran at some later allocation: once
    # inside the next LocalCluster's start, which holds the lock Client.close waits for,
    # and the process hung for good. Collect it now, where no lock is held, and raise
    # outside the except blocks so the error does not keep that traceback alive.
    gc.collect()
    raise SchedulerUnreachable(f"{option} {address}: {problem}")


def worker_environ() -> dict[str, Any]:
    """The environment Dask gives a local cluster's worker processes, less ``MALLOC_TRIM_THRESHOLD_``.

    Dask sets it (65536) to return freed memory of long-lived pandas workers to
    the system; setting it also switches off glibc's adaptive mmap threshold, so
    every decoded video frame (~1 MB) is mapped and unmapped afresh. One
    recording's features took 6% longer with it (12.9 vs 12.1 s, one process,
    alternating runs). The thread limits (``OMP_NUM_THREADS=1`` ...) stay.
    """
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


@contextmanager
def dask_client(
    scheduler: str | None,
    workers: int,
    option: str = "scheduler",
    resources: dict[str, float] | None = None,
    dashboard: bool = True,
) -> Iterator[Client]:
    """A Dask client for the duration of the block: on ``scheduler``, or on a local cluster of ``workers`` processes.

    The local cluster has one thread per worker process: each task keeps one
    core busy on its own, and processes (not threads) sidestep the GIL in the
    Python parts of a task; each of its workers offers ``resources``; it serves
    the dashboard only with ``dashboard`` (starting it took 0.4-0.9 s of the
    cluster's 1.2-2.1 s start-up here: worth it when someone watches). It is
    shut down when the block ends; an existing scheduler and its workers are
    left running, only the client disconnects.
    """
    if scheduler is None:
        with (
            dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}),
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                resources=resources,
                **({} if dashboard else {"dashboard_address": None}),
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    client = connect(scheduler, option)
    try:
        yield client
    finally:
        client.close()


def slurm_cluster(slurm: SlurmParams) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` of ``compute.slurm``'s jobs, none submitted yet.

    Its scheduler runs in this process (on the login node); each job is one Dask
    worker of ``slurm.cores`` threads. With ``slurm.gpus`` the job asks SLURM for
    the GPU and the worker offers the resource ``GPU=1``. Building it runs no
    ``sbatch``: jobs are submitted when the cluster is scaled (:func:`grid_client`).
    """
    # lazy: SLURM clusters only
    from dask_jobqueue import SLURMCluster

    missing = slurm.missing()
    if missing:  # load_params checks this too; a SlurmParams built by hand must fail as clearly
        raise ValueError(f"compute.slurm.{missing[0]}: is required with scheduler: slurm")
    gpu = slurm.gpus > 0
    return SLURMCluster(
        queue=slurm.queue,
        cores=slurm.cores,
        processes=1,
        memory=slurm.memory,
        walltime=slurm.walltime,
        n_workers=0,
        job_extra_directives=[*slurm.directives, *([f"--gres=gpu:{slurm.gpus}"] if gpu else [])],
        worker_extra_args=["--resources", f"GPU={slurm.gpus}"] if gpu else [],
    )


#: The grid's clients of this process, by their settings: a notebook's several grids (a sweep's
#: points) reuse one cluster, whose workers already imported torch. Closed at exit.
_GRID_CLIENTS: dict[tuple[Any, ...], tuple[Client, ExitStack]] = {}


def grid_client(compute: ComputeParams, device: str = "cpu") -> Client:
    """The Dask client :func:`grid_results` submits to, started on first use and kept for the process.

    ``local``: an embedded LocalCluster of ``compute.workers`` processes; an
    address: that scheduler (:class:`SchedulerUnreachable` naming
    ``compute.scheduler`` when none answers, :class:`NoGPUWorkers` when
    ``device`` is cuda and no worker offers a GPU); ``slurm``: a
    :func:`slurm_cluster` that submits up to ``compute.slurm.jobs`` jobs while
    tasks wait and releases idle ones. :func:`close_grid_clients` shuts them down.
    """
    key = (compute.scheduler, compute.workers, repr(compute.slurm), device)
    if key in _GRID_CLIENTS and _GRID_CLIENTS[key][0].status == "running":
        return _GRID_CLIENTS[key][0]
    stack = ExitStack()
    try:
        if compute.scheduler == "slurm":
            cluster = stack.enter_context(slurm_cluster(compute.slurm))
            cluster.adapt(minimum_jobs=0, maximum_jobs=compute.slurm.jobs)
            client = stack.enter_context(Client(cluster))
        else:
            local = compute.scheduler == "local"
            client = stack.enter_context(
                dask_client(
                    None if local else compute.scheduler,
                    compute.workers,
                    "compute.scheduler",
                    {"GPU": 1} if device == "cuda" else None,
                )
            )
            if device == "cuda" and not local:
                require_gpu_workers(client, "compute.scheduler")
    except BaseException:
        stack.close()
        raise
    _GRID_CLIENTS[key] = (client, stack)
    atexit.unregister(close_grid_clients)  # registered once, with the first client (not at import)
    atexit.register(close_grid_clients)
    return client


def close_grid_clients() -> None:
    """Close every client of :func:`grid_client` (and the clusters this process started)."""
    while _GRID_CLIENTS:
        _, stack = _GRID_CLIENTS.popitem()[1]
        stack.close()


def require_gpu_workers(client: Client, option: str = "compute.scheduler") -> None:
    """:class:`NoGPUWorkers` naming ``option`` unless a worker of ``client``'s scheduler offers ``GPU``.

    Checked before anything is submitted: a task that asks for a resource no
    worker has would wait forever instead of failing.
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    if not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
        address = client.scheduler.address
        raise NoGPUWorkers(
            f"{option} {address}: device is cuda, but none of its {len(workers)} workers offers a GPU; start "
            f"each GPU worker with `dask worker {address} --resources GPU=1` (or set device: cpu)"
        )


def check_scheduler(compute: ComputeParams, device: str = "cpu", option: str = "compute.scheduler") -> None:
    """Before a run writes anything: a scheduler address must answer and, with ``device`` cuda, offer a GPU.

    :class:`SchedulerUnreachable` or :class:`NoGPUWorkers` naming ``option``;
    ``serial``, ``local`` and ``slurm`` start their own workers, so there is nothing to ask yet.
    """
    if compute.scheduler in SCHEDULERS:
        return
    with dask_client(compute.scheduler, compute.workers, option) as client:
        if device == "cuda":
            require_gpu_workers(client, option)


def task_threads(compute: ComputeParams) -> int:
    """torch threads of a grid task on a worker: ``compute.threads``, or this process's count when 0."""
    # lazy: torch is not loaded for the CLI's start-up
    import torch

    return compute.threads or torch.get_num_threads()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch runs with ``threads`` threads in the block (0: as it is), put back afterwards.

    Set in the calling thread: torch's OpenMP pool size is per calling thread.
    """
    # lazy: torch is not loaded for the CLI's start-up
    import torch

    was = torch.get_num_threads()
    torch.set_num_threads(threads or was)
    try:
        yield
    finally:
        torch.set_num_threads(was)


def _in_threads(threads: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with ``threads`` torch threads (where the task runs)."""
    with torch_threads(threads):
        return fn(*args)


def grid_results(
    fn: Callable[..., T],
    shared: Any,
    calls: Sequence[tuple[Any, ...]],
    compute: ComputeParams,
    device: str = "cpu",
    progress: bool = False,
) -> Iterator[tuple[int, T]]:
    """``(i, fn(shared, *calls[i]))`` for every call, as each one finishes, run where ``compute`` says.

    The caller can write each result as it arrives, so an interrupted grid keeps
    what finished (an adaptation takes minutes). ``serial``: here, one after the
    other, as torch is set up in this process. Otherwise one Dask task per call
    on :func:`grid_client`: ``shared`` (the data every task reads) is sent to the
    workers once, each task runs with :func:`task_threads` torch threads and,
    with ``device`` cuda, the resource ``GPU=1``. A task's exception is raised
    here when its turn comes. ``fn`` must not write files the caller reads: on
    another machine they would not be here.
    """
    if compute.scheduler == "serial" or not calls:
        for i, call in enumerate(calls):
            yield i, fn(shared, *call)
        return
    client = grid_client(compute, device)
    threads = task_threads(compute)
    resources = {"GPU": 1} if device == "cuda" else None
    data = client.scatter(shared, hash=False)
    futures = [client.submit(_in_threads, threads, fn, data, *call, resources=resources, pure=False) for call in calls]
    index = {f.key: i for i, f in enumerate(futures)}
    if progress:
        start_progress_bar(client, futures)
    try:
        for future in as_completed(futures):
            yield index[future.key], future.result()
    finally:
        client.cancel([data, *futures])


def dashboard_link(client: Client) -> str | None:
    """The URL of the scheduler's dashboard, or None when it serves none (no bokeh, ``--no-dashboard``)."""
    try:
        return client.dashboard_link or None
    except KeyError:  # a remote scheduler without the dashboard service
        return None


def start_progress_bar(client: Client, futures: Sequence[Future]) -> threading.Thread:
    """Dask's text progress bar for ``futures``, drawn from a background thread.

    Dask's console bar blocks until every future is done; in its own thread it
    lets the caller write each result as it arrives, so an interrupted run keeps
    what finished. The thread ends when the futures finish or the client closes.
    """
    thread = threading.Thread(
        target=progress,
        args=(list(futures),),
        kwargs={"notebook": False, "scheduler": client.scheduler.address},
        name="dask-progress",
        daemon=True,
    )
    thread.start()
    return thread


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster(NamedTuple):
    """A scheduler and its workers started by :func:`loopback_cluster`."""

    address: str
    """The scheduler, ``tcp://127.0.0.1:PORT``: what ``--scheduler`` takes."""
    dashboard: str
    """The scheduler's dashboard URL."""
    workers: dict[str, subprocess.Popen]
    """Worker name (``w0``, ``w1``, ...) -> its process."""


@contextmanager
def loopback_cluster(logs: Path, n_workers: int = 2, timeout: float = 300.0) -> Iterator[LoopbackCluster]:
    """A real ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1, as on a real cluster.

    What the tests and the benchmark run against: the same commands a user types
    on several machines, here on one. Workers run without a nanny, one thread
    each, so killing a worker's process kills that worker (a nanny would restart
    it). Each process logs to ``logs/<name>.log``. The block starts once every
    worker has joined (within ``timeout`` seconds); every process is stopped when
    it ends, whatever happened.
    """
    dask_cli = str(Path(sys.executable).with_name("dask"))  # the `dask` command of this environment
    port, dash = free_port(), free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        with open(logs / f"{name}.log", "wb") as log:  # the child keeps its own handle
            proc = subprocess.Popen([dask_cli, *args], stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        start(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", f"127.0.0.1:{dash}"],
        )
        workers = {
            f"w{i}": start(
                f"w{i}",
                [
                    "worker",
                    address,
                    "--name",
                    f"w{i}",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    # an orphaned worker stops by itself once the scheduler is gone
                    "--death-timeout",
                    str(int(timeout)),
                ],
            )
            for i in range(n_workers)
        }
        with Client(address, timeout=timeout) as client:
            client.wait_for_workers(n_workers, timeout=timeout)
        yield LoopbackCluster(address, f"http://127.0.0.1:{dash}/status", workers)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
