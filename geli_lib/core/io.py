"""Atomic writes and content keys.

Every file a run writes goes through :func:`atomic_write`, so an interrupted run
never leaves a half-written file that a re-run would trust: the data land in a
temporary file in the same folder and are renamed into place in one step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from tqdm import tqdm as plain
from tqdm.auto import tqdm


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The caller writes to the yielded path. On an exception the temporary file is
    removed and ``path`` keeps its previous content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (keys sorted, so diffs are stable)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | Path, df: pd.DataFrame, **kwargs: Any) -> None:
    """Atomically write a DataFrame as CSV (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_write(path) as tmp:
        df.to_csv(tmp, **kwargs)


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    """Atomically write a DataFrame as parquet (no index)."""
    with atomic_write(path) as tmp:
        df.to_parquet(tmp, index=False)


def content_key(*parts: Any, length: int = 16) -> str:
    """A short hex key for any JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_key(paths: list[str | Path], length: int = 16) -> str:
    """A key over the relative names and bytes of files (folders walked in sorted order).

    Names are taken relative to each given folder, so the key is the same in any clone.
    Files are read in 1 MB blocks: model weights and videos can be larger than memory.
    """
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            h.update(b"\0")
            if not f.exists():
                h.update(b"<missing>")
                continue
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:length]


def cache_dir(sub: str = "") -> Path:
    """The ignored cache folder for large artefacts (``$GELI_CACHE``, default ``<repo>/.cache``).

    Model checkpoints, simulated corpora, canonical parquet corpora, embedding and
    LLM response caches live here, never in git.
    """
    root = Path(os.environ.get("GELI_CACHE", Path(__file__).resolve().parents[2] / ".cache"))
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress_enabled(progress: bool = True) -> bool:
    """Whether to draw a progress bar: asked for, and not switched off by ``GELI_PROGRESS=0``.

    The runner sets ``GELI_PROGRESS=0`` for notebooks it executes, so saved
    notebooks and the book hold results, not hundreds of progress-bar lines.
    """
    return progress and os.environ.get("GELI_PROGRESS", "1") != "0"


def progress_bar(total: int, desc: str, progress: bool = True, unit: str = "conv") -> Any:
    """A tqdm bar (disabled per :func:`progress_enabled`); use ``update``/``close`` or as a context.

    A disabled bar comes from plain tqdm: ``tqdm.auto`` warns inside a kernel
    even when nothing is drawn, and that warning would land in the book.
    """
    if not progress_enabled(progress):
        return plain(total=total, desc=desc, unit=unit, disable=True)
    return tqdm(total=total, desc=desc, unit=unit)
