"""Infrastructure: parameters, atomic writes and caches, the runner, Dask, the offline models, the browser check.

Exported here, for the notebooks: :func:`load_params` (a profile's validated parameters), :func:`results_dir`
and :func:`timed` (where a notebook writes, how long a step took), :func:`write_csv` and :func:`cache_dir`, and
:func:`load_policy` (the offline SmolLM2).
"""

import importlib
from typing import Any

from geli_lib.core.io import cache_dir, write_csv
from geli_lib.core.params import load_params
from geli_lib.core.runs import results_dir, timed


def __getattr__(name: str) -> Any:
    # models is also a command (python -m geli_lib.core.models): imported on first use, so that running it
    # does not find it imported already (runpy would warn and run a second copy)
    if name == "load_policy":
        return importlib.import_module("geli_lib.core.models").load_policy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["cache_dir", "load_params", "load_policy", "results_dir", "timed", "write_csv"]
