"""The entry point: the profile's corpus, simulated when asked, loaded once and cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geli_lib.core.io import cache_dir, content_key, file_key
from geli_lib.core.params import DataParams, StudyParams, to_dict
from geli_lib.corpus.data.candor import candor_folders, load_candor
from geli_lib.corpus.data.common import DataError, _report_skips
from geli_lib.corpus.data.esconv import load_esconv
from geli_lib.corpus.data.soda import load_soda
from geli_lib.corpus.schema import Corpus
from geli_lib.corpus.simulation import SIMULATOR_VERSION, simulate_corpus

#: Bump when the loaders change what they produce: it is part of the cache key.
LOADER_VERSION = 3


# --------------------------------------------------------------------------- entry point


def _candor_input_files(root: Path, params: DataParams) -> list[Path]:
    """The files :func:`load_candor` reads (so the cache key ignores e.g. videos beside them)."""
    files = []
    for f in candor_folders(root):
        tdir = f / "transcription"
        names = {f"transcript_{params.segmentation}.csv", "transcript_cliffhanger.csv"}
        files += [tdir / n for n in sorted(names)]
        files += [f / "survey.csv", f / "audio_video_features.csv", f / "simulation_truth.csv"]
    return files


def corpus_cache_folder(params: StudyParams) -> Path:
    """Where :func:`load_corpus` keeps the canonical parquet corpus for ``params``.

    The key covers the loader version, the corpus name, the data parameters and
    the input: the simulation parameters and simulator version for ``simulated``, otherwise the names
    and bytes of the input files (:func:`geli_lib.core.io.file_key`).
    """
    name = params.corpus
    if name == "simulated":
        source: Any = {"simulation": to_dict(params.simulation), "simulator_version": SIMULATOR_VERSION}
    else:
        path = Path(params.data_path).expanduser()
        if not path.exists():
            raise DataError(f"{path}: data_path not found (corpus {name!r})")
        if name == "candor":
            files = _candor_input_files(path, params.data)
            rel = [str(p.relative_to(path)) for p in files]
            source = {"files": rel, "bytes": file_key(files)}
        else:
            source = {"files": [path.name], "bytes": file_key([path])}
    key = content_key(LOADER_VERSION, name, to_dict(params.data), source)
    return cache_dir(f"corpora/{name}-{key}")


def load_corpus(params: StudyParams, progress: bool = True, workers: int = 2) -> Corpus:
    """The corpus a study run uses, in canonical form, cached as parquet.

    ``simulated``: the simulator writes the CANDOR layout (plus truth) under
    ``cache_dir('corpora/simulated-<content_key(simulation params)>/raw')`` and
    :func:`load_candor` reads it. ``candor`` / ``esconv`` / ``soda``: the
    matching loader reads ``params.data_path``.

    The result is saved with :meth:`Corpus.save` under
    :func:`corpus_cache_folder`; a later call with the same key loads the
    parquet. ``corpus.json`` is the completeness marker: ``Corpus.save`` writes
    it last (atomically), it is deleted before a rebuild, and only a folder
    that has it is trusted — so an interrupted run leaves nothing a re-run
    would believe.
    """
    folder = corpus_cache_folder(params)
    marker = folder / "corpus.json"
    if marker.is_file():
        corpus = Corpus.load(folder)
        _report_skips(corpus.name, corpus.skipped)
        return corpus
    marker.unlink(missing_ok=True)
    name, data = params.corpus, params.data
    if name == "simulated":
        raw = cache_dir(f"corpora/simulated-{content_key(to_dict(params.simulation))}/raw")
        made = simulate_corpus(params.simulation, raw, workers=workers, progress=progress)
        root = Path(made) if isinstance(made, (str, Path)) else raw
        corpus = load_candor(root, data, progress=progress, workers=workers, name="simulated")
    elif name == "candor":
        corpus = load_candor(params.data_path, data, progress=progress, workers=workers)
    elif name == "esconv":
        corpus = load_esconv(params.data_path, data)
    elif name == "soda":
        corpus = load_soda(params.data_path, data)
    else:  # StudyParams.validate already refuses this
        raise DataError(f"unknown corpus {name!r}")
    corpus.save(folder)
    return corpus
