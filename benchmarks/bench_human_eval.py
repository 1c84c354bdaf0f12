"""Benchmark: the generations evaluation at the papers' scale.

LLM-GELI's human study: 300 items per corpus (100 contexts × 3 seeds), 8 models
(A-H), 3 annotators per item. This script builds such a kit from synthetic
generations, simulates the annotators' answers (each model has its own tick
rate per question), and times each step: building and writing the kit, reading
and un-blinding the answers, the table with its 8 × 10 paired tests
(Monte-Carlo sign flips with several annotators per item), and the agreement.
It also times the text metrics of :func:`geli_lib.alignment.generation_eval.auto_eval`
(no reward functions) on the same 2,400 responses. Targets: every step well
under 10 s on 2 CPU cores, so notebooks 08/09 stay cheap next to PPO.

Run: ``python benchmarks/bench_human_eval.py [--contexts 100] [--annotators 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from geli_lib.alignment import generation_eval as ge
from geli_lib.alignment import human_eval as he
from geli_lib.core.params import DataParams, EvalParams

WORDS = "so i think the weather was really nice today and we went hiking up the hill with my dog".split()


def synthetic_generations(contexts: int, models: int, seeds: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for s in range(seeds):
        for c in range(contexts):
            history = "\n".join(
                f"{'User' if k % 2 == 0 else 'AI'}: " + " ".join(rng.choice(WORDS, 12)) for k in range(6)
            )
            for m in range(models):
                rows.append(
                    {
                        "corpus": "simulated",
                        "seed": s,
                        "context_id": f"c{c}:7",
                        "convo_id": f"c{c}",
                        "turn_idx": 7,
                        "history": history,
                        "model": "base" if m == 0 else f"model {m}",
                        "response": " ".join(rng.choice(WORDS, int(rng.integers(5, 30)))),
                    }
                )
    return pd.DataFrame(rows)


def simulated_answers(key: pd.DataFrame, annotators: int, rng: np.random.Generator) -> pd.DataFrame:
    models = sorted(key["model"].unique())
    rate = {(m, q.key): rng.uniform(0.05, 0.5) for m in models for q in he.QUESTIONS}
    rows = []
    for item, g in key.groupby("item_id"):
        for a in range(annotators):
            r = {"kit_id": g["kit_id"].iloc[0], "annotator": f"w{a}", "item_id": item, "reason": "-"}
            for q in he.QUESTIONS:
                picked = "".join(sorted(x for x, m in zip(g["letter"], g["model"]) if rng.random() < rate[(m, q.key)]))
                r[q.key] = picked or he.NONE
            rows.append(r)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, default=100)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--annotators", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    gens = synthetic_generations(args.contexts, args.models, args.seeds, rng)
    timings = {}

    def step(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        print(f"{name:<40} {timings[name]:7.2f} s", flush=True)
        return out

    step(f"auto_eval text metrics ({len(gens)} responses)", lambda: ge.auto_eval(gens, EvalParams(), DataParams()))
    items, key = step("build_items", lambda: he.build_items(gens, args.contexts))
    with tempfile.TemporaryDirectory() as tmp:
        paths = step("write_kit (csv, form, crowd template)", lambda: he.write_kit(tmp, items, key))
        print(f"  form.html: {paths['form'].stat().st_size / 1e6:.2f} MB for {len(items)} items")
        answers = simulated_answers(key, args.annotators, rng)
        answers.to_csv(Path(tmp) / "answers.csv", index=False)
        ann = step("read_annotations", lambda: he.read_annotations([Path(tmp) / "answers.csv"]))
        sel, report = step(f"unblind ({len(ann)} annotations)", lambda: he.unblind(ann, key))
    table, _ = step("human_table (incl. significance)", lambda: he.human_table(sel))
    step("agreement", lambda: he.agreement(sel))
    print(table.iloc[:3, :4].to_string())


if __name__ == "__main__":
    main()
