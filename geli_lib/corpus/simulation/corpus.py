"""The corpus: every conversation, written once and marked done."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from geli_lib.core import params as params_mod
from geli_lib.core.io import atomic_write, progress_enabled, write_json
from geli_lib.core.params import ParamError, SimulationParams, to_dict
from geli_lib.corpus.simulation.conversation import SIMULATOR_VERSION, simulate_conversation

MARKER = "_COMPLETE.json"


# --------------------------------------------------------------------------- #
# The corpus                                                                   #
# --------------------------------------------------------------------------- #


def write_conversation(out_dir: Path, convo_id: str, files: dict[str, Any]) -> None:
    """Write one conversation's files atomically into ``out_dir/<convo_id>/``."""
    folder = out_dir / convo_id
    for rel, content in files.items():
        if isinstance(content, dict):
            write_json(folder / rel, content)
        else:
            with atomic_write(folder / rel) as tmp:
                tmp.write_bytes(content)


def _simulate_and_write(job: tuple[SimulationParams, int, str]) -> str:
    params, index, out_dir = job
    convo_id, files = simulate_conversation(params, index)
    write_conversation(Path(out_dir), convo_id, files)
    return convo_id


def _marker(params: SimulationParams, convo_ids: list[str] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"simulator_version": SIMULATOR_VERSION, "params": to_dict(params)}
    if convo_ids is not None:
        m["convo_ids"] = convo_ids
    return m


def is_complete(out_dir: str | Path, params: SimulationParams) -> bool:
    """True when ``out_dir`` holds a finished simulation of exactly these knobs."""
    path = Path(out_dir) / MARKER
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    want = _marker(params)
    return m.get("simulator_version") == want["simulator_version"] and m.get("params") == want["params"]


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete simulated conversation folders a previous run left that this one did not write."""
    for child in out_dir.iterdir():
        meta = child / "metadata.json"
        if child.is_dir() and child.name not in keep and meta.exists():
            try:
                simulated = json.loads(meta.read_text()).get("simulated") is True
            except ValueError:
                simulated = False
            if simulated:
                shutil.rmtree(child)


def simulate_corpus(params: SimulationParams, out_dir: str | Path, workers: int = 2, progress: bool = True) -> Path:
    """Write ``params.n_conversations`` simulated conversations in CANDOR layout under ``out_dir``.

    Deterministic: the same knobs give byte-identical files whatever ``workers``.
    ``out_dir/_COMPLETE.json`` (the knobs and the conversation ids) is written
    last; when it already matches the knobs nothing is done. Simulated folders
    of an earlier, different simulation in ``out_dir`` are removed.
    Returns ``out_dir``.
    """
    try:
        params.validate()
    except params_mod._FieldError as e:  # the same message a parameter file would give
        raise ParamError(f"simulation.{e}") from None
    out_dir = Path(out_dir)
    if is_complete(out_dir, params):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).unlink(missing_ok=True)  # from here on the folder is not trusted
    jobs = [(params, i, str(out_dir)) for i in range(params.n_conversations)]
    bar = dict(total=len(jobs), disable=not progress_enabled(progress), desc="simulating", unit="conv")
    if workers <= 1 or len(jobs) == 1:
        ids = [_simulate_and_write(j) for j in tqdm(jobs, **bar)]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            chunk = max(1, min(16, len(jobs) // (8 * workers)))
            ids = list(tqdm(pool.map(_simulate_and_write, jobs, chunksize=chunk), **bar))
    if len(set(ids)) != len(ids):  # 128-bit ids: a clash would mean a seeding bug
        raise RuntimeError("simulated conversation ids are not unique")
    _remove_stale(out_dir, set(ids))
    write_json(out_dir / MARKER, _marker(params, ids))
    return out_dir
