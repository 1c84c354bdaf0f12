"""Reward-function experiments: the data every method shares, the method × seed grid, the table.

Notebooks 02-04 each train a group of reward functions on the same cached
features and write their rows to ``tables/reward_functions/<part>.csv``;
notebook 06 collects the parts into ``tables/reward_functions.csv`` (columns:
:data:`geli_lib.reward.evaluation.REWARD_TABLE_COLUMNS`) and lays them out as GELI Table 1 (mean ± sd over seeds).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geli_lib.core.io import cache_dir, write_csv
from geli_lib.core.params import ADHOC_DIR, REWARD_FUNCTION_IDS, RewardParams, StudyParams
from geli_lib.core.runs import results_dir
from geli_lib.corpus import data as data_mod
from geli_lib.corpus.schema import Corpus
from geli_lib.reward.evaluation import REWARD_TABLE_COLUMNS, evaluate_reward, reward_table_row
from geli_lib.reward.reward_model import (
    TrainData,
    encode_pairs,
    family,
    make_train_data,
    predict,
    predict_pairs,
    sentiment_labels,
    train_grid,
    visual_affect_labels,
)


@dataclass
class RewardData:
    """What every reward function of one corpus trains and is evaluated on."""

    corpus: Corpus
    """The loaded corpus (canonical form)."""
    pairs: pd.DataFrame
    """History-utterance pairs of the reward-train and reward-test conversations, with a ``split`` column."""
    features: np.ndarray
    """Cached encoder features, one row per pair."""
    labels: dict[str, np.ndarray]
    """LI labels per pair: ``va`` (Γ of eq. 7, NaN without video) and ``ls`` (VADER)."""
    train: TrainData
    """The reward-train conversations as padded tensors."""

    @property
    def test(self) -> np.ndarray:
        """Row indices of the held-out (reward_test) pairs."""
        return np.flatnonzero(self.pairs["split"].to_numpy() == "reward_test")


def prepare_reward_data(params: StudyParams, corpus: Corpus | None = None, progress: bool = True) -> RewardData:
    """Load (or take) the corpus, split it, build pairs, encode them once and label them."""
    corpus = corpus if corpus is not None else data_mod.load_corpus(params, progress=progress)
    split = data_mod.split_conversations(corpus.conversations, params.splits)
    ids = split[split.isin(["reward_train", "reward_test"])].index
    pairs = data_mod.build_pairs(corpus, params.data, convo_ids=ids)
    pairs["split"] = pairs["convo_id"].map(split).to_numpy()
    r = params.reward
    features = encode_pairs(
        pairs, r.encoder, r.encode_batch_size, device=params.device, progress=progress, max_tokens=r.max_tokens
    )
    labels = {"va": visual_affect_labels(corpus, pairs, r.va_min_words), "ls": sentiment_labels(pairs, r.ls_threshold)}
    train_ids = split[split == "reward_train"].index.tolist()
    train = make_train_data(corpus, pairs, features, train_ids, labels)
    return RewardData(corpus, pairs, features, labels, train)


@dataclass
class MethodSpec:
    """One reward function of a table: a stable id, a display name, a method and its parameter overrides.

    Code, saved folders and ``rl.reward_fns`` name a reward function by its id; only
    tables and figures show its name, which may follow the parameters (GELI's reads
    ``GELI: RRD + VA`` with ``ge_method: rrd`` and ``li_signal: va``).
    """

    id: str
    """Stable identifier (``[a-z][a-z0-9_]*``, e.g. ``rrd_k32``): the saved folder's name; Table 1's are
    :data:`geli_lib.core.params.RewardFunctionId`."""
    name: str
    """Row name in the table, e.g. ``GE: RRD (K=32)``."""
    method: str
    """A method of :data:`geli_lib.core.params.REWARD_METHODS`."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of :class:`geli_lib.core.params.RewardParams` to change for this method."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.id):
            raise ValueError(f"MethodSpec {self.name!r}: id {self.id!r} must match [a-z][a-z0-9_]* (e.g. rrd_k32)")


#: Visual affect alone (LI, eq. 6 on Γ of eq. 7): Table 1's row and the reference of :func:`readings`.
VISUAL_AFFECT = MethodSpec("va", "LI: Visual Affect", "va")
#: r_θ trained on the simulator's planted per-turn truth (simulated corpus only): the ceiling and the gold reward.
ORACLE = MethodSpec("oracle", "Oracle (planted truth)", "oracle")


def table1_specs(params: StudyParams, group: str) -> list[MethodSpec]:
    """The reward functions of GELI Table 1, by notebook group: ``ge``, ``li`` or ``geli``."""
    specs = {
        "ge": [
            MethodSpec("mean", "Mean", "mean"),
            MethodSpec("mode", "Mode", "mode"),
            MethodSpec("ircr", "GE: IRCR", "ircr"),
            MethodSpec("rudder", "GE: RUDDER", "rudder"),
            MethodSpec("rrd_k32", "GE: RRD (K=32)", "rrd", {"K": 32}),
            MethodSpec("rrd_k160", "GE: RRD (K=160)", "rrd", {"K": 160}),
        ],
        "li": [
            VISUAL_AFFECT,
            MethodSpec("ls", "LI: Language Sentiment", "ls"),
            ORACLE,
        ],
        "geli": geli_variants(params),
    }
    return specs[group]


def method_spec(params: StudyParams, method_id: str) -> MethodSpec:
    """Table 1's reward function ``method_id`` (e.g. ``rrd_k32``); an unknown id lists the valid ones."""
    specs = {s.id: s for group in ("ge", "li", "geli") for s in table1_specs(params, group)}
    if method_id not in specs:
        valid = ", ".join(f"{i} ({s.name})" for i, s in specs.items())
        raise ValueError(f"no reward function with id {method_id!r}; Table 1's ids: {valid}")
    return specs[method_id]


#: The reward functions of the unroll figure (GELI Fig. 2) besides every GELI and LLM-GELI one.
UNROLL_IDS = ("rrd_k32", "va", "oracle")


def unroll_methods(params: StudyParams, rows: pd.DataFrame) -> list[str]:
    """Table names of the reward functions 06 unrolls: :data:`UNROLL_IDS` and the GELI and LLM families,
    in the order of ``rows`` (Table 1's rows, which carry the family)."""
    named = {method_spec(params, i).name for i in UNROLL_IDS}
    family_of = rows.groupby("method", sort=False)["family"].first()
    return [m for m, f in family_of.items() if m in named or f in ("GELI", "LLM")]


def geli_variants(params: StudyParams) -> list[MethodSpec]:
    """GELI (eq. 2) as the profile sets it, and the variants that test why it may behave as RRD alone.

    1. joint training, GE part and λ from the parameters (the table's ``GELI: RRD + VA``);
    2. the GE term as an unbiased estimate of eq. 4: Ren et al.'s bias-corrected RRD
       (RRD-L_RD). Plain RRD adds Var_I(Ŝ) to eq. 4 (:func:`geli_lib.reward.losses.rrd_loss`), a
       penalty on within-conversation contrast whatever the labels say;
    3. the exact eq. 4 (every turn of the conversation, no sampling);
    4. the GELI authors' recipe: a VA head first, then GELI (λ = 0.5, RRD) continued from it
       for ``finetune_epochs`` epochs, keeping the epoch with the best validation L_GE.
    """
    r = params.reward
    li = r.li_signal.upper()
    return [
        MethodSpec("geli", f"GELI: {r.ge_method.upper()} + {li}", "geli"),
        MethodSpec(
            "geli_rrd_lrd",
            f"GELI: RRD-L_RD + {li} (bias-corrected)",
            "geli",
            {"ge_method": "rrd", "rrd_bias_correction": True},
        ),
        MethodSpec("geli_exact", f"GELI: exact sum + {li}", "geli", {"ge_method": "sum"}),
        MethodSpec(
            "geli_recipe",
            f"GELI: {li} → RRD + {li} (authors' recipe)",
            "geli",
            {"ge_method": "rrd", "lam": 0.5, "warm_start": r.li_signal, "select_best": True},
        ),
    ]


def slug(name: str) -> str:
    """A folder-safe form of a display name (an RL run's folder)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def reward_function_dir(profile: str, corpus: str, method_id: str, seed: int, adhoc: str = "") -> Path:
    """Where :func:`run_methods` saves the reward function ``method_id`` (:attr:`MethodSpec.id`) of one seed.

    Checkpoints are large artefacts, so they live in the cache, one folder per
    profile, corpus, method and seed; a re-run overwrites them. An ad-hoc run
    (:attr:`StudyParams.adhoc`, e.g. ``lam=0.1_seed=0``) saves under
    ``adhoc/<its key>/`` instead, which :func:`saved_reward_functions` (what 07
    and 08 read) never lists: it cannot replace the study's functions.
    """
    root = f"reward_functions/{profile}/{corpus}" + (f"/{ADHOC_DIR}/{adhoc}" if adhoc else "")
    return cache_dir(root) / method_id / f"seed{seed}"


def saved_reward_functions(profile: str, corpus: str, seed: int | None = None) -> dict[str, Path]:
    """The reward functions :func:`run_methods` saved for a profile and corpus: id -> folder, in name order.

    With ``seed`` only that seed's, else the lowest seed saved for each id.
    Load one with :meth:`geli_lib.reward.reward_model.TrainedReward.load`;
    :func:`by_display_name` keys them by their table names.
    """
    found: dict[str, tuple[str, int, Path]] = {}
    for meta_path in sorted(cache_dir(f"reward_functions/{profile}/{corpus}").glob("*/seed*/reward.json")):
        method_id, meta = meta_path.parent.parent.name, json.loads(meta_path.read_text())
        name, s = meta["info"].get("name"), int(meta["seed"])
        if name is None or method_id not in REWARD_FUNCTION_IDS or (seed is not None and s != seed):
            continue  # not run_methods' (or an older layout's folder)
        if method_id not in found or s < found[method_id][1]:
            found[method_id] = (name, s, meta_path.parent)
    return {i: folder for i, (_, _, folder) in sorted(found.items(), key=lambda kv: kv[1][0])}


def train_missing(
    params: StudyParams, method_ids: list[str], seed: int, data: RewardData | None = None
) -> dict[str, Path]:
    """:func:`saved_reward_functions` at ``seed`` for ``method_ids``, first training (:func:`run_methods`, the
    profile's reward settings) those of Table 1 not saved at that seed, e.g. for an RL verdict at seeds that
    02-04 did not train. They are saved where 02-04 save theirs, whatever ``params.adhoc`` (RL settings do not
    change a reward function). A seed below the profile's lowest is refused: its functions would become the ones
    07 and 08 read (:func:`saved_reward_functions`). LLM-GELI's functions need 05's labels, so one of those not
    saved is refused too. ``data``: the reward data (default: prepared from ``params``, only when something is
    missing)."""
    have = saved_reward_functions(params.profile, params.corpus, seed)
    missing = [i for i in method_ids if i not in have]
    llm = [i for i in missing if i in ("llm_text", "llm_multimodal")]
    if llm:
        raise ValueError(f"{llm} not saved at seed {seed}: LLM-GELI's reward functions are trained by notebook 05")
    if missing and seed < min(params.seeds):
        raise ValueError(
            f"{missing} not saved at seed {seed}; training them below the profile's lowest seed {min(params.seeds)} "
            "would replace the reward functions 07 and 08 read: run 02-04 with that seed instead"
        )
    if missing:
        print(f"training {missing} at seed {seed} (not saved yet; {params.profile}'s reward settings)", flush=True)
        study = dataclasses.replace(params, adhoc="")
        specs = [method_spec(study, i) for i in missing]
        run_methods(data or prepare_reward_data(study, progress=False), specs, [seed], study)
    return {i: f for i, f in saved_reward_functions(params.profile, params.corpus, seed).items() if i in method_ids}


def by_display_name(saved: dict[str, Path]) -> dict[str, Path]:
    """``saved`` (id -> folder, :func:`saved_reward_functions`) keyed by the table names they were saved with."""
    return {json.loads((folder / "reward.json").read_text())["info"]["name"]: folder for folder in saved.values()}


def oracle_of(saved: dict[str, Path]) -> dict[str, Path]:
    """The oracle among ``saved`` by its table name (empty where the corpus has no planted truth)."""
    return by_display_name({k: v for k, v in saved.items() if k == ORACLE.id})


def run_methods(
    data: RewardData,
    specs: list[MethodSpec],
    seeds: list[int],
    params: StudyParams,
    progress: bool = False,
    save: bool = True,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Train every spec × seed on ``data.train``, evaluate on held-out conversations.

    Returns the rows (:data:`REWARD_TABLE_COLUMNS` order) and, per spec name,
    the held-out predictions of its first seed (for unroll figures). Methods a
    corpus cannot support are skipped with a message: the oracle without a
    planted truth, VA / GELI without video. A training that ran before on the same
    inputs is read from the cache (:func:`~geli_lib.reward.reward_model.train_cached`). With ``save`` every
    trained function
    goes to :func:`reward_function_dir` (for PPO and cross-scoring). The trainings run where
    ``params.compute`` says (:func:`~geli_lib.reward.reward_model.train_grid`): in this process, or as tasks
    on a Dask cluster whose results come back here; either way this process writes every file,
    and the rows are the same.
    """
    test = data.test
    test_pairs = data.pairs.iloc[test].reset_index(drop=True)
    has_truth = bool(np.isfinite(data.train.truth[data.train.mask].numpy()).any())
    has_va = bool(np.isfinite(data.labels["va"]).any())
    grid: list[tuple[MethodSpec, RewardParams, int]] = []
    for spec in specs:
        rp = dataclasses.replace(params.reward, **spec.overrides)
        needs_va = spec.method == "va" or (spec.method == "geli" and rp.li_signal == "va")
        if (spec.method == "oracle" and not has_truth) or (needs_va and not has_va):
            print(
                f"{spec.name}: skipped ({params.corpus} has no "
                f"{'planted truth' if spec.method == 'oracle' else 'listener video'})"
            )
            continue
        grid += [(spec, rp, seed) for seed in seeds]
    # Every training first (on a cluster they run at once), then this process saves and evaluates.
    trained_all = train_grid(
        data.train, [(spec.method, rp, seed) for spec, rp, seed in grid], params.compute, params.device, progress
    )
    rows, preds = [], {}
    for (spec, rp, seed), trained in zip(grid, trained_all):
        if save:
            trained.info["name"] = spec.name
            trained.save(reward_function_dir(params.profile, params.corpus, spec.id, seed, params.adhoc))
        # A fine-tuned encoder (gpu profile) must re-encode the texts; a frozen one reads the cache.
        pred = (
            predict_pairs(trained, test_pairs, device=params.device)
            if trained.finetuned
            else predict(trained, data.features[test])
        )
        metrics = evaluate_reward(pred, test_pairs, data.labels["va"][test], data.corpus, trained.T_bar)
        ge = spec.method in ("rrd", "geli") and (spec.method == "rrd" or rp.ge_method == "rrd")
        rows.append(
            reward_table_row(
                spec.name,
                family(spec.method),
                seed,
                params.corpus,
                rp.lam if spec.method == "geli" else None,
                rp.K if ge else None,
                metrics,
            )
        )
        preds.setdefault(spec.name, pred)
    return pd.DataFrame(rows, columns=list(REWARD_TABLE_COLUMNS)), preds


def saved_info(params: StudyParams, method_id: str, seeds: list[int], key: str) -> list[Any]:
    """``info[key]`` of the reward function ``method_id`` that :func:`run_methods` saved, one value per seed."""
    out = []
    for seed in seeds:
        meta = reward_function_dir(params.profile, params.corpus, method_id, seed, params.adhoc) / "reward.json"
        out.append(json.loads(meta.read_text())["info"].get(key))
    return out


def loss_curves(params: StudyParams, specs: list[MethodSpec], seeds: list[int]) -> dict[str, list[list[float]]]:
    """The saved training loss per epoch of each spec (one list per seed), by table name.

    Constant methods (Mean, Mode) record no loss and are left out, as are specs not saved (skipped on this corpus).
    """
    curves = {}
    for spec in specs:
        if not reward_function_dir(params.profile, params.corpus, spec.id, seeds[0], params.adhoc).is_dir():
            continue
        losses = saved_info(params, spec.id, seeds, "loss")
        if all(loss is not None for loss in losses):
            curves[spec.name] = losses
    return curves


def write_rows(
    profile: str,
    part: str,
    rows: pd.DataFrame,
    data: RewardData | None = None,
    preds: dict[str, np.ndarray] | None = None,
) -> None:
    """Write one notebook's rows to ``tables/reward_functions/<part>.csv`` (atomic).

    With ``data`` and ``preds``, also the held-out per-turn predictions
    (``<part>_predictions.csv``, long format) that notebook 06 unrolls.
    """
    folder = results_dir(profile, "tables/reward_functions")
    write_csv(folder / f"{part}.csv", rows)
    if data is not None and preds:
        test = data.pairs.iloc[data.test][["convo_id", "turn_idx", "response", "true_reward"]]
        long = pd.concat([test.assign(method=name, pred=p) for name, p in preds.items()], ignore_index=True)
        write_csv(folder / f"{part}_predictions.csv", long)


def read_predictions(profile: str, parts: list[str]) -> pd.DataFrame:
    """The held-out predictions written by :func:`write_rows` for ``parts``."""
    folder = results_dir(profile, "tables/reward_functions")
    files = [folder / f"{p}_predictions.csv" for p in parts if (folder / f"{p}_predictions.csv").exists()]
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def collect_rows(profile: str, parts: list[str]) -> pd.DataFrame:
    """Concatenate the parts into ``tables/reward_functions.csv`` and return it."""
    folder = results_dir(profile, "tables/reward_functions")
    missing = [p for p in parts if not (folder / f"{p}.csv").exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: no rows from {missing}; run those notebooks first")
    rows = pd.concat([pd.read_csv(folder / f"{p}.csv") for p in parts], ignore_index=True)
    write_csv(results_dir(profile, "tables") / "reward_functions.csv", rows)
    return rows


#: Table 1 columns: results-contract name -> header.
TABLE1_COLUMNS = {
    "l_ge_mse": "L_GE MSE ↓",
    "l_ge_mae": "L_GE MAE ↓",
    "pos_mean": "E[r̂|Γ=1]",
    "nonpos_mean": "E[r̂|Γ=0]",
    "delta_li": "Δr̂_LI ↑",
    "delta_li_within": "Δr̂_LI within ↑",
    "gt_spearman": "ρ truth (pooled) ↑",
    "gt_spearman_within": "ρ truth (within) ↑",
}


def table1(rows: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """GELI Table 1 layout: one row per reward function, mean ± sd over seeds."""
    order = list(dict.fromkeys(rows["method"]))
    g = rows.groupby("method", sort=False)[list(TABLE1_COLUMNS)]
    mean, sd = g.mean().reindex(order), g.std(ddof=1).reindex(order).fillna(0)

    def cell(m: float, s: float) -> str:
        return "–" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"

    out = pd.DataFrame(
        {TABLE1_COLUMNS[c]: [cell(m, s) for m, s in zip(mean[c], sd[c])] for c in TABLE1_COLUMNS}, index=order
    )
    out.insert(0, "family", rows.groupby("method", sort=False)["family"].first().reindex(order))
    out.insert(1, "seeds", rows.groupby("method", sort=False)["seed"].nunique().reindex(order))
    return out


def table1_best(rows: pd.DataFrame, metric: str, lowest: bool = True) -> pd.Series:
    """The method with the best mean ``metric`` over seeds (a row of means, named by the method)."""
    means = rows.groupby("method", sort=False).mean(numeric_only=True).dropna(subset=[metric])
    return means.loc[means[metric].idxmin() if lowest else means[metric].idxmax()]


def sweep(
    data: RewardData, params: StudyParams, field_name: str, values: list[Any], spec: MethodSpec | None = None
) -> pd.DataFrame:
    """Re-train one method (default: GELI) for each value of a RewardParams field, over the seeds.

    Returns the rows with a ``field_name`` column (for :func:`geli_lib.figures.sweep`).
    """
    spec = spec or table1_specs(params, "geli")[0]
    parts = []
    for v in values:
        one = dataclasses.replace(spec, overrides={**spec.overrides, field_name: v})
        rows, _ = run_methods(data, [one], params.seeds, params, save=False)
        parts.append(rows.assign(**{field_name: v}))
    return pd.concat(parts, ignore_index=True)


def resimulated_rows(params: StudyParams, specs: list[MethodSpec], **simulation: Any) -> pd.DataFrame:
    """Train ``specs`` over the seeds on the same simulated conversations re-simulated with other
    listener-signal knobs (``face_noise``, ``face_coupling``, ...).

    The simulator draws words and truth before the listener's signals, so only the
    signals (hence Γ) change; encoder features come from cache.
    """
    if params.corpus != "simulated":
        raise ValueError(f"re-simulating the listener needs the simulated corpus, not {params.corpus!r}")
    p = dataclasses.replace(params, simulation=dataclasses.replace(params.simulation, **simulation))
    data = prepare_reward_data(p, progress=False)
    rows, _ = run_methods(data, specs, params.seeds, p, save=False)
    return rows


def face_noise_sweep(params: StudyParams, noises: list[float]) -> pd.DataFrame:
    """RRD, VA and GELI on the same simulated conversations re-simulated with noisier faces."""
    specs = [MethodSpec("rrd", "GE: RRD", "rrd"), VISUAL_AFFECT, table1_specs(params, "geli")[0]]
    return pd.concat(
        [resimulated_rows(params, specs, face_noise=float(n)).assign(face_noise=float(n)) for n in noises],
        ignore_index=True,
    )


def placebo_rows(params: StudyParams) -> pd.DataFrame:
    """The placebo face: VA and every GELI variant re-trained on the same conversations with the
    listener's face unrelated to the truth (``face_coupling: 0``). Whatever credit an LI-based
    method keeps there cannot come from the listener: it comes from the GE term or the label's
    construction (the window follows the utterance's length; turns of ≤ ``va_min_words`` words
    get Γ = 0)."""
    specs = [VISUAL_AFFECT, *geli_variants(params)]
    rows = resimulated_rows(params, specs, face_coupling=0.0)
    return rows.assign(method=rows["method"] + " [placebo face]")


#: What "both" means in :func:`readings`: an L_GE MSE at most this factor above the best GE-only
#: method's, and a within-conversation Δr̂_LI at least this share of visual affect alone's.
BOTH_L_GE_FACTOR = 1.1
BOTH_DELTA_SHARE = 0.5


def readings(rows: pd.DataFrame, placebo: pd.DataFrame | None = None) -> list[str]:
    """The paper's pattern (GELI Table 1) checked on this run's rows, one sentence per claim, numbers included.

    Means over seeds. The claims: GE-only methods have Δr̂_LI ≈ 0 (here: below 10% of
    visual affect's); visual affect alone has an L_GE well above GELI's (here: ≥ 1.5×);
    which GELI variants get both (:data:`BOTH_L_GE_FACTOR`, :data:`BOTH_DELTA_SHARE`). With
    the truth: the oracle's pooled and within-conversation ρ. With ``placebo`` rows: how much
    of each LI-based method's within-conversation ρ survives a face unrelated to the truth.
    """
    cols = ["l_ge_mse", "delta_li", "delta_li_within", "gt_spearman", "gt_spearman_within"]
    m = rows.groupby("method", sort=False)[cols].mean()
    fam = rows.groupby("method", sort=False)["family"].first()
    out: list[str] = []
    va = m.loc[VISUAL_AFFECT.name] if VISUAL_AFFECT.name in m.index else None
    ge = m[fam.reindex(m.index) == "GE"]
    geli = m[fam.reindex(m.index) == "GELI"]
    if va is not None and len(ge):
        worst = ge["delta_li"].abs().max()
        holds = worst < 0.1 * abs(va["delta_li"])
        out.append(
            f"GE-only Δr̂_LI ≈ 0: **{'holds' if holds else 'does not hold'}**. The largest |Δr̂_LI| of a "
            f"GE-only method is {worst:.3f} ({ge['delta_li'].abs().idxmax()}), against {va['delta_li']:.3f} "
            f"for visual affect alone (within conversations: {ge['delta_li_within'].abs().max():.3f} vs "
            f"{va['delta_li_within']:.3f})."
        )
    if va is not None and len(geli):
        best = geli["l_ge_mse"].idxmin()
        ratio = va["l_ge_mse"] / geli.loc[best, "l_ge_mse"]
        out.append(
            f"Visual affect alone adds up worse than GELI: **{'holds' if ratio >= 1.5 else 'does not hold'}**. "
            f"Its L_GE MSE is {va['l_ge_mse']:.1f}, {ratio:.1f}× the best GELI variant's "
            f"({geli.loc[best, 'l_ge_mse']:.1f}, {best})."
        )
    criteria = both_criteria(rows)
    if criteria is not None and len(geli):
        bar, need = criteria
        both = [n for n, r in geli.iterrows() if r["l_ge_mse"] <= bar and r["delta_li_within"] >= need]
        detail = "; ".join(
            f"{n}: L_GE {r['l_ge_mse']:.1f}, Δ within {r['delta_li_within']:.3f}" for n, r in geli.iterrows()
        )
        out.append(
            f"GELI gets both (L_GE MSE ≤ {bar:.1f}, i.e. within {BOTH_L_GE_FACTOR:.1f}× the best GE-only "
            f"method, and Δr̂_LI within ≥ {need:.3f}, half of visual affect's): "
            f"**{', '.join(both) if both else 'no variant'}**. ({detail}.)"
        )
    oracle = [n for n in m.index if fam.get(n) == "oracle"]
    if oracle and not math.isnan(m.loc[oracle[0], "gt_spearman"]):
        o = m.loc[oracle[0]]
        out.append(
            f"The oracle (trained on the planted truth) recovers it with ρ {o['gt_spearman']:.3f} pooled and "
            f"{o['gt_spearman_within']:.3f} within conversations: the ceiling for credit assignment here."
        )
    if placebo is not None and len(placebo):
        p = placebo.assign(method=placebo["method"].str.replace(" [placebo face]", "", regex=False))
        pm = p.groupby("method", sort=False)["gt_spearman_within"].mean()
        parts = [
            f"{n}: {m.loc[n, 'gt_spearman_within']:.3f} → {v:.3f}"
            + (f" ({v / m.loc[n, 'gt_spearman_within']:.0%} survives)" if m.loc[n, "gt_spearman_within"] > 0 else "")
            for n, v in pm.items()
            if n in m.index
        ]
        ref = (
            f" For reference, {ge['gt_spearman_within'].idxmax()}, which never sees a face, reaches "
            f"{ge['gt_spearman_within'].max():.3f}."
            if len(ge)
            else ""
        )
        out.append(
            "With a placebo face (face_coupling 0, same conversations), the within-conversation ρ with the "
            "truth of each LI-based method: " + "; ".join(parts) + ". A face unrelated to the truth carries "
            "no credit, so what survives comes from the GE term or from how the label is built (the "
            "window follows the utterance; short turns get Γ = 0)." + ref
        )
    return out


def both_criteria(rows: pd.DataFrame) -> tuple[float, float] | None:
    """Table 1's bar for "GELI gets both": (L_GE MSE ceiling, within-conversation Δr̂_LI floor).

    The ceiling is :data:`BOTH_L_GE_FACTOR` × the best GE-only method's L_GE MSE, the floor
    :data:`BOTH_DELTA_SHARE` × visual affect's within-conversation Δr̂_LI (means over seeds);
    None when ``rows`` lack a GE-only method or visual affect.
    """
    m = rows.groupby("method", sort=False)[["l_ge_mse", "delta_li_within"]].mean()
    fam = rows.groupby("method", sort=False)["family"].first()
    ge = m[fam.reindex(m.index) == "GE"]
    if VISUAL_AFFECT.name not in m.index or not len(ge):
        return None
    return BOTH_L_GE_FACTOR * ge["l_ge_mse"].min(), BOTH_DELTA_SHARE * m.loc[VISUAL_AFFECT.name, "delta_li_within"]


def sweep_readings(rows: pd.DataFrame, criteria: tuple[float, float] | None, x: str = "lam") -> list[str]:
    """Per estimator of a λ sweep: the values of ``x`` at which GELI gets both, with the numbers.

    ``criteria`` is Table 1's bar (:func:`both_criteria`), so a sweep and the table judge alike
    (means over seeds); None (no GE-only or visual-affect row) says so instead.
    """
    if criteria is None:
        return ["No GE-only method or visual affect in Table 1, so no bar to judge the sweep by."]
    bar, need = criteria
    out = []
    for name, g in rows.groupby("method", sort=False):
        m = g.groupby(x)[["l_ge_mse", "delta_li_within"]].mean()
        both = [v for v, r in m.iterrows() if r["l_ge_mse"] <= bar and r["delta_li_within"] >= need]
        cells = ", ".join(f"{v:g}: {r['l_ge_mse']:.1f} / {r['delta_li_within']:.3f}" for v, r in m.iterrows())
        out.append(
            f"{name}: both (L_GE MSE ≤ {bar:.1f} and Δr̂_LI within ≥ {need:.3f}) at {x} = "
            f"**{', '.join(f'{v:g}' for v in both) if both else 'none'}**. "
            f"({x}: L_GE MSE / Δ within — {cells}.)"
        )
    return out
