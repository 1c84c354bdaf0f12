"""Run folders, their keys and the rows of curves merged into tables."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from geli_lib.alignment.generation_eval import SCORING_BATCH
from geli_lib.alignment.rl.curve import CURVE_BATCH
from geli_lib.alignment.rl.group import GROUP_TRAINER
from geli_lib.alignment.rl.prompt import RLError
from geli_lib.core.io import cache_dir, content_key, file_key, write_csv, write_json
from geli_lib.core.params import DataParams, RLParams, to_dict
from geli_lib.core.runs import results_dir
from geli_lib.reward.experiments import slug

# --------------------------------------------------------------------------- run folders, curves


def run_dir(results_key: str, name: str, seed: int, algorithm: str = "ppo") -> Path:
    """Cache folder of one adaptation: adapters, resume state, ``done.json``; keyed like the results
    (:attr:`StudyParams.results_key`), so an ad-hoc or other-corpus run never replaces the study's."""
    return cache_dir(f"rl/{results_key}/{algorithm}") / slug(name) / f"seed{seed}"


#: RLParams fields that do not change a training run (which functions, generations, checkpoint spacing, how many
#: train at once).
_NOT_TRAINING = ("reward_fns", "eval_contexts", "gen_tokens", "gen_do_sample", "save_every", "workers")


def tensorboard_dir(results_key: str, algorithm: str, name: str, seed: int) -> Path:
    """``results/<results_key>/tensorboard/<algorithm>-<name>-seed<seed>``: one adaptation's TensorBoard log."""
    return results_dir(results_key, f"tensorboard/{algorithm}-{slug(name)}-seed{seed}")


def launched_processes() -> int:
    """How many processes share each update: ``WORLD_SIZE`` as ``accelerate launch`` / ``torchrun`` set it, else 1.
    ``rl.batch_size`` is per process, so a launch of N processes trains on N times the responses per update."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank among the launched ones (``RANK`` as ``accelerate launch`` / ``torchrun`` set it), else 0."""
    return int(os.environ.get("RANK", "0"))


def prepare_run_dir(run: Path, key: str, wait_s: float = 600.0) -> None:
    """Make ``run`` the folder of the inputs ``key``: a folder left by other inputs is cleared, and a state
    swap that a stop interrupted is completed. Under several launched processes only the first prepares it
    and the others wait, up to ``wait_s``, for its key: each clearing a folder the other had just written
    made a 2-process run fail (the key's atomic write lost its folder)."""
    key_path = run / "key.json"

    def holds_key() -> bool:
        try:
            return json.loads(key_path.read_text()).get("key") == key
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    if launched_rank() != 0:
        deadline = time.monotonic() + wait_s
        while not holds_key():
            if time.monotonic() > deadline:
                raise RLError(f"{run}: the first launched process did not prepare the run folder in {wait_s:.0f} s")
            time.sleep(0.1)
        return
    if run.exists() and not holds_key():
        shutil.rmtree(run)  # outputs of other inputs: start clean
    run.mkdir(parents=True, exist_ok=True)
    write_json(key_path, {"key": key})
    state_dir, old = run / "state", run / ".state.old"
    if not state_dir.exists() and old.exists():  # stopped while swapping states
        os.replace(old, state_dir)


def run_key(
    rl: RLParams,
    reward_folder: Path,
    train: pd.DataFrame,
    seed: int,
    curve: pd.DataFrame | None = None,
    data: DataParams | None = None,
) -> str:
    """What an adaptation's outputs are valid for: its training parameters, the reward function's files,
    its prompts and the dialogue states r_θ scores them in, the evaluation contexts and their batching
    (:data:`CURVE_BATCH`: it picks the update kept), how RLOO / GRPO compute (:data:`GROUP_TRAINER`), how r̂
    encodes texts (:data:`~geli_lib.alignment.generation_eval.SCORING_BATCH`: the rewards' last bits) and
    r_θ's history cut, and how many launched processes share an update (when several: :func:`launched_processes`)."""
    files = [p for p in sorted(reward_folder.rglob("*")) if p.is_file()]
    fields = {k: v for k, v in to_dict(rl).items() if k not in _NOT_TRAINING}
    d = data or DataParams()
    texts = [
        frame[col].astype(str).tolist()
        for frame in (train, curve)
        if frame is not None
        for col in ("history", "reward_history")
        if col in frame
    ]
    curve_ids = [] if curve is None else curve["context_id"].tolist()
    cut = [d.history_turns, d.history_chars]
    ids = train["context_id"].tolist()
    shared = [launched_processes()] if launched_processes() > 1 else []  # one process: the keys runs already have
    return content_key(
        fields, file_key(files), ids, seed, curve_ids, CURVE_BATCH, GROUP_TRAINER, SCORING_BATCH, cut, texts, *shared
    )


def finished_run(run: Path, key: str) -> dict[str, Any] | None:
    """``done.json`` of the adaptation in ``run`` when it finished with the inputs of ``key`` (its adapter
    saved), else None."""
    done_path = run / "done.json"
    if not done_path.exists() or not (run / "adapter").is_dir():
        return None
    done = json.loads(done_path.read_text())
    return done if done.get("key") == key else None


def merge_rows(path: Path, rows: pd.DataFrame, keys: list[str], columns: Sequence[str]) -> pd.DataFrame:
    """Replace in the CSV at ``path`` the rows whose ``keys`` values appear in ``rows``; write atomically."""
    rows = rows.reindex(columns=list(dict.fromkeys([*columns, *rows.columns])))
    if path.exists() and path.stat().st_size:
        old = pd.read_csv(path, keep_default_na=False, na_values=[""])
        for k in keys:  # same dtype on both sides before comparing
            old[k], rows[k] = old[k].astype(str), rows[k].astype(str)
        drop = old.set_index(keys).index.isin(rows.set_index(keys).index.unique())
        rows = pd.concat([old[~drop], rows], ignore_index=True)
    for k in ("seed", "step", "turn_idx"):
        if k in rows:
            rows[k] = pd.to_numeric(rows[k]).astype(int)
    write_csv(path, rows)
    return rows
