"""The smoke chain's tables, held against reference copies in ``tests/data/smoke_tables/``.

The CPU smoke chain is seeded and deterministic, so a change that should change no result (a move,
a rename, a refactor) must leave every table as it was, up to the float drift between machines (``RTOL``);
time-keeping columns differ between runs and are left out. After a change that *should* change results,
regenerate the references on purpose:

    .venv/bin/python -m geli_lib run --profile smoke --no-book
    .venv/bin/python tests/smoke_tables.py results/smoke/tables

and commit the new ``tests/data/smoke_tables/`` with the change that explains it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).parent / "data" / "smoke_tables"
#: Columns that measure time (wall clock of a machine), not results: never compared.
TIMING_COLUMNS = {"seconds", "s / update"}
#: Tolerance of numeric columns, set by the float drift between CPUs, not between runs: on one machine two
#: runs write identical bytes, but the references are also held on CI machines whose BLAS / ATen kernels
#: sum in another order. Measured: CI's first mismatch was 2.8e-7 relative (a training loss); a smoke run
#: here with torch's vector kernels off (ATEN_CPU_CAPABILITY=default, another summation order end to end)
#: moved the reward functions' statistics by at most 1.2% beyond 1e-3 absolute (GELI's lambda sweep,
#: within-conversation Spearman 0.0037), KL by 7e-4 nats, and no text, p-value or count. A change meant to
#: change results moves them by far more; one meant to change nothing is held to this drift.
RTOL, ATOL = 0.03, 2e-3


def _tables(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.csv"))


def _read(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return frame.drop(columns=[c for c in frame.columns if c in TIMING_COLUMNS])


def compare_tables(tables: Path, reference: Path = REFERENCE_DIR) -> None:
    """Raise AssertionError naming the first table that differs from its reference (or is missing / new)."""
    assert _tables(tables) == _tables(reference), (
        f"tables {sorted(set(_tables(tables)) ^ set(_tables(reference)))} are missing or new"
    )
    for name in _tables(reference):
        got, want = _read(tables / name), _read(reference / name)
        try:
            pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=RTOL, atol=ATOL, check_dtype=False)
        except AssertionError as e:
            raise AssertionError(f"smoke table {name} differs from tests/data/smoke_tables/{name}:\n{e}") from None


def update_references(tables: Path, reference: Path = REFERENCE_DIR) -> list[str]:
    """Replace the references by ``tables`` (timing columns dropped); return the tables written."""
    if reference.exists():
        shutil.rmtree(reference)
    names = _tables(tables)
    for name in names:
        out = reference / name
        out.parent.mkdir(parents=True, exist_ok=True)
        _read(tables / name).to_csv(out, index=False)
    return names


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/smoke_tables.py RESULTS_DIR/smoke/tables")
    for name in update_references(Path(sys.argv[1])):
        print(f"wrote tests/data/smoke_tables/{name}")
