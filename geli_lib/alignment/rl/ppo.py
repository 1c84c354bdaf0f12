"""PPO (or RLOO / GRPO) with LoRA against r_θ (GELI eq. 1): one adaptation per reward function."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import random
import resource
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from geli_lib.alignment.rl.curve import EVAL_COLUMNS, PolicyEvaluator, kept_step
from geli_lib.alignment.rl.group import group_trainer
from geli_lib.alignment.rl.prompt import RLError, chat_messages, encode_prompt, reward_histories, scoring_histories
from geli_lib.alignment.rl.reward import (
    RewardAdapter,
    RunningMoments,
    TextReward,
    check_adapter,
    check_reward_for_rl,
    load_trained_reward,
)
from geli_lib.alignment.rl.runs import (
    finished_run,
    launched_processes,
    merge_rows,
    prepare_run_dir,
    run_dir,
    run_key,
    tensorboard_dir,
)
from geli_lib.core.compute import torch_threads
from geli_lib.core.io import progress_enabled, write_json
from geli_lib.core.models import base_linears_to_bf16, bf16_in_effect, load_policy, offline_env, smollm2_path
from geli_lib.core.params import DataParams, RLParams
from geli_lib.core.runs import results_dir

#: LoRA targets: every attention and MLP projection of the Llama-style SmolLM2.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


CURVE_COLUMNS = (
    "reward_fn",
    "seed",
    "step",
    "reward_mean",
    "kl",
    "corpus",
    "algorithm",
    "reward_sd",
    "score_norm_mean",
    "kl_coef",
    "entropy",
    "response_words",
    "seconds",
)


# --------------------------------------------------------------------------- PPO


def _lora_config(rl: RLParams) -> Any:
    # lazy: transformers only when a model is used, after offline_env()
    from peft import LoraConfig

    return LoraConfig(
        r=rl.lora_r,
        lora_alpha=rl.lora_alpha,
        lora_dropout=rl.lora_dropout,
        target_modules=LORA_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence transformers' loading bars and reports and its deprecation chatter, unless progress is on.

    The value model's fresh ``score`` head is reported as MISSING on every load,
    and TRL 1.12 passes arguments transformers 5 calls deprecated: neither is news.
    """
    # lazy: transformers only when a model is used, after offline_env()
    from transformers.utils import logging as hf_logging

    if progress_enabled():
        yield
        return
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message="var\\(\\): degrees of freedom")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _value_model(path: Path, pad_id: int, device: str, train_backbone: bool) -> Any:
    """SmolLM2 with a fresh scalar ``.score`` head: PPO's value model (backbone frozen unless ``train_backbone``)."""
    # lazy: transformers only when a model is used, after offline_env()
    from transformers import AutoModelForSequenceClassification

    value = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, local_files_only=True, dtype=torch.float32
    )
    value.config.pad_token_id = pad_id
    if not train_backbone:
        getattr(value, value.base_model_prefix).requires_grad_(False)
    return value.to(device)


def _trainable(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors of ``module`` (what a resume state must keep)."""
    return {k: v.detach().clone() for k, v in module.named_parameters() if v.requires_grad}


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


@dataclass
class RunInfo:
    """What :func:`train_rl` did: where the adapter is, its curves, time per update and peak memory."""

    name: str
    seed: int
    adapter: Path
    curves: pd.DataFrame
    seconds_per_step: float
    resumed_from: int
    reused: bool
    peak_rss_gb: float
    evals: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=list(EVAL_COLUMNS)))
    """Rows of :data:`EVAL_COLUMNS`: the policy on the fixed held-out contexts (empty without ``curve``)."""
    kept_step: int | None = None
    """The update whose adapter ``adapter`` holds (:func:`kept_step` with ``rl.keep_uncollapsed``; None: the last)."""


#: The run folder's subfolder of the adapters evaluated on the curve, one per evaluation step.
EVAL_ADAPTERS = "evaluated"


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def check_processes_agree(model: nn.Module, accelerator: Any, moments: RunningMoments | None = None) -> None:
    """Under several launched processes, refuse a run whose processes ended with different adapters or score
    moments: DDP averages the gradients and r̂ is standardised by the whole update's scores
    (:func:`~geli_lib.alignment.rl.reward.across_processes`), so every process must hold the same trainable
    weights (to float32 sums' rounding) and the same running mean and SD of r̂."""
    if accelerator.num_processes < 2:
        return
    weights = [p.detach().float() for p in model.parameters() if p.requires_grad]
    total = torch.stack([torch.stack([w.sum(), w.abs().sum()]) for w in weights]).sum(0)
    m = moments or RunningMoments()
    row = torch.cat([total, torch.tensor([m.mean, m.std], dtype=torch.float32)]).to(accelerator.device)
    rows = accelerator.gather(row[None]).cpu()
    same = torch.isclose(rows, rows[:1].expand_as(rows), rtol=1e-5, atol=1e-6).all(0)
    for what, cols in (("adapters", [0, 1]), ("running moments of r̂", [2, 3])):
        if not same[cols].all():
            raise RLError(
                f"the {accelerator.num_processes} launched processes ended with different {what} (per process: "
                f"{rows[:, cols].tolist()}): "
                + ("their gradients were not averaged" if what == "adapters" else "each standardised alone")
            )


def _tensorboard(tb_dir: Path) -> Any:
    """transformers' TensorBoard callback writing to ``tb_dir`` (its own default is under output_dir)."""
    # lazy: transformers only when a model is used, after offline_env()
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(tb_dir)))


def next_kl_coef(beta: float, kl: float, rl: RLParams) -> float:
    """The KL weight after an update whose responses were ``kl`` nats from the reference: Ziegler et al. 2019's
    adaptive controller (TRL 0.x ``AdaptiveKLController``), β·(1 + clip(KL/target − 1, ±0.2)·batch/horizon),
    kept at or above ``rl.kl_coef_min``."""
    err = float(np.clip(kl / rl.kl_target - 1, -0.2, 0.2))
    return max(beta * (1 + err * rl.batch_size / rl.kl_horizon), rl.kl_coef_min)


def _monitor(
    name: str,
    seed: int,
    corpus: str,
    rl: RLParams,
    reward: TextReward,
    start: int,
    curves: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    save: Any,
    evaluate: Any,
    holder: dict[str, Any],
) -> Any:
    """The callback that logs each update, adapts the KL weight, evaluates on the fixed contexts every
    ``eval_every`` updates (and before the first), and saves every ``save_every`` updates."""
    # lazy: transformers only when a model is used, after offline_env()
    from transformers import TrainerCallback

    class Monitor(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()

        def _evaluate(self, step: int) -> None:
            if evaluate is None or any(e["step"] == step for e in evals):
                return
            t = time.perf_counter()
            evals.extend(evaluate(step))
            self.t0 += time.perf_counter() - t  # evaluation time is not update time

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero:
                self._evaluate(start)
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = logs or {}
            kl = logs.get("objective/kl", logs.get("kl"))
            if kl is None:
                return
            kl = float(kl)
            if rl.algorithm != "ppo":  # TRL logs the mean per-token KL: make it nats per response like PPO's
                kl *= float(logs.get("completions/mean_length", 1.0))
            mean, sd, words = reward.pop_log()
            step = start + state.global_step
            now = time.perf_counter()
            beta_holder = args if rl.algorithm == "ppo" else holder.get("trainer")
            attr = "kl_coef" if rl.algorithm == "ppo" else "beta"
            curves.append(
                {
                    "reward_fn": name,
                    "seed": seed,
                    "step": step,
                    "reward_mean": mean,
                    "kl": kl,
                    "corpus": corpus,
                    "algorithm": rl.algorithm,
                    "reward_sd": sd,
                    "score_norm_mean": logs.get("objective/scores", np.nan),
                    "kl_coef": float(getattr(beta_holder, attr, np.nan)),
                    "entropy": logs.get("objective/entropy", logs.get("entropy", np.nan)),
                    "response_words": words,
                    "seconds": round(now - self.t0, 3),
                }
            )
            self.t0 = now
            if rl.adaptive_kl and beta_holder is not None:
                setattr(beta_holder, attr, next_kl_coef(getattr(beta_holder, attr), kl, rl))
            reward.step = step + 1

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            step = start + state.global_step
            if state.is_world_process_zero and (step % rl.eval_every == 0 or step == rl.steps):
                self._evaluate(step)
            if save is not None and state.is_world_process_zero and (step % rl.save_every == 0 or step == rl.steps):
                save(step, args)

    return Monitor()


def _lr_schedule(rl: RLParams, done: int = 0) -> dict[str, Any]:
    """TRL's learning-rate schedule: constant after ``rl.warmup_steps`` updates of linear warm-up, ``done`` of
    which have run (PPO resumes with a fresh trainer, so its warm-up restarts over the updates left of it)."""
    warmup = max(rl.warmup_steps - done, 0)
    return {"lr_scheduler_type": "constant_with_warmup" if warmup else "constant", "warmup_steps": warmup}


def _ppo_config(rl: RLParams, out: Path, seed: int, updates: int, kl_coef: float, device: str, done: int = 0) -> Any:
    # lazy: transformers only when a model is used, after offline_env()
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(
        output_dir=str(out / "trl"),
        seed=seed,
        learning_rate=rl.lr,
        **_lr_schedule(rl, done),
        per_device_train_batch_size=rl.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=rl.batch_size // rl.mini_batch_size,
        total_episodes=updates * rl.batch_size * launched_processes(),  # TRL's episodes count every process's
        local_rollout_forward_batch_size=rl.batch_size,
        num_ppo_epochs=rl.ppo_epochs,
        response_length=rl.response_length,
        temperature=rl.temperature,
        stop_token="eos",
        cliprange=rl.cliprange,
        cliprange_value=rl.cliprange_value,
        vf_coef=rl.vf_coef,
        gamma=rl.gamma,
        lam=rl.gae_lambda,
        kl_coef=kl_coef,
        kl_estimator="k1",
        whiten_rewards=False,
        missing_eos_penalty=None,
        num_sample_generations=0,
        bf16=rl.bf16,
        gradient_checkpointing=rl.gradient_checkpointing,
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        disable_tqdm=not progress_enabled(),
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )


def _evaluator(
    holder: dict[str, Any],
    tok: Any,
    curve: pd.DataFrame | None,
    reward: TextReward,
    rl: RLParams,
    name: str,
    seed: int,
    corpus: str,
    run: Path,
) -> Any:
    """``evaluate(step) -> rows`` of :data:`EVAL_COLUMNS` on the fixed held-out contexts (None without any); the
    adapter evaluated is saved as ``run/<EVAL_ADAPTERS>/step<N>``, so that the run can keep it (:func:`kept_step`)."""
    if curve is None or curve.empty:
        return None
    prompts = [encode_prompt(tok, h, rl.max_prompt_tokens)[0] for h in curve["history"]]
    policy_evaluator = PolicyEvaluator(
        tok, prompts, scoring_histories(curve).tolist(), reward, rl.response_length, bf16=rl.bf16
    )

    def evaluate(step: int) -> list[dict[str, Any]]:
        trainer = holder["trainer"]
        model = trainer.accelerator.unwrap_model(trainer.policy_model if rl.algorithm == "ppo" else trainer.model)
        out = policy_evaluator(model)
        model.save_pretrained(run / EVAL_ADAPTERS / f"step{step}")
        meta = {"reward_fn": name, "seed": seed, "corpus": corpus, "algorithm": rl.algorithm, "step": step}
        return [{**meta, "context_id": c, **row} for c, row in zip(curve["context_id"], out.to_dict("records"))]

    return evaluate


def _score_norm_option(rl: RLParams) -> dict[str, Any]:
    """``rl.score_norm`` for RLOO / GRPO: standardised advantages (RLOO's ``normalize_advantages``; GRPO's
    ``scale_rewards`` by the group's SD, or none). Without it RLOO's advantages stay on r̂'s scale, whose
    within-context differences are small, and the LoRA barely moves."""
    if rl.algorithm == "rloo":
        return {"normalize_advantages": rl.score_norm}
    return {"scale_rewards": "group" if rl.score_norm else "none"}


def _in_rl_threads(fn: Callable[..., RunInfo]) -> Callable[..., RunInfo]:
    """An adaptation runs with ``rl.threads`` torch threads (its fourth argument), wherever it trains."""

    @functools.wraps(fn)
    def adapt(name: str, folder: str | Path, train: pd.DataFrame, rl: RLParams, *args: Any, **kw: Any) -> RunInfo:
        with torch_threads(rl.threads):
            return fn(name, folder, train, rl, *args, **kw)

    return adapt


@_quiet()
@_in_rl_threads
def train_rl(
    name: str,
    reward_folder: str | Path,
    train: pd.DataFrame,
    rl: RLParams,
    profile: str,
    corpus: str = "simulated",
    seed: int = 0,
    device: str = "cpu",
    callbacks: Sequence[Any] = (),
    out_dir: str | Path | None = None,
    curve: pd.DataFrame | None = None,
    data: DataParams | None = None,
    results_key: str | None = None,
    write_results: bool = True,
) -> RunInfo:
    """Adapt SmolLM2 + LoRA to the reward function saved in ``reward_folder`` (steps 2-6 of the module docstring).

    ``train`` holds the RL contexts (:func:`rl_contexts`); ``curve`` the fixed
    held-out contexts the policy is evaluated on before the first update and
    every ``rl.eval_every`` updates (:func:`curve_contexts`; None: no evaluation
    curve); ``data`` the data parameters that cut r_θ's history (the ones 08
    cross-scores with; default ``DataParams()``). Writes the curves to
    ``results/<results_key>/tables/ppo_curves.csv`` (default key: ``profile``;
    notebooks pass :attr:`StudyParams.results_key`) and the evaluation rows to
    ``tables/rl_eval_curves.csv`` (rows of this reward function, seed, corpus
    and algorithm replaced) and returns a :class:`RunInfo`. A finished run with
    the same inputs is reused; an interrupted one resumes. ``callbacks`` are
    extra ``transformers.TrainerCallback`` objects; training runs with ``rl.threads``
    torch threads (0: this thread's count); ``out_dir`` replaces the
    cache folder of adapters and resume state (:func:`run_dir`). Without
    ``write_results`` nothing goes to the results folder: the TensorBoard log
    stays in ``out_dir/tensorboard`` and the tables are left to the caller (a
    Dask task of :func:`adapt_on_cluster`, whose client writes them).
    """
    offline_env()
    rl.validate()
    rl = dataclasses.replace(rl, bf16=bf16_in_effect(rl.bf16, device))  # the run key holds what runs
    if train.empty:
        raise RLError("no RL contexts to train on (train is empty)")
    reward_folder = Path(reward_folder)
    trained = load_trained_reward(reward_folder)
    reward = TextReward(trained, name, normalise=rl.score_norm, data=data, device=device)
    check_reward_for_rl(trained, name, reward.scorer)
    run = Path(out_dir) if out_dir else run_dir(results_key or profile, name, seed, rl.algorithm)
    key = run_key(rl, reward_folder, train, seed, curve, data)
    run_keys = ["reward_fn", "seed", "corpus", "algorithm"]

    def write_tables(frame: pd.DataFrame, ev: pd.DataFrame) -> None:
        if not write_results:  # a Dask task: its client writes the tables
            return
        tables = results_dir(results_key or profile, "tables")
        merge_rows(tables / "ppo_curves.csv", frame, run_keys, CURVE_COLUMNS)
        if not ev.empty:
            merge_rows(tables / "rl_eval_curves.csv", ev, run_keys, EVAL_COLUMNS)

    done_path = run / "done.json"
    done = finished_run(run, key)
    if done is not None:
        check_adapter(run / "adapter", rl, smollm2_path())
        curves, evals = pd.DataFrame(done["curves"]), pd.DataFrame(done.get("evals", []))
        write_tables(curves, evals)
        return RunInfo(
            name, seed, run / "adapter", curves, done["seconds_per_step"], 0, True,
            done.get("peak_rss_gb", float("nan")), evals, done.get("kept_step"),
        )  # fmt: skip
    prepare_run_dir(run, key)
    state_dir = run / "state"
    start, state = 0, None
    if (state_dir / "state.json").exists():
        state = json.loads((state_dir / "state.json").read_text())
        if state.get("key") == key and state["step"] < rl.steps:
            start = int(state["step"])
            check_adapter(run / f"adapter-step{start}", rl, smollm2_path())
        else:
            state = None

    torch.manual_seed(seed + start)
    np.random.seed(seed + start)
    random.seed(seed + start)
    policy, tok = load_policy(device)
    policy.generation_config.pad_token_id = tok.pad_token_id
    reward.step = start + 1
    curves: list[dict[str, Any]] = list(state["curves"]) if state else []
    evals: list[dict[str, Any]] = list(state.get("evals", [])) if state else []
    tb_dir = tensorboard_dir(results_key or profile, rl.algorithm, name, seed) if write_results else run / "tensorboard"
    holder: dict[str, Any] = {}
    evaluate = _evaluator(holder, tok, curve, reward, rl, name, seed, corpus, run)

    def finish(trainer: Any, model: Any, t_train: float, first: int) -> RunInfo:
        seconds = t_train / max(rl.steps - first, 1)
        frame, ev = pd.DataFrame(curves), pd.DataFrame(evals, columns=list(EVAL_COLUMNS))
        kept = kept_step(ev) if rl.keep_uncollapsed and not ev.empty else rl.steps
        check_processes_agree(model, trainer.accelerator, reward.moments)
        if trainer.accelerator.is_main_process:  # under `accelerate launch`, one writer
            shutil.rmtree(run / "adapter", ignore_errors=True)
            if kept < rl.steps:
                shutil.copytree(run / EVAL_ADAPTERS / f"step{kept}", run / "adapter")
                print(f"{name} (seed {seed}): the curve's responses collapsed after update {kept}; kept", flush=True)
            else:
                model.save_pretrained(run / "adapter")
            shutil.rmtree(run / EVAL_ADAPTERS, ignore_errors=True)  # only for choosing (cpu: ~29 MB each)
            write_tables(frame, ev)
            done = {"key": key, "curves": curves, "evals": evals, "seconds_per_step": seconds, "kept_step": kept}
            done["peak_rss_gb"] = _peak_rss_gb()  # of the process that trained it (a Dask worker's, say)
            write_json(done_path, done)
            shutil.rmtree(state_dir, ignore_errors=True)  # only for resuming (a trained value backbone: ~1.6 GB)
        return RunInfo(name, seed, run / "adapter", frame, seconds, first, False, _peak_rss_gb(), ev, kept)

    if rl.algorithm != "ppo":
        return _train_group(
            name,
            reward,
            policy,
            tok,
            train,
            rl,
            corpus,
            seed,
            device,
            run,
            tb_dir,
            callbacks,
            curves,
            evals,
            evaluate,
            holder,
            finish,
        )

    # lazy: transformers only when a model is used, after offline_env()
    from datasets import Dataset
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from transformers.trainer_callback import PrinterCallback
    from trl.experimental.ppo import PPOTrainer

    prompts = [encode_prompt(tok, h, rl.max_prompt_tokens)[0] for h in train["history"]]
    dataset = Dataset.from_dict({"input_ids": prompts})
    kl_coef = float(state["kl_coef"]) if state else rl.kl_coef
    # Re-seeded per start step: a resumed run draws fresh prompt batches instead of replaying the first ones.
    config = _ppo_config(rl, run, seed + start, rl.steps - start, kl_coef, device, start)
    value = _value_model(smollm2_path(), tok.pad_token_id, device, rl.train_value_backbone)
    adapter_reward = RewardAdapter(reward, tok, reward_histories(tok, train, rl.max_prompt_tokens))

    def save(step: int, args: Any) -> None:
        trainer = holder["trainer"]
        trainer.policy_model.save_pretrained(run / f"adapter-step{step}")
        if step >= rl.steps:  # done.json follows: nothing left to resume
            return
        tmp = run / ".state.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(
            {
                "value": _trainable(value),
                "optimizer": trainer.optimizer.state_dict(),
                "adapter": get_peft_model_state_dict(trainer.policy_model),
                "moments": dataclasses.asdict(reward.moments),
                "rng": _rng_state(),
            },
            tmp / "tensors.pt",
        )
        write_json(
            tmp / "state.json",
            {"key": key, "step": step, "kl_coef": float(args.kl_coef), "curves": curves, "evals": evals},
        )
        old = run / ".state.old"
        shutil.rmtree(old, ignore_errors=True)
        if state_dir.exists():
            os.replace(state_dir, old)
        os.replace(tmp, state_dir)  # the new state is complete before the old one goes
        shutil.rmtree(old, ignore_errors=True)

    trainer = PPOTrainer(
        args=config,
        processing_class=tok,
        model=policy,
        ref_model=None,
        reward_model=adapter_reward,
        train_dataset=dataset,
        value_model=value,
        eval_dataset=dataset.select(range(min(len(dataset), rl.batch_size))),
        peft_config=_lora_config(rl),
    )
    wrapped = trainer.accelerator.unwrap_model(trainer.model)
    if wrapped is not trainer.model:  # several processes: DDP wraps TRL's policy-and-value model
        # TRL 1.12 reads `model.policy` through the wrapper for the reference pass (huggingface/trl#2375):
        # a plain attribute, not a registered submodule, so DDP's parameters and state dict stay as they are
        object.__setattr__(trainer.model, "policy", wrapped.policy)
    holder["trainer"] = trainer
    trainer.remove_callback(PrinterCallback)  # our curves replace its per-step dict dumps
    trainer.add_callback(_monitor(name, seed, corpus, rl, reward, start, curves, evals, save, evaluate, holder))
    trainer.add_callback(_tensorboard(tb_dir))
    for cb in callbacks:
        trainer.add_callback(cb)
    if state:
        blob = torch.load(state_dir / "tensors.pt", map_location=device, weights_only=False)
        try:
            set_peft_model_state_dict(trainer.policy_model, blob["adapter"])
        except RuntimeError as e:  # shapes of another rank
            raise RLError(f"{state_dir}: the saved adapter does not fit rl.lora_r={rl.lora_r}: {e}") from e
        value.load_state_dict(blob["value"], strict=False)  # only its trainable part was saved
        trainer.optimizer.load_state_dict(blob["optimizer"])
        reward.moments = RunningMoments(**blob["moments"])
        _set_rng_state(blob["rng"])
        print(f"{name} (seed {seed}): resuming from update {start} of {rl.steps}", flush=True)
    trainer.train()
    t_train = sum(c["seconds"] for c in curves if c["step"] > start)  # evaluation time excluded (Monitor)
    return finish(trainer, trainer.policy_model, t_train, start)


def _train_group(
    name: str,
    reward: TextReward,
    policy: Any,
    tok: Any,
    train: pd.DataFrame,
    rl: RLParams,
    corpus: str,
    seed: int,
    device: str,
    run: Path,
    tb_dir: Path,
    callbacks: Sequence[Any],
    curves: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    evaluate: Any,
    holder: dict[str, Any],
    finish: Any,
) -> RunInfo:
    """RLOO or GRPO (``rl.algorithm``) with r_θ as a plain reward callable; TRL's own checkpoints and resume.

    ``rl.batch_size`` counts completions: ``batch_size / group_size`` prompts per
    update, ``group_size`` sampled responses each. The KL weight β starts at
    ``kl_coef`` and follows the same adaptive controller as PPO.
    """
    offline_env()
    # lazy: transformers only when a model is used, after offline_env()
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    shown = [encode_prompt(tok, h, rl.max_prompt_tokens)[1] for h in train["history"]]
    # the reward callable gets the dataset's "history" column: the dialogue state r_θ scores in
    states = scoring_histories(train).tolist()
    dataset = Dataset.from_dict({"prompt": [chat_messages(h) for h in shown], "history": states})
    Config, Trainer = (RLOOConfig, RLOOTrainer) if rl.algorithm == "rloo" else (GRPOConfig, GRPOTrainer)
    Trainer = group_trainer(Trainer)  # each prompt once per group; sampling under the run's autocast
    if rl.bf16:
        base_linears_to_bf16(policy)  # what autocast computes with, cast once instead of at every call
    last = sorted((run / "trl").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    start = int(last[-1].name.split("-")[1]) if last else 0
    progress = run / "progress.json"
    if last:
        check_adapter(last[-1], rl, smollm2_path())
        if progress.exists():  # curves and evaluations up to the checkpoint
            saved = json.loads(progress.read_text())
            curves += [c for c in saved["curves"] if c["step"] <= start]
            evals += [e for e in saved["evals"] if e["step"] <= start]
            if "moments" in saved:
                reward.moments = RunningMoments(**saved["moments"])
    config = Config(
        output_dir=str(run / "trl"),
        seed=seed,
        learning_rate=rl.lr,
        **_lr_schedule(rl),
        per_device_train_batch_size=rl.batch_size,
        gradient_accumulation_steps=1,
        max_steps=rl.steps,
        num_generations=rl.group_size,
        max_completion_length=rl.response_length,
        temperature=rl.temperature,
        beta=float(curves[-1]["kl_coef"]) if curves else rl.kl_coef,
        logging_steps=1,
        save_strategy="steps",
        save_steps=rl.save_every,
        report_to=[],
        disable_tqdm=not progress_enabled(),
        bf16=rl.bf16,
        gradient_checkpointing=rl.gradient_checkpointing,
        use_cpu=device == "cpu",
        log_completions=False,
        **_score_norm_option(rl),
    )
    trainer = Trainer(
        model=policy,
        reward_funcs=reward.reward_func,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=_lora_config(rl),
    )
    holder["trainer"] = trainer

    def save(step: int, args: Any) -> None:
        write_json(progress, {"curves": curves, "evals": evals, "moments": dataclasses.asdict(reward.moments)})

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_monitor(name, seed, corpus, rl, reward, 0, curves, evals, save, evaluate, holder))
    trainer.add_callback(_tensorboard(tb_dir))
    for cb in callbacks:
        trainer.add_callback(cb)
    if last:
        print(f"{name} (seed {seed}): resuming from {last[-1].name}", flush=True)
    trainer.train(resume_from_checkpoint=str(last[-1]) if last else None)
    t_train = sum(c["seconds"] for c in curves if c["step"] > start)
    return finish(trainer, trainer.accelerator.unwrap_model(trainer.model), t_train, start)
