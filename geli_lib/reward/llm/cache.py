"""The answers' cache: raw answers on disk, one JSON file per key (atomic writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geli_lib.core.io import atomic_write, cache_dir, content_key

# --------------------------------------------------------------------------- cache


class ResponseCache:
    """Raw answers on disk, one JSON file per key (atomic writes), with hit / miss counters."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else cache_dir("llm")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(backend: str, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
        """The content key of a request: (backend, model, messages, sampling parameters)."""
        return content_key(backend, model, messages, sampling, length=32)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(path.read_text(encoding="utf-8"))["response"]

    def put(self, key: str, record: dict[str, Any]) -> None:
        with atomic_write(self._path(key)) as tmp:
            tmp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
