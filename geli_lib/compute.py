"""Where parallel work runs: an embedded Dask ``LocalCluster``, or an existing Dask scheduler.

One place decides it, so the same task code runs on this machine's cores and on
many machines (``dask scheduler`` on one, ``dask worker tcp://HOST:8786`` on
each of the others). Dask, not a home-made pool, because it already does what a
long extraction needs: a task whose worker dies is run again on another worker
(up to ``distributed.scheduler.allowed-failures`` times), a progress bar, and a
dashboard in the browser.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import dask
from distributed import Client, Future, LocalCluster, progress


class SchedulerUnreachable(ConnectionError):
    """No Dask scheduler answered at the address the user gave."""


def connect(address: str, option: str = "scheduler") -> Client:
    """A client of the Dask scheduler at ``address``; :class:`SchedulerUnreachable` naming ``option`` if none answers.

    The wait is Dask's own setting ``distributed.comm.timeouts.connect`` (30 s
    by default), named in the message so a slow network can be given longer.
    """
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:
        return Client(address)
    except ValueError as e:  # not an address at all: no point waiting
        raise SchedulerUnreachable(f"{option} {address}: not a Dask scheduler address, expected "
                                   f"tcp://HOST:PORT ({e})") from e
    except (OSError, TimeoutError) as e:  # refused until the timeout, or no answer at all
        raise SchedulerUnreachable(
            f"{option} {address}: no Dask scheduler answered within {timeout} "
            f"(distributed.comm.timeouts.connect): start one with `dask scheduler` or fix the address "
            f"[{type(e).__name__}: {e}]") from e


@contextmanager
def dask_client(scheduler: str | None, workers: int, option: str = "scheduler") -> Iterator[Client]:
    """A Dask client for the duration of the block: on ``scheduler``, or on a local cluster of ``workers`` processes.

    The local cluster has one thread per worker process: each task keeps one
    core busy on its own, and processes (not threads) sidestep the GIL in the
    Python parts of a task. It is shut down when the block ends; an existing
    scheduler and its workers are left running, only the client disconnects.
    """
    if scheduler is None:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster, \
                Client(cluster) as client:
            yield client
        return
    client = connect(scheduler, option)
    try:
        yield client
    finally:
        client.close()


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
    thread = threading.Thread(target=progress, args=(list(futures),),
                              kwargs={"notebook": False, "scheduler": client.scheduler.address},
                              name="dask-progress", daemon=True)
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
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port),
                            "--dashboard-address", f"127.0.0.1:{dash}"])
        workers = {f"w{i}": start(f"w{i}", ["worker", address, "--name", f"w{i}", "--nthreads", "1",
                                            "--no-nanny", "--host", "127.0.0.1", "--no-dashboard",
                                            # an orphaned worker stops by itself once the scheduler is gone
                                            "--death-timeout", str(int(timeout))])
                   for i in range(n_workers)}
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
