"""The smoke chain's tables, held against reference copies in ``tests/data/smoke_tables/``.

The CPU smoke chain is seeded and deterministic, so a change that should change no result (a move,
a rename, a refactor) must leave every table as it was, up to the float drift between machines (``ATOL``, ``RTOL``);
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

import numpy as np
import pandas as pd

REFERENCE_DIR = Path(__file__).parent / "data" / "smoke_tables"
#: Columns that measure time (wall clock of a machine), not results: never compared.
TIMING_COLUMNS = {"seconds", "s / update"}
#: Tolerance of numeric columns, |got - want| <= ATOL + RTOL * |want| (numpy's isclose; pandas' own check
#: takes the larger of the two instead, which failed CI on a small correlation). Set by the float drift
#: between CPUs, not between runs: on one machine two runs write identical bytes, but CI machines' BLAS / ATen
#: kernels sum in another order. Measured: CI moved GE: RUDDER's Spearman with the planted truth 0.0443 ->
#: 0.0465 (a rank swap: rank statistics of the smoke chain's few turns move in steps of ~0.002); a smoke run
#: here on AVX2 kernels (ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2) moved correlations by at most
#: 0.0037 and losses by at most 0.08% relative; with the vector kernels off (ATEN_CPU_CAPABILITY=default), the
#: same order. No text, count or p-value moved. A change meant to change results moves them by far more.
RTOL, ATOL = 0.02, 0.01


def _tables(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.csv"))


def _read(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return frame.drop(columns=[c for c in frame.columns if c in TIMING_COLUMNS])


def _differences(got: pd.DataFrame, want: pd.DataFrame) -> list[str]:
    """The cells of ``got`` that differ from ``want`` beyond the tolerance (texts exactly), as readable lines."""
    if list(got.columns) != list(want.columns) or len(got) != len(want):
        return [f"columns {list(got.columns)} x {len(got)} rows, expected {list(want.columns)} x {len(want)} rows"]
    lines = []
    for col in want.columns:
        a, b = got[col], want[col]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            bad = ~np.isclose(a.to_numpy(float), b.to_numpy(float), rtol=RTOL, atol=ATOL, equal_nan=True)
        else:
            bad = ~((a.astype(str) == b.astype(str)) | (a.isna() & b.isna())).to_numpy()
        lines += [f"row {i}, column {col!r}: {a.iloc[i]!r}, expected {b.iloc[i]!r}" for i in np.flatnonzero(bad)]
    return lines


def compare_tables(tables: Path, reference: Path = REFERENCE_DIR) -> None:
    """Raise AssertionError naming the first table that differs from its reference (or is missing / new)."""
    assert _tables(tables) == _tables(reference), (
        f"tables {sorted(set(_tables(tables)) ^ set(_tables(reference)))} are missing or new"
    )
    for name in _tables(reference):
        lines = _differences(_read(tables / name), _read(reference / name))
        if lines:
            shown = "\n".join(lines[:10]) + (f"\n... and {len(lines) - 10} more" if len(lines) > 10 else "")
            raise AssertionError(
                f"smoke table {name} differs from tests/data/smoke_tables/{name} "
                f"(tolerance {ATOL} + {RTOL} x |expected|):\n{shown}"
            )


def update_references(tables: Path, reference: Path = REFERENCE_DIR) -> list[str]:
    """Replace the references by ``tables`` (timing columns dropped); return the tables written. A folder with no
    tables is refused before anything is removed (``--help`` once wiped the references)."""
    names = _tables(tables) if tables.is_dir() else []
    if not names:
        raise ValueError(f"{tables}: no .csv tables there; expected a smoke run's tables folder (results/smoke/tables)")
    if reference.exists():
        shutil.rmtree(reference)
    for name in names:
        out = reference / name
        out.parent.mkdir(parents=True, exist_ok=True)
        _read(tables / name).to_csv(out, index=False)
    return names


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/smoke_tables.py RESULTS_DIR/smoke/tables")
    try:
        written = update_references(Path(sys.argv[1]))
    except ValueError as e:
        sys.exit(f"error: {e}")
    for name in written:
        print(f"wrote tests/data/smoke_tables/{name}")
