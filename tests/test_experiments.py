"""Experiments: trained reward functions are saved per (profile, corpus, name, seed) and found again."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from fixtures import tiny_reward_data

from geli_lib.reward import experiments as ex
from geli_lib.reward import reward_model as rm


@pytest.fixture(scope="module")
def reward_data(tmp_path_factory):
    """RewardData of a tiny simulated corpus with random features (no encoder needed)."""
    return tiny_reward_data(tmp_path_factory.mktemp("cache"), reward={"epochs": 5, "batch_conversations": 3, "K": 4})


def test_run_methods_saves_every_seed_and_lists_by_id(reward_data, tmp_path, monkeypatch):
    params, data = reward_data
    params = dataclasses.replace(params, adhoc="")  # the study's own run (the fixture's overrides make it ad hoc)
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    specs = [ex.MethodSpec("rrd_k32", "GE: RRD (K=4)", "rrd", {"K": 4}), ex.MethodSpec("mean", "Mean", "mean")]
    ex.run_methods(data, specs[1:], [3], dataclasses.replace(params, adhoc="lam=0.1"))
    assert ex.saved_reward_functions(params.profile, params.corpus) == {}  # an ad-hoc run is never the study's
    assert ex.reward_function_dir(params.profile, params.corpus, "mean", 3, "lam=0.1").joinpath("reward.json").is_file()
    rows, _ = ex.run_methods(data, specs, [3, 1], params)
    assert len(rows) == 4 and set(rows["method"]) == {"GE: RRD (K=4)", "Mean"}  # tables show names
    saved = ex.saved_reward_functions(params.profile, params.corpus)
    assert list(saved) == ["rrd_k32", "mean"]  # ids, in name order
    assert saved["mean"] == ex.reward_function_dir(params.profile, params.corpus, "mean", 1)  # lowest seed
    assert saved["mean"].parent.name == "mean"  # the folder is the id, whatever the name says
    assert ex.by_display_name(saved) == {"GE: RRD (K=4)": saved["rrd_k32"], "Mean": saved["mean"]}
    assert ex.saved_reward_functions(params.profile, params.corpus, seed=3)["mean"].name == "seed3"
    assert ex.saved_reward_functions(params.profile, "esconv") == {}
    # the saved function predicts what the trained one did
    loaded = rm.TrainedReward.load(saved["rrd_k32"])
    assert loaded.info["name"] == "GE: RRD (K=4)" and loaded.seed == 1
    again = rm.train_reward_function("rrd", data.train, dataclasses.replace(params.reward, K=4), seed=1)
    np.testing.assert_allclose(
        rm.predict(loaded, data.features[data.test]), rm.predict(again, data.features[data.test]), rtol=1e-5
    )


def test_sweeps_do_not_overwrite_saved_functions(reward_data, tmp_path, monkeypatch):
    params, data = reward_data
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    ex.sweep(data, dataclasses.replace(params, seeds=[0]), "lam", [0.2])
    assert ex.saved_reward_functions(params.profile, params.corpus) == {}


def test_train_missing_trains_only_what_a_seed_lacks_beside_the_studys_functions(reward_data, tmp_path, monkeypatch):
    params, data = reward_data
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    study = dataclasses.replace(params, adhoc="")
    ex.run_methods(data, [ex.method_spec(study, "mean")], [0, 4], study)
    mean4 = ex.reward_function_dir(params.profile, params.corpus, "mean", 4) / "reward.json"
    before = mean4.read_bytes(), mean4.stat().st_mtime_ns
    # an ad-hoc run (other rl settings) still saves where 07, 08 and rl_seeds.py look
    got = ex.train_missing(dataclasses.replace(params, adhoc="rl.lr=0.001"), ["mean", "ls"], 4, data)
    assert got == {i: ex.reward_function_dir(params.profile, params.corpus, i, 4) for i in ("ls", "mean")}
    assert (mean4.read_bytes(), mean4.stat().st_mtime_ns) == before  # saved already: not trained again
    assert json.loads((got["ls"] / "reward.json").read_text())["info"]["name"] == "LI: Language Sentiment"
    assert ex.saved_reward_functions(params.profile, params.corpus)["ls"].name == "seed4"  # the only seed of ls
    assert ex.saved_reward_functions(params.profile, params.corpus)["mean"].name == "seed0"  # lowest stays
    with pytest.raises(ValueError, match="trained by notebook 05"):
        ex.train_missing(params, ["ls", "llm_text"], 4, data)
    with pytest.raises(ValueError, match="below the profile's lowest seed 2 would replace"):
        ex.train_missing(dataclasses.replace(params, seeds=[2, 3]), ["ls", "ircr"], 1, data)
    assert ex.train_missing(dataclasses.replace(params, seeds=[5]), ["ls"], 4, data)["ls"].name == "seed4"  # saved


def _rows(values: dict[str, tuple[str, float, float, float, float, float]]) -> pd.DataFrame:
    """Two seeds per method with the same metrics: name -> (family, L_GE MSE, Δ, Δ within, ρ, ρ within)."""
    rows = []
    for name, (fam, mse, d, dw, rho, rho_w) in values.items():
        for seed in (0, 1):
            rows.append(
                {
                    "method": name,
                    "family": fam,
                    "seed": seed,
                    "l_ge_mse": mse,
                    "delta_li": d,
                    "delta_li_within": dw,
                    "gt_spearman": rho,
                    "gt_spearman_within": rho_w,
                }
            )
    return pd.DataFrame(rows)


def test_readings_state_the_pattern_with_this_runs_numbers():
    rows = _rows(
        {
            "GE: RRD (K=32)": ("GE", 200.0, 0.02, 0.01, 0.2, 0.1),
            "LI: Visual Affect": ("LI", 1000.0, 0.5, 0.4, 0.25, 0.25),
            "GELI: RRD + VA": ("GELI", 210.0, 0.1, 0.1, 0.2, 0.1),  # adds up, too little Δ
            "GELI: recipe": ("GELI", 215.0, 0.3, 0.25, 0.2, 0.2),  # both: ≤ 220 and ≥ 0.2
            "Oracle (planted truth)": ("oracle", 150.0, 0.2, 0.1, 0.4, 0.3),
        }
    )
    text = ex.readings(rows)
    assert "GE-only Δr̂_LI ≈ 0: **holds**" in text[0] and "0.020" in text[0]
    assert "**holds**" in text[1] and "4.8×" in text[1]  # 1000 / 210
    assert "**GELI: recipe**" in text[2] and "L_GE MSE ≤ 220.0" in text[2]
    assert "0.400 pooled" in text[3] and "0.300 within" in text[3]
    placebo = _rows(
        {
            "LI: Visual Affect [placebo face]": ("LI", 1000.0, 0.5, 0.4, 0.2, 0.1),
            "GELI: recipe [placebo face]": ("GELI", 215.0, 0.0, 0.0, 0.2, 0.05),
        }
    )
    placebo_line = ex.readings(rows, placebo)[-1]
    assert "Visual Affect: 0.250 → 0.100 (40% survives); GELI: recipe: 0.200 → 0.050 (25% survives)" in placebo_line
    assert "GE: RRD (K=32), which never sees a face, reaches 0.100" in placebo_line
    assert ex.both_criteria(rows) == pytest.approx((220.0, 0.2))
    assert ex.both_criteria(rows[rows["family"] != "GE"]) is None
    worse = rows.assign(delta_li=np.where(rows["family"] == "GE", 0.3, rows["delta_li"]))
    assert "does not hold" in ex.readings(worse)[0]


def test_table1_best_takes_the_mean_over_seeds():
    rows = pd.concat(
        [
            _rows({"A": ("GE", 100.0, 0.1, 0.0, 0.2, 0.1), "B": ("GE", 120.0, 0.3, 0.2, 0.2, 0.1)}),
            _rows({"A": ("GE", 160.0, 0.1, 0.0, 0.2, 0.1), "B": ("GE", 121.0, 0.3, 0.4, 0.2, 0.1)}),
        ]
    )
    best = ex.table1_best(rows, "l_ge_mse")  # A: (100 + 160) / 2 = 130 > B's 120.5
    assert best.name == "B" and best.l_ge_mse == pytest.approx(120.5)
    assert ex.table1_best(rows, "delta_li_within", lowest=False).delta_li_within == pytest.approx(0.3)


def test_sweep_readings_judge_by_table_1s_bar():
    rows = pd.DataFrame(
        [
            {"method": "GELI", "seed": s, "lam": lam, "l_ge_mse": mse, "delta_li_within": d}
            for s in (0, 1)
            for lam, mse, d in ((0.0, 900.0, 0.4), (0.1, 205.0, 0.3), (0.5, 200.0, 0.05), (1.0, 190.0, 0.0))
        ]
    )
    (line,) = ex.sweep_readings(rows, (209.0, 0.2))
    # both: L_GE ≤ 209 and Δ within ≥ 0.2 -> only λ = 0.1
    assert "at lam = **0.1**" in line and "L_GE MSE ≤ 209.0" in line
    (line,) = ex.sweep_readings(rows, (202.0, 0.04))  # L_GE ≤ 202 and Δ within ≥ 0.04 -> only λ = 0.5
    assert "at lam = **0.5**" in line and "L_GE MSE ≤ 202.0" in line
    (line,) = ex.sweep_readings(rows, (150.0, 0.04))
    assert "at lam = **none**" in line
    assert "no bar" in ex.sweep_readings(rows, None)[0]


def test_every_saved_reward_function_has_a_stable_id_and_the_readme_lists_it():
    """Table 1's and LLM-GELI's ids are exactly the ids rl.reward_fns accepts; a name may change, the id not."""
    from pathlib import Path
    from types import SimpleNamespace

    from geli_lib.core.params import REWARD_FUNCTION_IDS, load_params
    from geli_lib.reward import llm

    params = load_params("smoke")
    specs = [s for g in ("ge", "li", "geli") for s in ex.table1_specs(params, g)]
    llm_specs = [llm.distilled_spec(v, SimpleNamespace(is_llm=True, name="x")) for v in llm.DISTILLED]
    ids = [s.id for s in [*specs, *llm_specs]]
    assert sorted(ids) == sorted(REWARD_FUNCTION_IDS) and len(set(ids)) == len(ids)
    # GELI's name follows li_signal; its id does not (what rl.reward_fns and the saved folder use)
    ls = dataclasses.replace(params, reward=dataclasses.replace(params.reward, li_signal="ls"))
    assert ex.method_spec(params, "geli").name == "GELI: RRD + VA"
    assert ex.method_spec(ls, "geli").name == "GELI: RRD + LS"
    with pytest.raises(ValueError, match=r"no reward function with id 'GELI'; Table 1's ids: mean \(Mean\), "):
        ex.method_spec(params, "GELI")
    with pytest.raises(ValueError, match=r"id 'GE: RRD' must match \[a-z\]\[a-z0-9_\]\*"):
        ex.MethodSpec("GE: RRD", "GE: RRD", "rrd")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for s in [*specs, *llm_specs]:
        assert f"`{s.id}`" in readme, s.id


def test_unroll_shows_a_ge_function_visual_affect_every_geli_and_llm_function_and_the_oracle():
    from geli_lib.core.params import load_params

    params = load_params("smoke")
    fam = {"Mean": "baseline", "GE: IRCR": "GE", "GE: RRD (K=32)": "GE", "GE: RRD (K=160)": "GE"}
    fam |= {"LI: Visual Affect": "LI", "LI: Language Sentiment": "LI", "Oracle (planted truth)": "oracle"}
    fam |= {"GELI: RRD + VA": "GELI", "GELI: exact sum + VA": "GELI", "LLM GELI: Multimodal [rule]": "LLM"}
    rows = pd.DataFrame({"method": list(fam), "family": list(fam.values())})
    assert ex.unroll_methods(params, rows) == [
        "GE: RRD (K=32)",
        "LI: Visual Affect",
        "Oracle (planted truth)",
        "GELI: RRD + VA",
        "GELI: exact sum + VA",
        "LLM GELI: Multimodal [rule]",
    ]


def test_loss_curves_by_name_leave_out_constants_and_unsaved(reward_data, tmp_path, monkeypatch):
    params, data = reward_data
    monkeypatch.setenv("GELI_CACHE", str(tmp_path))
    specs = [ex.MethodSpec("rrd_k32", "GE: RRD (K=4)", "rrd", {"K": 4}), ex.MethodSpec("mean", "Mean", "mean")]
    ex.run_methods(data, specs, [0, 1], params)
    curves = ex.loss_curves(params, [*specs, ex.VISUAL_AFFECT], [0, 1])  # VA: never trained here
    assert list(curves) == ["GE: RRD (K=4)"] and len(curves["GE: RRD (K=4)"]) == 2
    assert len(curves["GE: RRD (K=4)"][0]) == params.reward.epochs


def test_oracle_of_keys_the_saved_oracle_by_its_table_name_and_is_empty_without_one(tmp_path):
    import json

    saved = {}
    for method_id, name in (("oracle", "Oracle (planted truth)"), ("va", "LI: Visual Affect")):
        folder = tmp_path / method_id
        folder.mkdir()
        (folder / "reward.json").write_text(json.dumps({"info": {"name": name}}))
        saved[method_id] = folder
    assert ex.oracle_of(saved) == {"Oracle (planted truth)": tmp_path / "oracle"}
    assert ex.oracle_of({"va": saved["va"]}) == {}
