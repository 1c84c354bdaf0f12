# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · Human evaluation: the annotation kit and the papers' tables
#
# The papers' verdict on an adapted agent is a human one (GELI Table 2,
# LLM-GELI Tables 1-3). An annotator reads a dialogue history and the responses
# of every model to it, shown as anonymous chatbots A, B, C … in an order
# shuffled for each item, and for every question ticks **all** responses that
# satisfy it (LLM-GELI Fig. 5, App. A). A model's score on a metric is the
# percentage of items on which it was ticked; the questions asked negatively
# ("did NOT make sense") are reversed, so higher is better in every column.
#
# This notebook (1) builds the blinded kit from `tables/generations.csv`: a form
# to open in any browser, a template for crowdsourcing platforms, and the key
# that un-blinds the answers; (2) when result files exist, un-blinds them and
# computes the table: mean ± sd over seeds, a paired test of each model against
# the base model (two-sided sign-flip permutation test over items, which is
# McNemar's exact test with one annotator per item; `*` p < 0.05, `**` p < 0.01,
# **bold**: significantly better than base), and the inter-annotator agreement
# (Krippendorff's α). Without annotations it shows the protocol and no numbers.

# %% tags=["parameters"]
profile = "smoke"
corpus = "simulated"
data_path = ""
annotations_path = ""  # a result CSV or a folder of them; empty: results/<profile>[/<corpus>]/human_eval/annotations
missing = "error"  # "drop": leave out annotations with unanswered questions (counted)

# %% tags=["hide-input"]
from pathlib import Path

import pandas as pd
from IPython.display import HTML, display

from geli_lib.alignment import generation_eval as ge
from geli_lib.alignment import human_eval as he
from geli_lib.core import load_params, results_dir, timed, write_csv

pd.set_option("display.max_colwidth", None)  # show whole responses and questions
params = load_params(profile, corpus=corpus, data_path=data_path)
results = params.results_key  # results/<profile>[/<corpus>][/adhoc/…]: the tables this run writes
study = params.study_key  # the study's generations, kit and keys (an ad-hoc run, e.g. -p annotations_path, reads them)
gens = ge.read_generations(results_dir(study, "tables") / "generations.csv")
root = results_dir(study, "human_eval")
results_root = results_dir(study).parent

# %% [markdown]
# ## The kit
#
# `kit-<id>/form.html` works opened from disk: enter an annotator id, answer,
# press *Save answers (CSV)*; the browser downloads `answers-<kit>-<annotator>.csv`.
# For a crowdsourcing platform, upload `kit-<id>/items.csv` as the batch input and
# `crowd_template.html` as the task layout; the batch results (MTurk's
# `Input.*` / `Answer.*` columns) are read as they are. The key in `keys/`
# stays with the study. Put result files in `human_eval/annotations/` (or pass
# `annotations_path`).
#
# Progress is kept in the browser's local storage, so a reload resumes where the annotator was. The
# saved CSV is the record, though: opened from disk (`file://`), headless Chromium lost that storage on
# a reload in 6 of 16 tries on a busy machine, where served over http (`python -m http.server` in the
# kit's folder, which holds no key) it kept it in 16 of 16. Save before closing the page.

# %%
with timed(results, "09: annotation kit"):
    items, key = he.build_items(gens, params.eval.human_items, params.eval.human_seed)
    paths = he.write_kit(root, items, key)
for name, path in paths.items():
    print(f"{name:>15}: {he.shown_path(path, results_root)}")
display(he.kit_summary(key))
display(he.protocol())

# %% [markdown]
# What an annotator sees for the first item (the model behind each letter is in the key only):

# %%
example = items.iloc[0]
print(example["history"])
display(example.filter(like="response_").rename(lambda c: c.removeprefix("response_")).to_frame("response"))

# %% [markdown]
# ## Results

# %%
where = Path(annotations_path) if annotations_path else root / "annotations"
files = he.annotation_files(where)
if not files:
    print(
        f"No annotations yet: no result CSV at {he.shown_path(where, results_root)}.\n"
        f"Open {he.shown_path(paths['form'], results_root)} in a browser (or run "
        f"{paths['crowd_template'].name} on a crowdsourcing platform), save the answers there, "
        "and re-run this notebook. No numbers are reported until then."
    )
else:
    ann = he.read_annotations(files)
    selections, report = he.unblind(ann, he.load_keys(root), missing=missing)
    print(f"{len(files)} file(s): {report}")
    for name, sel in selections.groupby("corpus"):
        table, stats = he.human_table(sel, params.eval.base_model, params.eval.human_spread, params.eval.permutations)
        print(
            f"{name}: {sel['item_id'].nunique()} items, {sel['annotator'].nunique()} annotator(s), "
            f"± over {params.eval.human_spread}s"
        )
        display(HTML(he.table_html(table, stats)))
        write_csv(results_dir(results, "tables") / f"human_eval_{name}.csv", stats)
    display(he.agreement(selections))
