"""RL adaptation: prompt and truncation, the reward adapter against r_θ, bad input, and real RL loops.

The PPO test runs TRL's PPOTrainer with LoRA on the real SmolLM2 policy and a
GELI reward function trained here on a tiny simulated corpus: two updates of
batch 2 with 8-token responses, interrupted after the first and resumed. The
learning test adapts the policy to a toy reward (a head that scores a
response by its MiniLM similarity to one phrase) and checks that the reward
on fixed held-out contexts rises.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from geli_lib.alignment import rl as R
from geli_lib.alignment.generation_eval import GENERATION_COLUMNS, reward_history
from geli_lib.alignment.rl import prompt as rl_prompt
from geli_lib.core.compute import torch_threads
from geli_lib.core.models import bf16_in_effect
from geli_lib.core.params import ParamError, RewardParams, RLParams, field_docs, load_params, to_dict
from geli_lib.reward import reward_model as rm
from geli_lib.reward.reward_model import encoder as rm_encoder


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from geli_lib.core.models import smollm2_path

    return AutoTokenizer.from_pretrained(smollm2_path(), local_files_only=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny simulated corpus, its splits, and a GELI reward function trained on it and saved."""
    from fixtures import simulated_corpus

    from geli_lib.corpus.data import build_pairs, split_conversations

    tmp = tmp_path_factory.mktemp("rl")
    params, corpus = simulated_corpus(
        tmp / "cache", simulation={"n_conversations": 12}, splits={"reward_train": 0.5, "reward_test": 0.1, "rl": 0.4}
    )
    split = split_conversations(corpus.conversations, params.splits)
    train_ids = split[split == "reward_train"].index.tolist()
    pairs = build_pairs(corpus, params.data, convo_ids=train_ids)
    feats = rm.encode_pairs(pairs, progress=False, cache=tmp / "features")
    train = rm.make_train_data(corpus, pairs, feats, train_ids)
    trained = rm.train_reward_function("geli", train, RewardParams(epochs=20, K=8), seed=0)
    trained.info["name"] = "GELI: RRD + VA"  # as experiments.run_methods saves it
    folder = trained.save(tmp / "reward" / "geli")
    return {"params": params, "corpus": corpus, "split": split, "folder": folder, "tmp": tmp}


# --------------------------------------------------------------------------- prompt, contexts


def test_contexts_lines_and_reward_format(world):
    ctx = R.dialogue_contexts(world["corpus"], history_turns=3)
    assert list(ctx.columns) == list(rl_prompt.CONTEXT_COLUMNS)
    assert list(rl_prompt.CONTEXT_COLUMNS) == [
        *("corpus", "convo_id", "turn_idx", "context_id", "history", "reward_history", "response")
    ]
    row = ctx.iloc[0]
    assert row["context_id"] == f"{row['convo_id']}:{row['turn_idx']}"
    lines = row["history"].split("\n")
    assert 1 <= len(lines) <= 3 and all(x.startswith(("User: ", "AI: ")) for x in lines)
    # r_θ's s_t is the whole dialogue before the turn; the policy's history is its last 3 turns
    turns = world["corpus"].turns
    for r in ctx.sample(20, random_state=0).itertuples():
        before = turns[(turns["convo_id"] == r.convo_id) & (turns["turn_idx"] < r.turn_idx)]
        full = r.reward_history.split("\n")
        assert len(full) == len(before) and full[-len(r.history.split("\n")) :] == r.history.split("\n")
    assert (ctx["reward_history"].str.count("\n") > ctx["history"].str.count("\n")).any()
    # r_θ's input format is data.build_pairs': " User: …" / " AI: …" concatenated
    assert reward_history("User: hi\nAI: yo") == " User: hi AI: yo"
    rl = world["params"].rl
    train, test, curve = R.rl_contexts(world["corpus"], world["split"], rl, seed=0)
    assert set(train["convo_id"]).isdisjoint(test["convo_id"]), "held-out contexts leaked into RL training"
    assert len(test) == rl.eval_contexts and 0 < len(curve) <= rl.curve_contexts
    # the curve (which chooses the update kept) is of the held-out conversations, never of the tested contexts
    assert set(curve["convo_id"]).isdisjoint(train["convo_id"])
    assert set(curve["context_id"]).isdisjoint(test["context_id"])
    everything = dataclasses.replace(rl, eval_contexts=10_000)
    with pytest.raises(R.RLError, match="curve_contexts"):
        R.rl_contexts(world["corpus"], world["split"], everything, seed=0)


def test_long_context_is_left_truncated(tok):
    history = "\n".join(f"User: line {k} " + "blah " * 20 for k in range(60)) + "\nUser: the last words"
    ids, shown = R.encode_prompt(tok, history, max_prompt_tokens=128)
    assert len(ids) <= 128 and len(rl_prompt._prompt_ids(tok, history)) > 128
    assert history.endswith(shown) and shown.endswith("the last words") and len(shown) < len(history)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\n" + R.SYSTEM_PROMPT) and text.endswith(R.ASSISTANT_HEADER)
    short = "User: hello"
    assert R.encode_prompt(tok, short, 128)[1] == short
    with pytest.raises(R.RLError, match="no room"):
        R.encode_prompt(tok, history, max_prompt_tokens=20)


def test_decoded_sequence_splits_into_history_and_response(tok):
    history = "User: Do you like hiking?\nAI: I do!\nUser: Where do you go?"
    ids, shown = R.encode_prompt(tok, history, 256)
    resp = tok(" Mostly the hills near home.", add_special_tokens=False)["input_ids"]
    text = tok.decode(ids + resp + [tok.eos_token_id, tok.pad_token_id])
    assert R.split_prompt_response(text, tok.eos_token) == (shown, "Mostly the hills near home.")
    echoed = tok.decode(ids + tok("AI: Sure thing.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    assert R.split_prompt_response(echoed, tok.eos_token)[1] == "Sure thing."  # the line format's role dropped
    with pytest.raises(R.RLError, match="assistant header"):
        R.split_prompt_response("no template here", tok.eos_token)


# --------------------------------------------------------------------------- reward adapter


def _trl_batch(tok, histories, responses):
    """What TRL hands the reward backbone: left-padded prompt + response, pad ids replaced by 0."""
    seqs = []
    for h, r in zip(histories, responses):
        ids, _ = R.encode_prompt(tok, h, 256)
        seqs.append(ids + tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    L = max(map(len, seqs)) + 2
    ids = torch.tensor([[tok.pad_token_id] * (L - len(s) - 2) + s + [tok.pad_token_id] * 2 for s in seqs])
    mask = ids != tok.pad_token_id
    return ids.masked_fill(~mask, 0), mask


def test_adapter_gives_r_theta_of_the_decoded_pair(world, tok):
    trained = R.load_trained_reward(world["folder"])
    histories = ["User: I just got back from Peru.", "User: My cat is sick.\nAI: Oh no.\nUser: Yeah."]
    responses = ["That sounds amazing, what was your favourite part?", "ok"]
    adapter = R.RewardAdapter(R.TextReward(trained, "GELI", normalise=False), tok)
    ids, mask = _trl_batch(tok, histories, responses)
    out = getattr(adapter, adapter.base_model_prefix)(input_ids=ids, attention_mask=mask)
    scores = adapter.score(out.hidden_states[-1])
    assert scores.shape == (2, ids.shape[1], 1)
    pairs = pd.DataFrame({"history": [reward_history(h) for h in histories], "response": responses})
    want = rm.predict_pairs(trained, pairs, cache=world["tmp"] / "features")  # the reward table's r̂
    np.testing.assert_allclose(scores[:, -1, 0].numpy(), want, rtol=1e-4, atol=1e-4)
    assert abs(want[0] - want[1]) > 1e-3, "the two pairs should score differently"


def test_one_reward_for_training_and_cross_scoring(world, tok):
    """The reward PPO gets (decoded token ids) equals 08's cross-score of the same generations row, to 1e-5,
    also for a history longer than r_θ's history cut (data.history_turns) and its encoder's 256 tokens."""
    from geli_lib.alignment.generation_eval import cross_scores
    from geli_lib.core.params import DataParams

    data = DataParams(history_turns=3, history_chars=400)
    long = "\n".join(f"{'User' if k % 2 else 'AI'}: turn {k} " + "tell me more about that " * 6 for k in range(12))
    histories = ["User: I just got back from Peru.", long, "User: My cat is sick.\nAI: Oh no.\nUser: Yeah."]
    responses = ["That sounds amazing, what was your favourite part?", "I see.", ""]
    trained = R.load_trained_reward(world["folder"])
    reward = R.TextReward(trained, "GELI", normalise=False, data=data)
    shown = [R.encode_prompt(tok, h, 512)[1] for h in histories]
    ids, mask = _trl_batch(tok, shown, responses)
    out = R.RewardAdapter(reward, tok).backbone(input_ids=ids, attention_mask=mask)
    in_training = out.hidden_states[-1][:, -1, 0].numpy()
    gens = pd.DataFrame({"history": shown, "response": responses})
    reported = cross_scores(gens, {"GELI": world["folder"]}, data)["reward: GELI"].to_numpy()
    np.testing.assert_allclose(in_training, reported, rtol=0, atol=1e-5)
    full = R.TextReward(trained, "GELI", normalise=False).raw(shown, responses).numpy()  # no history cut
    assert abs(full[1] - reported[1]) > 1e-4, "the history cut should matter for the long history"

    # The policy is shown a 128-token prompt; r_θ scores in the dialogue state (reward_histories): PPO's
    # decoded prompt maps back to it, and 08 scores generations whose history is that state.
    contexts = pd.DataFrame({"history": histories, "reward_history": histories})
    adapter = R.RewardAdapter(reward, tok, R.reward_histories(tok, contexts, 128))
    cut = [R.encode_prompt(tok, h, 128)[1] for h in histories]
    assert cut[1] != histories[1], "the long history should be cut for the policy"
    ids, mask = _trl_batch(tok, cut, responses)
    in_training = adapter.backbone(input_ids=ids, attention_mask=mask).hidden_states[-1]
    reported = cross_scores(gens.assign(history=histories), {"GELI": world["folder"]}, data)["reward: GELI"]
    np.testing.assert_allclose(in_training[:, -1, 0].numpy(), reported.to_numpy(), rtol=0, atol=1e-5)
    ids, mask = _trl_batch(tok, ["User: a history no context has"], ["hi"])
    with pytest.raises(R.RLError, match="not one of the RL contexts'"):
        adapter.backbone(input_ids=ids, attention_mask=mask)


def test_unusable_reward_functions_are_refused(world, tmp_path):
    from geli_lib.alignment.generation_eval import PairScorer

    trained = R.load_trained_reward(world["folder"])
    const = dataclasses.replace(trained, head=None, constant=2.5, method="mean")
    with pytest.raises(R.RLError, match="is constant: every response scores 2.5"):
        R.check_reward_for_rl(const, "Mean", PairScorer(const))
    R.check_reward_for_rl(trained, "GELI", PairScorer(trained))  # a learned one passes
    flat = R.load_trained_reward(world["folder"])
    with torch.no_grad():
        flat.head.net[3].weight.zero_()
    with pytest.raises(R.RLError, match="scores every probe pair alike"):
        R.check_reward_for_rl(flat, "GELI", PairScorer(flat))
    broken = R.load_trained_reward(world["folder"])
    with torch.no_grad():
        broken.head.net[0].bias.fill_(float("nan"))
    with pytest.raises(R.RLError, match="non-finite scores"):
        R.check_reward_for_rl(broken, "GELI", PairScorer(broken))


def test_adapter_of_another_base_or_rank_is_refused(tmp_path):
    rl = load_params("smoke").rl
    folder = tmp_path / "adapter"
    folder.mkdir()
    cfg = {"base_model_name_or_path": "/somewhere/SmolLM2-135M-Instruct", "r": rl.lora_r, "lora_alpha": rl.lora_alpha}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    R.check_adapter(folder, rl, "/cache/models/SmolLM2-135M-Instruct")  # same checkpoint, other root: fine
    with pytest.raises(R.RLError, match="saved for base model '/somewhere/SmolLM2-135M-Instruct'"):
        R.check_adapter(folder, rl, "/cache/models/Llama-2-7b")
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "r": 8}))
    with pytest.raises(R.RLError, match=f"LoRA r=8, but rl.lora_r is {rl.lora_r}"):
        R.check_adapter(folder, rl, "/cache/models/SmolLM2-135M-Instruct")
    with pytest.raises(R.RLError, match="adapter_config.json missing"):
        R.check_adapter(tmp_path, rl, "x")


def test_curve_slope_by_hand():
    # 3 contexts, steps 0, 2, 4: rewards rise by 0.5, 1.0, 1.5 per update -> mean slope 1.0
    rows = [
        {"context_id": c, "step": k, "reward": b + s * k}
        for c, b, s in (("a", 0.0, 0.5), ("b", 1.0, 1.0), ("c", -1.0, 1.5))
        for k in (0, 2, 4)
    ]
    slope, lo, hi = R.curve_slope(pd.DataFrame(rows))
    assert slope == pytest.approx(1.0)
    assert 0.5 - 1e-9 <= lo <= slope <= hi <= 1.5 + 1e-9  # a bootstrap over contexts stays within their slopes
    flat = pd.DataFrame([{"context_id": c, "step": k, "reward": 1.0} for c in "ab" for k in (0, 1)])
    assert R.curve_slope(flat) == (0.0, 0.0, 0.0)
    assert all(np.isnan(R.curve_slope(flat[flat["step"] == 0])))


def test_score_normalisation_matches_running_moments(world):
    reward = R.TextReward(R.load_trained_reward(world["folder"]), normalise=True)
    m = R.RunningMoments()
    a, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([10.0, -3.0])
    m.update(a)
    m.update(b)
    allv = torch.cat([a, b]).double()
    assert m.mean == pytest.approx(float(allv.mean())) and m.std == pytest.approx(float(allv.std()))
    h = ["User: hi"] * 4
    r = ["Hello!", "What do you do for fun?", "no", "I love jigsaw puzzles, do you?"]
    norm = reward(h, r)
    raw = reward.raw(h, r)
    np.testing.assert_allclose(norm.numpy(), ((raw - raw.mean()) / raw.std()).numpy(), atol=1e-4)
    mean, sd, words = reward.pop_log()
    assert mean == pytest.approx(float(raw.mean())) and words == pytest.approx(np.mean([1, 6, 1, 6]))


def test_rloo_reward_callable_is_standardised_before_the_kl_penalty(world):
    """TRL's RLOO subtracts β·KL from what the callable returns: with score_norm it must be PPO's normalised score."""
    reward = R.TextReward(R.load_trained_reward(world["folder"]), normalise=True)
    h = ["User: hi", "User: my cat is sick", "User: hi", "User: what do you do?"]
    r = ["Hello!", "Oh no, I am so sorry.", "no", "I love jigsaw puzzles, do you?"]
    raw = reward.raw(h, r)
    got = reward.reward_func(prompts=[R.chat_messages(x) for x in h], completions=[f"AI: {x}" for x in r], history=h)
    np.testing.assert_allclose(got, ((raw - raw.mean()) / raw.std()).numpy(), atol=1e-4)
    assert reward.moments.count == pytest.approx(4) and reward.pop_log()[0] == pytest.approx(float(raw.mean()))


def test_empty_response_is_scored(world, tok):
    reward = R.TextReward(R.load_trained_reward(world["folder"]), normalise=False)
    ids, mask = _trl_batch(tok, ["User: hi"], [""])  # EOS right away
    out = R.RewardAdapter(reward, tok).backbone(input_ids=ids, attention_mask=mask)
    got = float(out.hidden_states[-1][0, -1, 0])
    assert np.isfinite(got) and got == pytest.approx(float(reward.raw(["User: hi"], [""])[0]), abs=1e-5)


def test_nan_reward_stops_naming_the_update(world):
    trained = R.load_trained_reward(world["folder"])
    with torch.no_grad():
        trained.head.net[0].weight.fill_(float("nan"))
    reward = R.TextReward(trained, "GELI", normalise=True)
    reward.step = 3
    with pytest.raises(R.RLError, match=r"update 3: reward function 'GELI' returned a non-finite reward"):
        reward(["User: hi"], ["hello"])


def test_bad_reward_function_files(world, tmp_path):
    with pytest.raises(R.RLError, match="reward.json missing"):
        R.load_trained_reward(tmp_path / "nothing")
    broken = shutil.copytree(world["folder"], tmp_path / "no_head")
    (broken / "head.pt").unlink()
    with pytest.raises(R.RLError, match="head.pt missing"):
        R.load_trained_reward(broken)
    other = shutil.copytree(world["folder"], tmp_path / "other_encoder")
    meta = json.loads((other / "reward.json").read_text())
    meta["encoder_id"] = "minilm-0123456789ab-t256-f2"  # features of other weights
    (other / "reward.json").write_text(json.dumps(meta))
    with pytest.raises(R.RLError, match="built for encoder 'minilm-0123456789ab"):
        R.load_trained_reward(other)
    rl = load_params("smoke").rl
    with pytest.raises(R.RLError, match=r"\['rrd_k32'\] not saved; saved: geli \(GELI: RRD \+ VA\)"):
        R.select_reward_functions({"geli": world["folder"]}, ["rrd_k32"], rl)
    with pytest.raises(R.RLError, match=r"\['GELI: RRD \+ VA'\] not reward-function ids; valid: mean, mode, "):
        R.select_reward_functions({"geli": world["folder"]}, "GELI: RRD + VA", rl)  # a display name is not an id
    assert R.select_reward_functions({"geli": world["folder"]}, "all", rl) == {"GELI: RRD + VA": world["folder"]}


def test_rl_params_validated():
    with pytest.raises(ParamError, match=r"rl\.mini_batch_size: must divide batch_size"):
        load_params("smoke", rl={"batch_size": 3, "mini_batch_size": 2})
    with pytest.raises(ParamError, match=r"rl\.algorithm"):
        load_params("smoke", rl={"algorithm": "dpo"})
    with pytest.raises(ParamError, match=r"rl\.reward_fns\[1\]: must be one of 'mean', .*got 'GELI: RRD \+ VA'"):
        load_params("smoke", rl={"reward_fns": ["geli", "GELI: RRD + VA"]})  # ids, not table names
    assert load_params("gpu").rl.gamma == 0.05 and load_params("gpu").rl.batch_size == 24
    docs = field_docs(RLParams)
    assert not [f for f in to_dict(RLParams()) if f not in docs], "RLParams fields without a docstring"


def test_merge_rows_replaces_only_its_keys(tmp_path):
    path = tmp_path / "c.csv"
    a = pd.DataFrame({"reward_fn": ["A", "A"], "seed": [0, 0], "step": [1, 2], "kl": [0.1, 0.2]})
    b = pd.DataFrame({"reward_fn": ["B"], "seed": [0], "step": [1], "kl": [0.3]})
    R.merge_rows(path, a, ["reward_fn", "seed"], ["reward_fn", "seed", "step", "kl"])
    R.merge_rows(path, b, ["reward_fn", "seed"], ["reward_fn", "seed", "step", "kl"])
    out = R.merge_rows(path, a.iloc[:1], ["reward_fn", "seed"], ["reward_fn", "seed", "step", "kl"])
    assert sorted(zip(out["reward_fn"], out["step"])) == [("A", 1), ("B", 1)]
    assert pd.read_csv(path).shape == (2, 4)


def test_run_key_changes_with_how_the_group_trainer_computes(tmp_path, monkeypatch):
    """A cached adaptation is reused only for the same inputs and the same arithmetic: the determinism fixes
    of the group trainer and of r̂'s text encoding changed gradients' and rewards' last bits, so runs trained
    before them must be retrained."""
    from geli_lib.alignment.rl import runs

    (tmp_path / "model.pt").write_bytes(b"weights")
    train = pd.DataFrame({"context_id": ["c:1", "c:3"], "history": ["User: hi", "User: so"]})
    rl = RLParams()
    key = runs.run_key(rl, tmp_path, train, 0)
    assert runs.run_key(rl, tmp_path, train, 0) == key
    assert runs.run_key(rl, tmp_path, train, 1) != key
    assert runs.run_key(dataclasses.replace(rl, lr=rl.lr * 2), tmp_path, train, 0) != key
    assert runs.run_key(dataclasses.replace(rl, gen_tokens=7), tmp_path, train, 0) == key  # not training
    # how many train at once changes nothing; each one's torch threads may change the last bits
    assert runs.run_key(dataclasses.replace(rl, threads=1, workers=2), tmp_path, train, 0) == (
        runs.run_key(dataclasses.replace(rl, threads=1), tmp_path, train, 0)
    )
    assert runs.run_key(dataclasses.replace(rl, threads=1), tmp_path, train, 0) != key
    monkeypatch.setattr(runs, "GROUP_TRAINER", runs.GROUP_TRAINER + "; another gradient path")
    assert runs.run_key(rl, tmp_path, train, 0) != key
    monkeypatch.undo()
    assert runs.run_key(rl, tmp_path, train, 0) == key
    monkeypatch.setattr(runs, "SCORING_BATCH", 64)  # r̂'s texts encoded in batches, as before the fix
    assert runs.run_key(rl, tmp_path, train, 0) != key
    monkeypatch.undo()
    # rl.batch_size is per launched process: two processes train on twice the responses per update
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert runs.launched_processes() == 1 and runs.run_key(rl, tmp_path, train, 0) == key
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runs.launched_processes() == 2 and runs.run_key(rl, tmp_path, train, 0) != key


# --------------------------------------------------------------------------- a real PPO loop


class _Interrupt(Exception):
    pass


def _stop_after(step: int):
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Interrupt(f"stopped after update {step}")

    return Stop()


def _tiny_rl() -> RLParams:
    """Two PPO updates of two short responses: the smallest run that moves a LoRA adapter."""
    return dataclasses.replace(
        load_params("smoke").rl,
        steps=2,
        batch_size=2,
        mini_batch_size=2,
        ppo_epochs=1,
        response_length=8,
        history_turns=2,
        max_prompt_tokens=128,
        save_every=1,
        train_value_backbone=False,
        eval_conversations=2,
        train_contexts=8,
        lr=1e-3,
    )


def test_ppo_lora_loop_changes_adapter_writes_curves_and_resumes(world, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GELI_PROGRESS", "0")
    rl = _tiny_rl()
    train, test, _ = R.rl_contexts(world["corpus"], world["split"], rl, seed=0)
    run = tmp_path / "run"
    kw = dict(profile="smoke", seed=0, out_dir=run)
    with pytest.raises(_Interrupt):
        R.train_rl("GELI", world["folder"], train, rl, callbacks=[_stop_after(1)], **kw)
    assert (run / "adapter-step1" / "adapter_model.safetensors").exists()
    assert json.loads((run / "state" / "state.json").read_text())["step"] == 1
    assert not (run / "done.json").exists()

    info = R.train_rl("GELI", world["folder"], train, rl, **kw)  # resumes at update 2
    assert info.resumed_from == 1 and not info.reused
    assert info.curves["step"].tolist() == [1, 2]
    assert np.isfinite(info.curves[["reward_mean", "kl"]].to_numpy()).all()
    assert not (run / "state").exists(), "resume state should go once the run is done"

    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0, "LoRA B starts at 0: the adapter did not train"
    step1 = load_file(run / "adapter-step1" / "adapter_model.safetensors")
    assert any(not torch.equal(step1[k], weights[k]) for k in weights), "update 2 changed nothing"

    curves = pd.read_csv(tmp_path / "results" / "smoke" / "tables" / "ppo_curves.csv")
    assert list(curves.columns[:5]) == ["reward_fn", "seed", "step", "reward_mean", "kl"]
    assert curves["step"].tolist() == [1, 2] and (curves["reward_fn"] == "GELI").all()
    tb = list((tmp_path / "results" / "smoke" / "tensorboard").rglob("events.out.tfevents.*"))
    assert tb, "no TensorBoard event file"

    again = R.train_rl("GELI", world["folder"], train, rl, **kw)  # finished: reused, not retrained
    assert again.reused and again.curves["step"].tolist() == [1, 2]

    rows = R.generations(test.head(2), {"GELI": info.adapter}, dataclasses.replace(rl, gen_tokens=8), seed=0)
    assert list(rows.columns) == list(GENERATION_COLUMNS)
    # 08 scores the generations in the dialogue state training scored in
    for model, g in rows.groupby("model"):
        assert g["history"].tolist() == test.head(2)["reward_history"].tolist(), model
    assert sorted(rows["model"].unique()) == ["GELI", "base", "ground truth"] and len(rows) == 6
    truth = rows[rows["model"] == "ground truth"]["response"].tolist()
    assert truth == test.head(2)["response"].tolist()
    R.write_generations("smoke", rows)
    saved = pd.read_csv(tmp_path / "results" / "smoke" / "tables" / "generations.csv")
    assert len(saved) == 6 and set(saved["context_id"]) == set(test.head(2)["context_id"])


def _one_group_update(**overrides) -> RLParams:
    """The smoke profile's rl block cut to one RLOO / GRPO update: 2 samples of 4 tokens for 1 prompt."""
    small = {"steps": 1, "batch_size": 2, "group_size": 2, "mini_batch_size": 2, "response_length": 4}
    small |= {"history_turns": 2, "max_prompt_tokens": 128, "eval_conversations": 2, "train_contexts": 4}
    return dataclasses.replace(load_params("smoke").rl, **(small | overrides))


@pytest.mark.parametrize("algorithm,bf16", [("grpo", False), ("rloo", True)])
def test_rloo_and_grpo_take_the_same_reward_as_a_callable(algorithm, bf16, world, tok, tmp_path, monkeypatch):
    """Also the cpu profile's bf16 path (rloo): the curve's r̂ of the bf16 policy's responses is the float32 r̂."""
    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GELI_PROGRESS", "0")
    rl = _one_group_update(algorithm=algorithm, bf16=bf16)
    train, held_out, _ = R.rl_contexts(world["corpus"], world["split"], rl, seed=0)
    reward = R.TextReward(R.load_trained_reward(world["folder"]), normalise=False)
    got = reward.reward_func(
        prompts=[R.chat_messages("User: hi")],
        completions=[[{"role": "assistant", "content": " Hello!"}]],
        history=["User: hi"],
    )
    assert got == pytest.approx([float(reward.raw(["User: hi"], ["Hello!"])[0])])
    curve = held_out.head(2)
    info = R.train_rl("GELI", world["folder"], train, rl, "smoke", seed=0, out_dir=tmp_path / "run", curve=curve)
    moments = json.loads((tmp_path / "run" / "progress.json").read_text())["moments"]  # resume state of score norm
    assert moments["count"] == pytest.approx(rl.batch_size * rl.steps)
    assert info.curves["step"].tolist() == [1] and (info.curves["algorithm"] == algorithm).all()
    assert info.curves["kl_coef"].tolist() == [pytest.approx(rl.kl_coef)]  # the weight the update was penalised with
    assert np.isfinite(info.curves["reward_mean"]).all()
    assert (info.adapter / "adapter_model.safetensors").exists()
    ev = info.evals
    assert len(ev) == 4 and (ev["kl"] > -1e-4).all()  # before the first update and after it
    # the curve scores in r_θ's dialogue state, not in the 2 turns the policy was shown
    assert (curve["reward_history"] != curve["history"]).any()
    for step, rows in ev.groupby("step"):
        want = reward.raw(curve["reward_history"].tolist(), rows["response"].tolist()).numpy()
        np.testing.assert_allclose(rows["reward"].to_numpy(), want, rtol=1e-6, err_msg=f"step {step}")


def test_warm_up_takes_no_step_at_the_first_update_and_ppo_resumes_over_what_is_left(world, tmp_path, monkeypatch):
    """rl.warmup_steps: transformers' linear warm-up starts at 0, so a run of 1 update with a warm-up of 2 leaves the
    LoRA where it began (lora_B is initialised to 0) while one without warm-up moves it; PPO, which resumes with a
    fresh trainer, warms up only over the updates of the warm-up left."""
    from safetensors.torch import load_file

    from geli_lib.alignment.rl import ppo

    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GELI_PROGRESS", "0")
    rl = _one_group_update(algorithm="rloo", lr=1e-3)
    train, _, _ = R.rl_contexts(world["corpus"], world["split"], rl, seed=0)
    moved = {}
    for warmup in (0, 2):
        run = dataclasses.replace(rl, warmup_steps=warmup)
        info = R.train_rl("GELI", world["folder"], train, run, "smoke", seed=0, out_dir=tmp_path / f"w{warmup}")
        weights = load_file(info.adapter / "adapter_model.safetensors")
        moved[warmup] = max(float(w.abs().max()) for k, w in weights.items() if "lora_B" in k)
    assert moved[2] == 0.0 and moved[0] > 0
    assert ppo._lr_schedule(rl) == {"lr_scheduler_type": "constant", "warmup_steps": 0}
    five = dataclasses.replace(rl, warmup_steps=5)
    assert ppo._lr_schedule(five) == {"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 5}
    assert ppo._lr_schedule(five, done=3)["warmup_steps"] == 2 and ppo._lr_schedule(five, done=7)["warmup_steps"] == 0
    with pytest.raises(ParamError, match=r"rl\.warmup_steps: must be >= 0, got -1"):
        load_params("smoke", rl={"warmup_steps": -1})


def _toy_reward(folder, target: str):
    """A reward function that scores a response by its MiniLM cosine similarity to ``target``: r̂ = tanh(cos)."""
    from geli_lib.core.params import RewardParams

    tok_e, enc = rm_encoder._load_encoder("minilm", "cpu")
    t = torch.from_numpy(rm.pair_features([""], [rm.RESPONSE_PREFIX + target], tok_e, enc, "minilm", 256, "cpu"))
    d = t.shape[1]
    head = rm.RewardHead(d, hidden=4, dropout=0.0, scale=1.0)
    with torch.no_grad():
        for prm in head.parameters():
            prm.zero_()
        head.net[0].weight[0, d // 2 :] = t[0, d // 2 :]  # response half only
        head.net[0].bias[0] = 1.0  # ReLU(1 + cos) stays linear
        head.net[3].weight[0, 0] = 1.0
        head.net[3].bias[0] = -1.0
    trained = rm.TrainedReward(
        method="geli",
        params=RewardParams(hidden=4, dropout=0.0),
        encoder_id=rm.encoder_id("minilm", 256),
        d=d,
        scale=1.0,
        seed=0,
        head=head,
        info={"name": "toy"},
    )
    return trained.save(folder)


def test_rl_reward_rises_on_a_toy_reward(world, tok, tmp_path, monkeypatch):
    """A real short PPO run (the papers' algorithm and the cpu profile's): reward on fixed held-out contexts goes up."""
    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GELI_PROGRESS", "0")
    folder = _toy_reward(tmp_path / "toy", "Thank you so much, that is wonderful!")
    rl = dataclasses.replace(
        load_params("cpu").rl,
        algorithm="ppo",
        steps=6,
        batch_size=8,
        mini_batch_size=4,
        response_length=6,
        history_turns=2,
        max_prompt_tokens=128,
        eval_conversations=2,
        eval_contexts=8,
        train_contexts=16,
        curve_contexts=4,
        eval_every=3,
        save_every=6,
        lr=2e-3,
        kl_coef=0.05,
        adaptive_kl=False,
    )
    train, _, curve = R.rl_contexts(world["corpus"], world["split"], rl, seed=0)
    info = R.train_rl("toy", folder, train, rl, "smoke", seed=0, out_dir=tmp_path / "run", curve=curve)
    ev = info.evals.groupby("step")["reward"].mean()
    assert ev.index.tolist() == [0, 3, 6]
    assert ev.loc[6] > ev.loc[0] + 0.03, f"held-out reward did not rise: {ev.round(3).to_dict()}"
    assert (info.curves["algorithm"] == rl.algorithm).all() and np.isfinite(info.curves["kl"]).all()
    assert (info.evals.loc[info.evals["step"] == 0, "kl"] == 0).all()  # LoRA B = 0: the reference itself
    saved = pd.read_csv(tmp_path / "results" / "smoke" / "tables" / "rl_eval_curves.csv")
    assert len(saved) == len(info.evals)
    # the adapter kept is the one evaluated at the last update whose curve responses had not collapsed: it gives
    # that evaluation's greedy responses again
    assert info.kept_step == R.kept_step(info.evals)
    prompts = [R.encode_prompt(tok, h, rl.max_prompt_tokens)[0] for h in curve["history"]]
    reward = R.TextReward(R.load_trained_reward(folder), normalise=False)
    with torch_threads(rl.threads):  # as the run evaluated: another thread count sums in another order (bf16 ties)
        again = R.PolicyEvaluator(
            tok, prompts, R.scoring_histories(curve).tolist(), reward, rl.response_length,
            bf16=bf16_in_effect(rl.bf16, "cpu"),
        )(R.load_adapted(info.adapter, rl=rl))  # fmt: skip
    kept = info.evals[info.evals["step"] == info.kept_step]
    assert again["response"].tolist() == kept["response"].tolist()
    assert not (tmp_path / "run" / "evaluated").exists()  # the other evaluated adapters are gone once chosen
    assert R.train_rl("toy", folder, train, rl, "smoke", seed=0, out_dir=tmp_path / "run", curve=curve).kept_step == (
        info.kept_step
    )  # a finished run reused: the same update kept


@pytest.mark.slow
def test_adaptations_on_a_loopback_cluster_give_the_serial_adapter(world, tmp_path, monkeypatch):
    """An adaptation as a Dask task on a real scheduler + worker (from the reward function's files, in the
    worker's temporary folder): the client writes its run, which train_rl then reads back; the adapter and
    the curve are the serial run's, and a finished run is not submitted again."""
    from safetensors.torch import load_file

    from geli_lib.core.compute import close_grid_clients, loopback_cluster
    from geli_lib.core.io import cache_dir
    from geli_lib.core.params import ComputeParams

    cache = tmp_path / "cache"  # runs land here; the prepared models are the machine's
    (cache).mkdir()
    (cache / "models").symlink_to(cache_dir("models"))
    monkeypatch.setenv("GELI_CACHE", str(cache))
    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GELI_PROGRESS", "0")
    rl = _tiny_rl()
    train, _, _ = R.rl_contexts(world["corpus"], world["split"], rl, seed=0)
    serial = R.train_rl("GELI", world["folder"], train, rl, "serial", seed=0)
    chosen = {"GELI": world["folder"]}
    with loopback_cluster(tmp_path / "logs", n_workers=1, timeout=300) as cluster:
        try:
            compute = ComputeParams(scheduler=cluster.address)
            assert R.adapt_on_cluster(chosen, train, rl, "cluster", compute, seed=0) == ["GELI"]
            run = R.run_dir("cluster", "GELI", 0, "ppo")
            assert (run / "done.json").is_file() and not (run / "state").exists()
            assert list(R.tensorboard_dir("cluster", "ppo", "GELI", 0).rglob("events.out.tfevents.*"))
            assert R.adapt_on_cluster(chosen, train, rl, "cluster", compute, seed=0) == []  # finished: read here
        finally:
            close_grid_clients()
    info = R.train_rl("GELI", world["folder"], train, rl, "cluster", seed=0)  # reads the run the client wrote
    assert info.reused and info.adapter == run / "adapter"
    got, want = (load_file(a / "adapter_model.safetensors") for a in (info.adapter, serial.adapter))
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    cols = ["step", "reward_mean", "kl"]
    pd.testing.assert_frame_equal(info.curves[cols], serial.curves[cols])
    table = pd.read_csv(tmp_path / "results" / "cluster" / "tables" / "ppo_curves.csv")
    assert table["step"].tolist() == [1, 2] and (table["reward_fn"] == "GELI").all()


@pytest.mark.slow
def test_rl_workers_train_at_once_on_a_local_cluster_and_each_gives_its_serial_adapter(world, tmp_path, monkeypatch):
    """rl.workers > 1 (the cpu profile's 2 x 1 thread): the unfinished adaptations train as tasks of a local
    cluster, two at once, each with rl.threads torch threads; each adapter and curve is the one a serial run
    with those threads gives, and train_rl then reads them as finished runs."""
    from safetensors.torch import load_file

    from geli_lib.core.compute import close_grid_clients
    from geli_lib.core.io import cache_dir
    from geli_lib.core.params import ComputeParams

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(cache_dir("models"))
    monkeypatch.setenv("GELI_CACHE", str(cache))
    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GELI_PROGRESS", "0")
    rl = dataclasses.replace(_tiny_rl(), threads=1)
    train, _, _ = R.rl_contexts(world["corpus"], world["split"], rl, seed=0)
    chosen = {"GELI": world["folder"], "GELI again": world["folder"]}
    serial = {n: R.train_rl(n, f, train, rl, "serial", seed=0) for n, f in chosen.items()}
    assert R.adaptations_compute(ComputeParams(), rl) == ComputeParams()  # 1 worker: here, one after the other
    at_once = dataclasses.replace(rl, workers=2)
    try:
        assert R.adapt_on_cluster(chosen, train, at_once, "local", ComputeParams(), seed=0) == list(chosen)
    finally:
        close_grid_clients()
    for name, want in serial.items():
        info = R.train_rl(name, chosen[name], train, at_once, "local", seed=0)
        assert info.reused
        got, ref = (load_file(a / "adapter_model.safetensors") for a in (info.adapter, want.adapter))
        assert sorted(got) == sorted(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
        cols = ["step", "reward_mean", "kl"]
        pd.testing.assert_frame_equal(info.curves[cols], want.curves[cols])


def _launch(tmp_path, args: list[str], env: dict[str, str], processes: int = 2):
    """``torchrun`` (what ``accelerate launch`` runs on several GPUs) of ``args`` on CPU processes (gloo)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    full = {**os.environ, "OMP_NUM_THREADS": "1", "GELI_PROGRESS": "0", **env}
    return subprocess.run(cmd, cwd=tmp_path, env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "rloo"])
def test_the_rl_entry_point_under_two_launched_processes(algorithm, world, tmp_path):
    """`accelerate launch -m geli_lib.alignment.rl` on several processes: TRL 1.12's PPOTrainer reads
    `model.policy` through DDP's wrapper (huggingface/trl#2375), `rl.steps` stays the number of updates with
    rl.batch_size per process, both processes end with one adapter (checked by the run itself), and only the
    main process reports and writes."""
    from geli_lib.core.io import cache_dir

    cache = tmp_path / "cache"
    (cache / "reward_functions" / "smoke" / "simulated" / "geli").mkdir(parents=True)
    (cache / "models").symlink_to(cache_dir("models"))
    shutil.copytree(world["folder"], cache / "reward_functions" / "smoke" / "simulated" / "geli" / "seed0")
    args = ["-m", "geli_lib.alignment.rl", "--profile", "smoke", "--reward-fn", "geli", "--algorithm", algorithm]
    args += ["--rl", "group_size=2"] if algorithm == "rloo" else []
    out = _launch(tmp_path, args, {"GELI_CACHE": str(cache), "GELI_RESULTS": str(tmp_path / "results")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("GELI: RRD + VA: 2 updates") == 1, out.stdout  # one report, of rl.steps updates
    tables = tmp_path / "results" / "smoke" / "tables"
    curves = pd.read_csv(tables / "ppo_curves.csv")
    assert curves["step"].tolist() == [1, 2] and (curves["algorithm"] == algorithm).all()
    assert np.isfinite(curves[["reward_mean", "kl"]].to_numpy()).all() and curves["kl"].iloc[-1] != 0
    run = cache / "rl" / "smoke" / algorithm / "geli-rrd-va" / "seed0"
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "done.json").is_file()
    gens = pd.read_csv(tables / "generations.csv")
    assert sorted(gens["model"].unique()) == ["GELI: RRD + VA", "base", "ground truth"]


@pytest.mark.slow
def test_launched_processes_with_different_adapters_are_refused(tmp_path):
    """The run's own check: processes whose trainable weights differ (gradients not averaged) or whose running
    moments of r̂ differ (each standardised alone) stop the run; scores gathered across processes agree."""
    script = tmp_path / "agree.py"
    script.write_text(
        "import sys, torch\n"
        "from accelerate import Accelerator\n"
        "from geli_lib.alignment.rl.ppo import check_processes_agree\n"
        "from geli_lib.alignment.rl.reward import RunningMoments, across_processes\n"
        "acc = Accelerator(cpu=True)\n"
        "out = open(f'{sys.argv[1]}-rank{acc.process_index}.txt', 'w')  # one file per process: no interleaving\n"
        "torch.manual_seed(acc.process_index if sys.argv[1] == 'weights' else 0)\n"
        "moments = RunningMoments()\n"
        "mine = torch.tensor([1.0, 2.0]) + acc.process_index  # this process's scores\n"
        "moments.update(mine if sys.argv[1] == 'moments' else across_processes(mine))\n"
        "out.write(f'gathered {across_processes(mine).tolist()}\\n')\n"
        "try:\n"
        "    check_processes_agree(torch.nn.Linear(4, 2), acc, moments)\n"
        "    out.write('agree\\n')\n"
        "except Exception as e:\n"
        "    out.write(f'{type(e).__name__}: {e}\\n')\n"
        "out.close()\n"
        "acc.wait_for_everyone()\n"
        "torch.distributed.destroy_process_group()\n"
    )
    said = {}
    for how in ("same", "weights", "moments"):
        run = _launch(tmp_path, [str(script), how], {})
        assert run.returncode == 0, run.stderr[-2000:]
        said[how] = [(tmp_path / f"{how}-rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    # both processes see rank 0's scores, then rank 1's
    assert said["same"] == [["gathered [1.0, 2.0, 2.0, 3.0]", "agree"]] * 2
    for how, what in (("weights", "adapters"), ("moments", "running moments of r̂")):
        for lines in said[how]:
            assert lines[1].startswith(f"RLError: the 2 launched processes ended with different {what} "), lines


def test_rl_summary_flags_a_collapsed_policy_and_counts_only_real_learning():
    """Two runs with the same significant gain and rising curve; one answers every context with one phrase."""
    evals = pd.DataFrame(
        [(s, c, 1.0 + 0.1 * s + 0.01 * c, 1.0) for s in (0, 5, 10) for c in range(4)],
        columns=["step", "context_id", "reward", "kl"],
    )
    curves = pd.DataFrame({"algorithm": ["rloo", "rloo"], "step": [1, 10], "kl_coef": [0.7, 0.8]})
    runs = {m: R.RunInfo(m, 0, None, curves, 2.0, 0, False, 0.0, evals) for m in ("varied", "loop", "parrot")}
    stats = pd.DataFrame(
        [("base", m, 1.0, 0.1, np.nan, np.nan, "", 4) for m in runs]
        + [(m, m, 2.0, 0.1, 1.0, 0.01, "sign-flip", 4) for m in runs],
        columns=["model", "reward_fn", "mean", "sd_contexts", "diff", "p", "test", "n"],
    )
    replies = {
        "base": ["a b c", "d e f"],
        "varied": ["a b c", "g h i"],  # 4 bigrams, all distinct: 1.0; top share 1/2, not above 1/2
        "loop": ["so so so so", "ok ok ok ok"],  # 6 bigrams, 2 distinct: 0.33 < 0.5 x base's 1.0
        # one sentence for 2 of 3 contexts, the third long and varied: distinct-2 12/14 but top share 2/3
        "parrot": ["sorry for that", "sorry for that", "one two three four five six seven eight nine ten eleven"],
    }
    gens = pd.DataFrame([(m, r) for m, rs in replies.items() for r in rs], columns=["model", "response"])
    out = R.rl_summary(stats, runs, "base", gens).set_index("reward function")
    assert out.loc["varied", "distinct-2 adapted"] == 1.0 and out.loc["varied", "top response share"] == 0.5
    assert out.loc["varied", "slope (r̂/update)"] == pytest.approx(0.1)
    assert out.loc["varied", "KL weight (start)"] == 0.7  # the weight before the controller moved it
    assert not out.loc["varied", "collapsed"] and out.loc["varied", "learned"]
    assert out.loc["loop", "distinct-2 adapted"] == pytest.approx(1 / 3) and out.loc["loop", "collapsed"]
    assert out.loc["parrot", "distinct-2 adapted"] == pytest.approx(12 / 14)
    assert out.loc["parrot", "top response share"] == pytest.approx(2 / 3) and out.loc["parrot", "collapsed"]
    assert not out.loc["loop", "learned"] and not out.loc["parrot", "learned"]
    assert "collapsed" not in R.rl_summary(stats, runs, "base").columns  # without generations: no claim
    # a run that kept update 5: its slope and KL stop there (0.1 per update either way here; KL 2.0 at step 5)
    early = R.RunInfo("varied", 0, None, curves, 2.0, 0, False, 0.0, evals.assign(kl=evals["step"] / 2.5), 5)
    row = R.rl_summary(stats, {"varied": early}, "base", gens).iloc[0]
    assert row["kept update"] == 5 and row["KL (nats)"] == pytest.approx(2.0) and row["learned"]
    assert out.loc["varied", "kept update"] == 10  # kept_step None: the last update
    reading = R.summary_reading(out.reset_index()).split("\n")
    assert reading[0] == (
        "- **varied** (RLOO, kept update 10 of 10): 1.00 → 2.00 under its own reward, +1.00 (p 0.010, paired over 4 "
        "contexts); slope 0.100 r̂ per update [0.100, 0.100]; KL 1.0 nats; distinct-2 1.00 (base 1.00), its most "
        "frequent reply for 50% of the contexts: **learned**."
    )
    assert reading[1].endswith(": not learned (collapsed).") and reading[2].endswith(": not learned (collapsed).")
    assert reading[-1] == (
        "1 of 3 reward functions learned. p: sign-flip; the slope's CI is a 95% bootstrap over the curve's contexts."
    )
    flat = out.reset_index().assign(**{"p": 0.2, "slope 95% CI low": -0.01, "kept update": 0})
    assert "no slope (it kept the base model)" in R.summary_reading(flat)
    why = "gain not significant (p ≥ 0.05); slope CI not above 0; collapsed"
    assert f": not learned ({why})." in R.summary_reading(flat)


def test_kept_step_is_the_last_evaluation_before_collapse_or_after_recovery():
    base = ["a b c", "d e f", "g h i", "j k l"]
    stages = {
        0: base,
        5: ["a b x", "d e y", "g h z", "j k w"],  # moved, varied
        10: ["sorry for that"] * 3 + ["j k l"],  # one sentence for 3 of 4: collapsed
        15: ["a b c d", "e f g h", "sorry for that", "i j k l"],  # recovered
        20: ["so so so so", "so so so so", "ok ok ok ok", "no no no no"],  # top share 1/2, distinct-2 low
    }
    evals = pd.DataFrame([(s, f"c{i}", r) for s, rs in stages.items() for i, r in enumerate(rs)],
                         columns=["step", "context_id", "response"])  # fmt: skip
    assert R.collapsed(stages[10], base) and R.collapsed(stages[20], base) and not R.collapsed(stages[15], base)
    assert R.top_share(stages[10]) == 0.75
    assert R.kept_step(evals) == 15
    assert R.kept_step(evals[evals["step"] <= 10]) == 5
    assert R.kept_step(evals[evals["step"].isin([0, 10])]) == 0  # collapsed at once: the base's own adapter


def test_diversity_path_and_collapse_onsets_by_hand():
    base = ["a b c", "d e f", "g h i", "j k l"]  # 8 distinct bigrams of 8
    stages = {
        "A": {
            0: (base, 0.0),
            3: (["a b x", "d e y", "g h z", "j k w"], 1.0),
            6: (["sorry for that"] * 3 + ["j k l"], 2.0),
        },
        "B": {0: (base, 0.0), 3: (["a b c d", "d e f g", "g h i j", "j k l m"], 1.5)},
    }  # fmt: skip
    evals = pd.DataFrame(
        [(fn, 0, "simulated", "rloo", step, f"c{i}", 1.0 + step, kl, 3, r)
         for fn, by_step in stages.items() for step, (rs, kl) in by_step.items() for i, r in enumerate(rs)],
        columns=list(R.EVAL_COLUMNS),
    )  # fmt: skip
    path = R.diversity_path(evals).set_index(["reward_fn", "step"])
    assert path.loc[("A", 3), "distinct-2 / base"] == 1.0 and not path.loc[("A", 3), "collapsed"]
    assert path.loc[("A", 6), "distinct-2 / base"] == 0.5  # 4 distinct bigrams of 8: half the base's
    assert path.loc[("A", 6), "top response share"] == 0.75 and path.loc[("A", 6), "collapsed"]
    assert path.loc[("A", 6), "KL (nats)"] == 2.0 and path.loc[("B", 3), "mean r̂"] == 4.0
    onsets = R.collapse_onsets(path.reset_index()).set_index("reward_fn")
    assert onsets.loc["A", "evaluations"] == 2 and onsets.loc["A", "collapsed evaluations"] == 1
    assert onsets.loc["A", "first collapse (update)"] == 6 and onsets.loc["A", "KL at first collapse"] == 2.0
    assert onsets.loc["A", "largest KL not collapsed"] == 1.0
    assert np.isnan(onsets.loc["B", "first collapse (update)"]) and onsets.loc["B", "largest KL not collapsed"] == 1.5
    text = R.collapse_reading(onsets.reset_index())
    assert "**A**: collapsed in 1 of 1 run, first at update 6 (2.0 nats); 1 of 2 evaluations" in text
    assert "**B**: no evaluation collapsed (1 run), up to 1.5 nats." in text


def test_adaptive_kl_weight_by_hand_and_its_floor():
    """Ziegler et al.'s controller: β·(1 + clip(KL/target − 1, ±0.2)·batch/horizon), then the floor."""
    from geli_lib.alignment.rl.ppo import next_kl_coef

    rl = RLParams(algorithm="rloo", batch_size=16, group_size=4, mini_batch_size=4, kl_target=3.0, kl_horizon=64.0)
    assert next_kl_coef(0.2, 3.3, rl) == pytest.approx(0.2 * (1 + 0.1 * 16 / 64))  # 10% over: 0.205
    assert next_kl_coef(0.2, 30.0, rl) == pytest.approx(0.2 * 1.05)  # the error is clipped at +0.2
    assert next_kl_coef(0.2, 0.0, rl) == pytest.approx(0.2 * 0.95)  # ... and at -0.2
    fast = dataclasses.replace(rl, kl_horizon=16.0, kl_coef_min=0.1)
    assert next_kl_coef(0.2, 9.0, fast) == pytest.approx(0.24)  # +20% per update above the target
    beta = 0.2
    for _ in range(5):  # a policy that has not moved yet: 0.2 -> 0.16 -> 0.128 -> 0.1 (floor) -> 0.1
        beta = next_kl_coef(beta, 0.0, fast)
    assert beta == 0.1
    assert next_kl_coef(0.2, 0.0, dataclasses.replace(fast, kl_coef_min=0.0)) == pytest.approx(0.16)
    with pytest.raises(ParamError, match=r"rl\.kl_coef_min: must be >= 0, got -1"):
        load_params("smoke", rl={"kl_coef_min": -1})


def test_generate_samples_at_the_temperature_it_is_given():
    """``generate(do_sample=True, temperature=t)`` samples at t (the RL rollouts' 0.7, response_spread.py), seeded."""
    from geli_lib.core.models import load_policy

    model, tok = load_policy()
    tok.padding_side = "left"
    histories = ["User: I just got back from a trip to Spain.", "User: My dog has been ill all week."]
    prompts = [R.encode_prompt(tok, h, 128)[0] for h in histories]
    greedy = R.generate(model, tok, prompts, 10)
    cold = R.generate(model, tok, prompts, 10, do_sample=True, seed=3, temperature=0.01)
    assert cold == greedy  # near-zero temperature: the argmax token, whatever the seed
    hot = [R.generate(model, tok, prompts, 10, do_sample=True, seed=s, temperature=2.0) for s in (3, 3, 4)]
    assert hot[0] == hot[1] and hot[0] != hot[2] and hot[0] != greedy  # seeded, and it does sample


def _full_forward_kl(model, tok, prompts: list[list[int]], max_new_tokens: int) -> np.ndarray:
    """The KL of greedy responses by its definition: policy and reference each run over prompt + response (left
    padded, one batch: the evaluator's batch of the same prompts generates the same responses)."""
    batch = tok.pad({"input_ids": prompts}, return_tensors="pt")
    with torch.no_grad():
        seq = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            top_k=None,
            top_p=None,
            temperature=None,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        resp = seq[:, batch["input_ids"].shape[1] :]
        eos = (resp == tok.eos_token_id).long()
        keep = (eos.cumsum(1) - eos) == 0
        attn = torch.cat([batch["attention_mask"], keep.long()], 1)
        kw = dict(input_ids=seq, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0))
        lp = model(**kw).logits[:, -resp.shape[1] - 1 : -1].float().log_softmax(-1)
        with model.disable_adapter():
            lq = model(**kw).logits[:, -resp.shape[1] - 1 : -1].float().log_softmax(-1)
    return ((lp.exp() * (lp - lq)).sum(-1) * keep).sum(1).numpy()


def test_policy_evaluator_kl_is_the_full_forward_kl_and_zero_before_the_first_update(world, tok):
    """The evaluator runs policy and reference only over the response (the reference's prompt states kept from its
    first call): its KL equals the definition's (both models over prompt + response), is the same at a second
    call (the kept states are restored), and is exactly 0 for an adapter whose B = 0, as before any update."""
    from peft import get_peft_model

    from geli_lib.core.models import load_policy

    histories = ["User: I just got back from a trip to Spain.", "User: My dog has been ill all week.\nAI: Oh no."]
    tok.padding_side = "left"
    prompts = [R.encode_prompt(tok, h, 128)[0] for h in histories]
    assert len(set(map(len, prompts))) == 2  # one is left-padded
    reward = R.TextReward(R.load_trained_reward(world["folder"]), normalise=False)
    base, _ = load_policy()
    policy = get_peft_model(base, R.ppo._lora_config(load_params("cpu").rl)).eval()
    before = R.PolicyEvaluator(tok, prompts, histories, reward, 8)(policy)
    assert (before["kl"] == 0.0).all(), before["kl"].tolist()
    torch.manual_seed(0)
    for module in policy.modules():  # move the adapter: B = 0 -> random, as updates would
        if hasattr(module, "lora_B") and "default" in module.lora_B:
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.05)
    evaluator = R.PolicyEvaluator(tok, prompts, histories, reward, 8)
    first, second = evaluator(policy), evaluator(policy)
    pd.testing.assert_frame_equal(first, second)
    assert (first["kl"] > 1e-3).all(), first["kl"].tolist()
    np.testing.assert_allclose(first["kl"], _full_forward_kl(policy, tok, prompts, 8), rtol=1e-3, atol=1e-4)


def test_a_runs_first_evaluation_reuses_the_base_responses_of_an_earlier_run_exactly(world, tok):
    """07's runs share the base's evaluation: a policy at B = 0 on the same prompts (after another LoRA init, as
    the next run's) gets the first one's rows without running the model, and they equal what an empty memo
    computes; another thread computes its own; a moved adapter is evaluated afresh."""
    import threading

    from peft import get_peft_model

    from geli_lib.alignment.rl import curve
    from geli_lib.core.models import load_policy

    histories = ["User: I just got back from a trip to Spain.", "User: My dog has been ill all week.\nAI: Oh no."]
    tok.padding_side = "left"
    prompts = [R.encode_prompt(tok, h, 128)[0] for h in histories]
    reward = R.TextReward(R.load_trained_reward(world["folder"]), normalise=False)
    lora = R.ppo._lora_config(load_params("cpu").rl)

    def reinit(model, part, **normal):  # another LoRA init (lora_A) or an update's move (lora_B)
        for module in model.modules():
            if hasattr(module, part) and "default" in getattr(module, part):
                torch.nn.init.normal_(getattr(module, part)["default"].weight, **normal)

    def evaluate(model):
        tokens = []
        hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: tokens.append(a[0].numel()))
        try:
            return R.PolicyEvaluator(tok, prompts, histories, reward, 8)(model), sum(tokens)
        finally:
            hook.remove()

    curve._SHARED.__dict__.clear()  # an earlier test may have evaluated these prompts
    torch.manual_seed(0)
    policy = get_peft_model(load_policy()[0], lora).eval()
    assert R.at_base(policy)
    rows, ran = evaluate(policy)
    reinit(policy, "lora_A", std=0.1)
    assert R.at_base(policy)
    again, ran_again = evaluate(policy)
    assert ran > 0 and ran_again == 0
    pd.testing.assert_frame_equal(rows, again)
    curve._SHARED.__dict__.clear()
    fresh, ran_fresh = evaluate(policy)
    assert ran_fresh > 0
    pd.testing.assert_frame_equal(rows, fresh)
    elsewhere = {}
    thread = threading.Thread(target=lambda: elsewhere.update(out=evaluate(policy)))
    thread.start()
    thread.join()
    assert elsewhere["out"][1] > 0
    pd.testing.assert_frame_equal(rows, elsewhere["out"][0])
    reinit(policy, "lora_B", std=0.05)
    assert not R.at_base(policy)
    moved, ran_moved = evaluate(policy)
    assert ran_moved > 0 and (moved["kl"] > 1e-3).all()


def test_shared_prompt_logps_equal_trls_full_forward_with_each_prompt_run_once(tok):
    """RLOO / GRPO's log-probabilities with each distinct prompt run once: values, entropies and LoRA gradients
    equal TRL's own per-row forward over prompt + completion (left-padded prompts, completions padded after EOS,
    rows of one prompt not adjacent), and the model sees each prompt's tokens once."""
    import types

    from peft import get_peft_model
    from trl import RLOOTrainer

    from geli_lib.alignment.rl.group import GroupTrainer
    from geli_lib.core.models import load_policy

    tok.padding_side = "left"
    histories = [
        "User: I just got back from a trip to Spain.",
        "User: My dog has been ill all week.\nAI: Oh no.",
        "User: Hi",
    ]
    batch = tok([R.encode_prompt(tok, h, 128)[1] for h in histories], padding=True, return_tensors="pt")
    order = torch.tensor([0, 1, 2, 0, 2, 1, 1, 0])  # 3 prompts, 8 completions
    gen = torch.Generator().manual_seed(0)
    completion = torch.randint(100, 40000, (len(order), 6), generator=gen)
    completion_mask = torch.ones_like(completion)
    for row, end in [(1, 2), (4, 4)]:  # EOS then padding
        completion[row, end:], completion_mask[row, end:] = tok.pad_token_id, 0
    ids = torch.cat([batch["input_ids"][order], completion], 1)
    mask = torch.cat([batch["attention_mask"][order], completion_mask], 1)
    assert (batch["attention_mask"] == 0).any()  # some prompt is left-padded

    base, _ = load_policy()
    policy = get_peft_model(base, R.ppo._lora_config(load_params("cpu").rl)).train()
    torch.manual_seed(0)
    for module in policy.modules():  # a moved adapter, so its gradients are not those of B = 0
        if hasattr(module, "lora_B") and "default" in module.lora_B:
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.05)
    trainer = types.SimpleNamespace(model_kwarg_keys={"logits_to_keep"}, temperature=0.7)
    tokens_seen = []
    hook = policy.get_input_embeddings().register_forward_hook(lambda m, args, out: tokens_seen.append(args[0].numel()))

    def run(method):
        policy.zero_grad()
        tokens_seen.clear()
        logps, entropies, _ = method(trainer, policy, ids, mask, completion.shape[1], compute_entropy=True)
        (logps * completion_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
        return logps.detach(), entropies, grads, sum(tokens_seen)

    full = run(RLOOTrainer._get_per_token_logps_and_entropies)
    shared = run(GroupTrainer._get_per_token_logps_and_entropies)
    again = run(GroupTrainer._get_per_token_logps_and_entropies)  # the same gradients, bit for bit
    assert all(torch.equal(again[2][name], grad) for name, grad in shared[2].items())
    hook.remove()
    kept = completion_mask.bool()
    np.testing.assert_allclose(shared[0][kept], full[0][kept], atol=1e-4)
    np.testing.assert_allclose(shared[1][kept], full[1][kept], atol=1e-4)
    for name, grad in full[2].items():  # float32 sums in another order: relative to the gradient's norm
        assert float((shared[2][name] - grad).norm() / grad.norm()) < 1e-4, name
    assert full[3] == ids.numel()
    assert shared[3] == 3 * batch["input_ids"].shape[1] + len(order) * (completion.shape[1] - 1)


def test_only_the_first_launched_process_prepares_the_run_folder(tmp_path, monkeypatch):
    """Two processes each clearing a folder of another key raced (CI: the key's atomic write lost its folder)."""
    import threading

    run = tmp_path / "run"
    (run / ".state.old").mkdir(parents=True)  # a stop between the state swap's two renames
    (run / "key.json").write_text(json.dumps({"key": "old"}))
    (run / "adapter-step3").mkdir()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(R.RLError, match="did not prepare the run folder"):
        R.prepare_run_dir(run, "new", wait_s=0.3)
    assert (run / "adapter-step3").is_dir()  # the waiting process clears nothing
    # it returns once the first process has written the key
    later = threading.Timer(0.3, lambda: (run / "key.json").write_text(json.dumps({"key": "new"})))
    later.start()
    R.prepare_run_dir(run, "new", wait_s=10)
    later.join()
    monkeypatch.setenv("RANK", "0")
    (run / "key.json").write_text(json.dumps({"key": "old"}))
    R.prepare_run_dir(run, "new")  # another key's folder: cleared, keyed anew
    assert json.loads((run / "key.json").read_text()) == {"key": "new"}
    assert not (run / "adapter-step3").exists()
    (run / ".state.old").mkdir()
    R.prepare_run_dir(run, "new")  # the same key: kept, and the interrupted swap completed
    assert (run / "state").is_dir() and not (run / ".state.old").exists()
