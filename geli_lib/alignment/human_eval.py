"""Human evaluation of the adapted agents: blinded items, the annotation form, and the papers' tables.

The protocol is the papers' (GELI Sec. 6.2, App. B, Table 2; LLM-GELI Sec. 5,
App. A, Tables 1-3, Fig. 5): an annotator reads a dialogue history and the
responses of every model to it, shown as anonymous chatbots A, B, C … in an
order shuffled per item, and for each question ticks **every** response that
satisfies it (multi-select), then writes why they would reuse a chatbot. A
model's score on a metric is the percentage of items on which it was ticked;
for the negated questions ("did NOT make sense") the percentage is reversed
(100 − ticked), so higher is better everywhere.

Steps:

1. :func:`build_items` samples contexts from ``generations.csv`` and shuffles
   the model order per item with a seeded RNG; the **key** (item, letter →
   model) is kept apart from the items. Both carry a ``kit_id`` (a content key
   of items and key), and so does every saved answer, so answers are never
   un-blinded with the wrong key.
2. :func:`write_kit` writes ``kit-<kit_id>/`` (``items.csv``, ``form.html``,
   ``crowd_template.html``) and ``keys/<kit_id>.csv``. ``form.html`` is
   self-contained: open it from disk, answer, press *Save answers* and the
   browser downloads a CSV (progress is kept in the browser's local storage, which Chromium may lose on a
   reload of a ``file://`` page; served over http it kept it: notebook 09).
   ``crowd_template.html`` is the same form for a crowdsourcing platform: items
   come in as ``items.csv`` rows (``${item_id}``, ``${history}``,
   ``${response_A}`` … placeholders, MTurk's syntax) and the answers go out as
   form fields named after the questions (MTurk's batch results:
   ``Answer.<question>``).
3. :func:`read_annotations` reads either kind of result file,
   :func:`unblind` checks it against the key and turns it into one row per
   (annotation, model, question), :func:`human_table` computes the table
   (mean ± sd over seeds, or over annotators) with significance against the
   base model, :func:`agreement` the inter-annotator agreement.

**Answer cells.** A question's answer is the ticked letters (``"ACF"``; spaces,
commas and semicolons between letters are ignored) or ``none`` when the
annotator ticked the form's *none of them* box. An empty cell is a **missing**
answer, not "none": the form cannot save an item until every question is
answered.

**Significance.** Two-sided paired sign-flip permutation test of each model
against the base model, per metric, over items: the statistic is Σ_i d_i with
d_i = (model's mean satisfied-indicator − base's) over the annotators of item
i. When every non-zero d_i has the same size (one annotator per item) this is
exactly McNemar's exact test (the binomial test of the discordant items,
p = 0.5). The null distribution is computed exactly, by convolution, whenever
the d_i share a denominator up to :data:`MAX_DENOMINATOR` (differences of means
over a few annotators always do); otherwise ``permutations`` seeded
Monte-Carlo flips estimate it (p = (1 + hits) / (1 + flips)). As
in the papers, ``*`` marks p < 0.05 and ``**`` p < 0.01; the rendered table
bolds a cell only when the difference is significant **and** an improvement.

**Agreement.** Krippendorff's α (nominal) of the binary choices per metric,
over the (item, model) units that at least two annotators judged, and the mean
pairwise percent agreement of those units.

**Bad input** (:class:`HumanEvalError`, naming file, row and field): answers
whose kit has no key, unknown item ids, letters an item does not have,
unreadable answer cells, an empty annotator id, the same annotator
answering an item twice with different answers, a result or key file that is
empty or not UTF-8, and a key that is missing columns or shows one model under
two letters of an item (or one letter twice). Exact duplicates (a file read
twice) are dropped and counted. Missing answers raise by default;
``missing="drop"`` drops those annotations and counts them instead.
"""

from __future__ import annotations

import html
import json
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import krippendorff
import numpy as np
import pandas as pd
from scipy.stats import permutation_test

from geli_lib.core.io import content_key, write_csv, write_text

TEMPLATE = Path(__file__).parent / "templates" / "human_eval_form.html"
LETTERS = string.ascii_uppercase
#: The sign-flip test is exact when the item differences lie on a grid 1/L with L up to this.
MAX_DENOMINATOR = 60
#: The answer to a question when the annotator ticked "none of them".
NONE = "none"


@dataclass(frozen=True)
class Question:
    """One multi-select question of the form (LLM-GELI Fig. 5)."""

    key: str
    """Answer column and form field name."""
    metric: str
    """Column header in the papers' tables."""
    text: str
    """The question as the annotator reads it."""
    negated: bool
    """Asked as "NOT …": the table reports 100 − ticked %."""


#: The questions of LLM-GELI Fig. 5, in its order. GELI App. B / LLM-GELI App. A word
#: Inclination negatively ("made you NOT want to talk"), but the form (Fig. 5) asks it
#: positively and the tables' Inclination values (≈ 20%, like Reuse) fit the positive
#: question, so it is not reversed here. "Consistent" is asked in Fig. 5 but not tabulated
#: by the papers; it is reported last.
QUESTIONS: tuple[Question, ...] = (
    Question("fluency", "Fluency", "Which AI responses did NOT sound human?", True),
    Question("sensible", "Sensible", "Mark responses where the AI's response did NOT make sense", True),
    Question("specific", "Specific", "Mark AI responses that were NOT specific to what the User had said", True),
    Question(
        "consistent",
        "Consistent",
        "Mark AI responses that were NOT consistent to what the AI had originally said",
        True,
    ),
    Question("connection", "Connection", "Which AI responses emotionally connected with the User?", False),
    Question(
        "social",
        "Social",
        "Which AI responses made you feel the AI chatbot understood social contexts and situations?",
        False,
    ),
    Question("interesting", "Interestingness", "Mark the AI responses that were particularly interesting", False),
    Question("inclination", "Inclination", "Which AI responses make you want to talk to the AI chatbot?", False),
    Question("positivity", "Positivity", "Which AI responses most likely made User feel positive feelings?", False),
    Question("reuse", "Reuse", "Which AI chatbot would you want to talk to again?", False),
)
#: The free-text question closing the form (Fig. 5).
REASON = (
    "reason",
    "In three sentences, write why you would reuse this chatbot over others. Name your choices, e.g. Chatbot A and C.",
)
#: Column order of LLM-GELI Tables 1-2 (then the untabulated Consistent).
TABLE_ORDER = (
    "Connection",
    "Positivity",
    "Social",
    "Inclination",
    "Interestingness",
    "Reuse",
    "Specific",
    "Sensible",
    "Fluency",
    "Consistent",
)
#: The annotators' instructions (LLM-GELI App. F, Fig. 5), without the MTurk-specific policing lines.
INSTRUCTIONS = (
    "The following is a part of a transcript from an open conversation between a User and multiple AI chatbots.",
    "Read the full dialogue history between the User and AI thus far. Then spend a couple of minutes to "
    "examine the chatbot responses to the dialogue.",
    "Then rate the AI responses for different characteristics. Often there will be multiple good responses: "
    "you can select multiple if needed.",
    "Note that the dialogue history may contain some typos. Please try to the best of your ability to "
    "interpret the dialogue.",
    "Do not judge a response by its length alone, but by what you would expect in an actual conversation: "
    "its quality (natural, human-like, flow).",
    'If all answers are good, select every chatbot; if all are bad, tick "none of them".',
)
KEY_COLUMNS = ("kit_id", "item_id", "corpus", "seed", "context_id", "letter", "model")


class HumanEvalError(ValueError):
    """Annotation files, key or items do not fit together; the message names file, row and field."""


def question_keys() -> list[str]:
    return [q.key for q in QUESTIONS]


# --------------------------------------------------------------------------- items and key


def build_items(gens: pd.DataFrame, n_items: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Blinded annotation items and their key from generations
    (:data:`geli_lib.alignment.generation_eval.GENERATION_COLUMNS`).

    Per (corpus, seed) of the generations, up to ``n_items`` contexts that have a
    response from every model of that group; the same context ids are preferred
    across seeds (one seeded sample of the contexts). Each item shows the models
    in a fresh random order (letters A, B, …); item order is shuffled too.
    Returns ``(items, key)``: items = ``kit_id, item_id, history, response_A, …``;
    key = :data:`KEY_COLUMNS`.
    """
    rng = np.random.default_rng(seed)
    groups = []
    for (corpus, s), g in gens.groupby(["corpus", "seed"], sort=True):
        models = list(dict.fromkeys(g["model"]))
        if len(models) > len(LETTERS):
            raise HumanEvalError(f"{corpus}, seed {s}: {len(models)} models; the form shows at most {len(LETTERS)}")
        counts = g.groupby("context_id")["model"].nunique()
        complete = sorted(counts.index[counts == len(models)])
        if len(complete) < len(counts):
            print(f"{corpus}, seed {s}: {len(counts) - len(complete)} context(s) lack a model's response; left out")
        groups.append((corpus, int(s), g, models, complete))
    contexts = sorted({c for *_, complete in groups for c in complete})
    rank = {c: i for i, c in enumerate(rng.permutation(np.array(contexts, dtype=object)).tolist())}
    rows, key = [], []
    for corpus, s, g, models, complete in groups:
        by_ctx = g.set_index(["context_id", "model"])
        for ctx in sorted(complete, key=rank.__getitem__)[:n_items]:
            order = rng.permutation(len(models))
            first = by_ctx.loc[(ctx, models[0])]
            item = {"history": str(first["history"])}
            for letter, m in zip(LETTERS, order):
                item[f"response_{letter}"] = str(by_ctx.loc[(ctx, models[m]), "response"])
                key.append(
                    {
                        "corpus": corpus,
                        "seed": s,
                        "context_id": ctx,
                        "letter": letter,
                        "model": models[m],
                        "_n": len(rows),
                    }
                )
            rows.append(item)
    if not rows:
        raise HumanEvalError("no context has a response from every model: nothing to annotate")
    perm = rng.permutation(len(rows))
    ids = {int(old): f"item-{new + 1:04d}" for new, old in enumerate(perm)}
    items = pd.DataFrame(rows).assign(item_id=[ids[i] for i in range(len(rows))])
    items = items.sort_values("item_id").reset_index(drop=True)
    key_df = pd.DataFrame(key)
    key_df["item_id"] = key_df.pop("_n").map(ids)
    kit = content_key(items.to_dict("list"), key_df.to_dict("list"), length=12)
    items.insert(0, "kit_id", kit)
    key_df.insert(0, "kit_id", kit)
    cols = ["kit_id", "item_id", "history"] + sorted(c for c in items if c.startswith("response_"))
    return items[cols], key_df[list(KEY_COLUMNS)].sort_values(["item_id", "letter"]).reset_index(drop=True)


def item_letters(items: pd.DataFrame) -> dict[str, list[str]]:
    """item_id -> the letters it shows (its non-empty response columns)."""
    resp = [c for c in items if c.startswith("response_")]
    return {
        r["item_id"]: [c.removeprefix("response_") for c in resp if isinstance(r[c], str) and r[c] != ""]
        for r in items.to_dict("records")
    }


# --------------------------------------------------------------------------- the form


def _form_config(kit_id: str, letters: Sequence[str], mode: str, items: list[dict] | None) -> str:
    cfg = {
        "mode": mode,
        "kit_id": kit_id,
        "letters": list(letters),
        "none": NONE,
        "questions": [{"key": q.key, "text": q.text} for q in QUESTIONS],
        "reason": {"key": REASON[0], "text": REASON[1]},
        "items": items or [],
    }
    # JSON inside <script>: "</" must not close the element early.
    return json.dumps(cfg, ensure_ascii=False).replace("</", "<\\/")


def _fill(mode: str, config: str, crowd_fields: str = "", form_open: str = "", form_close: str = "") -> str:
    page = TEMPLATE.read_text(encoding="utf-8")
    instructions = "\n".join(f"<li>{html.escape(t)}</li>" for t in INSTRUCTIONS)
    for marker, value in (
        ("__INSTRUCTIONS__", instructions),
        ("__CROWD_FIELDS__", crowd_fields),
        ("__FORM_OPEN__", form_open),
        ("__FORM_CLOSE__", form_close),
        ("__MODE__", mode),
        ("__CONFIG__", config),
    ):
        page = page.replace(marker, value)
    return page


def render_form(items: pd.DataFrame) -> str:
    """The self-contained local form: every item embedded, answers saved as a CSV download."""
    letters = sorted({x for ls in item_letters(items).values() for x in ls})
    records = [
        {"item_id": r["item_id"], "history": r["history"], "responses": {x: r[f"response_{x}"] for x in ls}}
        for r, ls in zip(items.to_dict("records"), item_letters(items).values())
    ]
    return _fill("local", _form_config(str(items["kit_id"].iloc[0]), letters, "local", records))


def render_crowd_template(items: pd.DataFrame, submit_url: str = "https://www.mturk.com/mturk/externalSubmit") -> str:
    """The form as a crowdsourcing HIT: one item per task from ``items.csv`` placeholders (``${history}`` …).

    Answers are posted as form fields named after the questions (plus ``reason``,
    ``item_id``, ``kit_id``); MTurk's batch results call them ``Answer.<name>``.
    ``assignmentId`` is copied from the page URL, as MTurk's HTMLQuestion expects.
    """
    letters = sorted({x for ls in item_letters(items).values() for x in ls})
    fields = [
        '<div id="crowd-item" hidden>',
        '<div data-field="item_id">${item_id}</div>',
        '<div data-field="history">${history}</div>',
    ]
    fields += [f'<div data-field="response_{x}">${{response_{x}}}</div>' for x in letters]
    fields.append("</div>")
    hidden = [
        '<input type="hidden" name="assignmentId" id="assignmentId" value="">',
        '<input type="hidden" name="item_id" id="field-item_id" value="">',
        f'<input type="hidden" name="kit_id" value="{html.escape(str(items["kit_id"].iloc[0]))}">',
    ]
    hidden += [f'<input type="hidden" name="{q.key}" id="field-{q.key}" value="">' for q in QUESTIONS]
    form_open = f'<form id="crowd-form" name="mturk_form" method="post" action="{html.escape(submit_url)}">' + "".join(
        hidden
    )
    return _fill(
        "crowd",
        _form_config(str(items["kit_id"].iloc[0]), letters, "crowd", None),
        "\n".join(fields),
        form_open,
        "</form>",
    )


def write_kit(root: str | Path, items: pd.DataFrame, key: pd.DataFrame) -> dict[str, Path]:
    """Write ``<root>/kit-<kit_id>/`` (items.csv, form.html, crowd_template.html) and ``<root>/keys/<kit_id>.csv``.

    The kit folder is what annotators get; the key stays with the study. Returns the paths.
    """
    root = Path(root)
    kit_id = str(items["kit_id"].iloc[0])
    if set(key["kit_id"]) != {kit_id}:
        raise HumanEvalError(f"key is for kit(s) {sorted(set(key['kit_id']))}, items for {kit_id!r}")
    folder = root / f"kit-{kit_id}"
    paths = {
        "items": folder / "items.csv",
        "form": folder / "form.html",
        "crowd_template": folder / "crowd_template.html",
        "key": root / "keys" / f"{kit_id}.csv",
    }
    write_csv(paths["items"], items)
    write_text(paths["form"], render_form(items))
    write_text(paths["crowd_template"], render_crowd_template(items))
    write_csv(paths["key"], key)
    return paths


def _read_csv_text(path: Path, need: Sequence[str]) -> pd.DataFrame:
    """A CSV of text cells; an empty or non-UTF-8 file is a :class:`HumanEvalError` naming it."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise HumanEvalError(
            f"{path}: line {line}, byte {e.start}: not UTF-8 text "
            f"({raw[e.start : e.start + 1]!r}); save the file as UTF-8"
        ) from None
    if not raw.strip():
        raise HumanEvalError(f"{path}: empty file ({len(raw)} bytes): expected a header row with {list(need)}")
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def check_key(key: pd.DataFrame, where: str) -> None:
    """A key shows each item's models under distinct letters, one model per letter.

    Two letters of one model would credit that model twice and leave another one
    out of the table; rows are named as a spreadsheet shows them (header = row 1).
    """
    missing = [c for c in KEY_COLUMNS if c not in key]
    if missing:
        raise HumanEvalError(f"{where}: missing column(s) {missing}; a key has {list(KEY_COLUMNS)}")
    for field, other in (("model", "letter"), ("letter", "model")):
        dup = key.duplicated(["kit_id", "item_id", field], keep="first")
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            r = key.iloc[i]
            first = key[
                (key["kit_id"] == r["kit_id"]) & (key["item_id"] == r["item_id"]) & (key[field] == r[field])
            ].index[0]
            raise HumanEvalError(
                f"{where}: row {i + 2}, field {field!r}: item {r['item_id']} shows {field} "
                f"{r[field]!r} under two {other}s ({key.loc[first, other]!r} in row {first + 2} "
                f"and {r[other]!r}); each letter must show a different model"
            )


def load_keys(root: str | Path) -> pd.DataFrame:
    """Every key written by :func:`write_kit` under ``root`` (empty frame when none), checked
    by :func:`check_key`."""
    files = sorted((Path(root) / "keys").glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=list(KEY_COLUMNS))
    keys = []
    for f in files:
        key = _read_csv_text(f, KEY_COLUMNS)
        check_key(key, str(f))
        keys.append(key)
    key = pd.concat(keys, ignore_index=True)
    key["seed"] = pd.to_numeric(key["seed"])
    return key


# --------------------------------------------------------------------------- reading answers


def shown_path(path: str | Path, results_root: str | Path) -> str:
    """``path`` as ``<results>/…`` when under ``results_root`` (the book shows no machine's folders)."""
    path, root = Path(path).resolve(), Path(results_root).resolve()
    return f"<results>/{path.relative_to(root)}" if path.is_relative_to(root) else str(path)


def annotation_files(path: str | Path) -> list[Path]:
    """The result CSVs at ``path``: the file itself, or a folder's ``*.csv`` (sorted); [] when absent."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(path.glob("*.csv")) if path.is_dir() else []


def read_annotations(files: Iterable[str | Path]) -> pd.DataFrame:
    """Result files of the local form or of a crowdsourcing batch, in one frame.

    Crowdsourcing columns are normalised: ``Input.x`` / ``Answer.x`` → ``x``,
    ``WorkerId`` → ``annotator``. Adds ``source`` (file) and ``row`` (1-based
    data row, as a spreadsheet shows it after the header). Every file must have
    ``kit_id``, ``item_id``, ``annotator`` and one column per question.
    """
    frames = []
    need = ["kit_id", "item_id", "annotator"] + question_keys()
    for f in map(Path, files):
        df = _read_csv_text(f, need)
        ren = {c: c.split(".", 1)[1] for c in df if c.startswith(("Input.", "Answer."))}
        if "WorkerId" in df and "annotator" not in df:
            ren["WorkerId"] = "annotator"
        df = df.rename(columns=ren)
        df = df.loc[:, ~df.columns.duplicated()]
        missing = [c for c in need if c not in df]
        if missing:
            raise HumanEvalError(f"{f}: missing column(s) {missing}; a result file needs {need}")
        df = df.assign(source=str(f), row=np.arange(2, len(df) + 2))
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["kit_id", "item_id", "annotator", *question_keys(), "source", "row"])
    return pd.concat(frames, ignore_index=True)


def parse_answer(cell: str, letters: Sequence[str], where: str) -> set[str] | None:
    """Ticked letters of one answer cell; ``set()`` for ``none``; None for an empty (missing) cell."""
    text = str(cell).strip()
    if text == "":
        return None
    if text.lower() == NONE:
        return set()
    picked = re.sub(r"[\s,;]+", "", text).upper()
    bad = [c for c in picked if c not in letters]
    if bad or not picked:
        raise HumanEvalError(f"{where}: {cell!r} is not an answer: expected letters of {''.join(letters)} or {NONE!r}")
    return set(picked)


def unblind(ann: pd.DataFrame, keys: pd.DataFrame, missing: str = "error") -> tuple[pd.DataFrame, dict[str, int]]:
    """Check annotations against the key and un-blind them.

    Returns ``(selections, report)``: one row per (annotation, model, question) with
    ``corpus, seed, context_id, item_id, annotator, model, metric, negated,
    selected`` (ticked, 0/1) and ``satisfied`` (``selected``, reversed for negated
    questions); ``report`` counts annotations used, and dropped as exact
    duplicates or (``missing="drop"``) for missing answers.
    """
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', not {missing!r}")
    known = set(keys["kit_id"].astype(str))
    for (src, kit), g in ann.groupby(["source", "kit_id"], sort=False):
        if kit not in known:
            raise HumanEvalError(
                f"{src}: row {int(g['row'].iloc[0])}: kit_id {kit!r} has no key "
                f"(keys for: {sorted(known) or 'none'}); answers cannot be un-blinded "
                "with another kit's key"
            )
    letters = {(k, i): sorted(g["letter"]) for (k, i), g in keys.groupby(["kit_id", "item_id"])}
    shown = {
        (r["kit_id"], r["item_id"], r["letter"]): (r["corpus"], int(r["seed"]), r["context_id"], r["model"])
        for r in keys.to_dict("records")
    }
    report = {"annotations": 0, "dropped_duplicates": 0, "dropped_missing": 0}
    seen: dict[tuple[str, str, str], tuple[tuple, str]] = {}
    out = []
    for r in ann.to_dict("records"):
        where = f"{r['source']}: row {r['row']}"
        if not str(r["annotator"]).strip():
            raise HumanEvalError(f"{where}: empty annotator id")
        ls = letters.get((r["kit_id"], r["item_id"]))
        if ls is None:
            raise HumanEvalError(f"{where}: unknown item_id {r['item_id']!r} for kit {r['kit_id']!r}")
        answers = {q.key: parse_answer(r[q.key], ls, f"{where}, {q.key}") for q in QUESTIONS}
        gaps = [k for k, v in answers.items() if v is None]
        if gaps:
            if missing == "error":
                raise HumanEvalError(
                    f"{where}: missing answer(s) to {gaps} (item {r['item_id']}, annotator "
                    f"{r['annotator']}); pass missing='drop' to leave such annotations out"
                )
            report["dropped_missing"] += 1
            continue
        ident = (r["kit_id"], r["item_id"], str(r["annotator"]).strip())
        sig = tuple(sorted((k, "".join(sorted(v))) for k, v in answers.items()))
        if ident in seen:
            if seen[ident][0] != sig:
                raise HumanEvalError(
                    f"{where}: annotator {ident[2]!r} answered item {ident[1]} again with "
                    f"different answers (first at {seen[ident][1]}); keep one of them"
                )
            report["dropped_duplicates"] += 1
            continue
        seen[ident] = (sig, where)
        report["annotations"] += 1
        for letter in ls:
            corpus, seed, context, model = shown[(r["kit_id"], r["item_id"], letter)]
            for q in QUESTIONS:
                sel = int(letter in answers[q.key])
                out.append(
                    (
                        corpus,
                        seed,
                        context,
                        r["kit_id"],
                        r["item_id"],
                        ident[2],
                        model,
                        q.metric,
                        q.negated,
                        sel,
                        1 - sel if q.negated else sel,
                    )
                )
    cols = [
        "corpus",
        "seed",
        "context_id",
        "kit_id",
        "item_id",
        "annotator",
        "model",
        "metric",
        "negated",
        "selected",
        "satisfied",
    ]
    return pd.DataFrame(out, columns=cols), report


# --------------------------------------------------------------------------- statistics


def sign_flip_test(d: Sequence[float], permutations: int = 20000, seed: int = 0) -> float:
    """Two-sided paired sign-flip test of mean(d) = 0: P(|Σ ±|d_i|| ≥ |Σ d_i|) under random signs.

    Exact whenever the d_i lie on a grid 1/L (L ≤ :data:`MAX_DENOMINATOR`; always so for
    differences of means over at most a few annotators): the null distribution of the
    sum is built by convolution on that grid. With one annotator per item this is
    McNemar's exact (binomial) test, and exact where scipy's ``permutation_test`` would
    have to enumerate 2^n sign patterns. Otherwise scipy's ``permutation_test`` with
    ``permutations`` seeded random sign flips.
    """
    d = np.asarray(d, dtype=float)
    mag = np.abs(d[np.abs(d) > 1e-12])
    if len(mag) == 0:
        return 1.0
    for L in range(1, MAX_DENOMINATOR + 1):
        scaled = mag * L
        if np.allclose(scaled, np.round(scaled), atol=1e-6):
            a = np.round(scaled).astype(int)
            obs = abs(int(round(float(d[np.abs(d) > 1e-12].sum()) * L)))
            dist = np.ones(1)
            for ai in a:  # distribution of T = the sum of the magnitudes flipped to +; Σ = 2T − A
                nxt = np.zeros(len(dist) + ai)
                nxt[: len(dist)] += dist / 2
                nxt[ai:] += dist / 2
                dist = nxt
            total = int(a.sum())
            extreme = np.abs(2 * np.arange(total + 1) - total) >= obs
            return float(min(1.0, dist[extreme].sum()))
    res = permutation_test(
        (d,),
        lambda x, axis: x.sum(axis=axis),
        permutation_type="samples",  # one sample: each difference keeps or flips its sign
        vectorized=True,
        n_resamples=permutations,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def mean_sd_cell(mean: float, sd: float, groups: int, digits: int = 2) -> str:
    """``mean ± sd`` over groups (seeds, annotators); the mean alone from one group, where an sd of 0 would claim
    an agreement never measured; ``–`` for no value."""
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" if groups < 2 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def stars(p: float) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05 (the papers' marks)."""
    return "" if not np.isfinite(p) else "**" if p < 0.01 else "*" if p < 0.05 else ""


def percentages(selections: pd.DataFrame, spread: str = "seed") -> pd.DataFrame:
    """Percent of annotations in which each model satisfied each metric, per ``spread`` group (seed or annotator)."""
    col = {"seed": "seed", "annotator": "annotator"}[spread]
    g = selections.groupby(["corpus", col, "model", "metric"], sort=False)["satisfied"]
    return (g.mean() * 100).rename("percent").reset_index().rename(columns={col: "group"})


def significance(selections: pd.DataFrame, base: str, permutations: int = 20000, seed: int = 0) -> pd.DataFrame:
    """Paired test of every model against ``base`` per (corpus, metric), over items (see the module docstring)."""
    per_item = selections.groupby(["corpus", "kit_id", "item_id", "metric", "model"])["satisfied"].mean()
    wide = per_item.unstack("model")
    if base not in wide:
        raise HumanEvalError(f"base model {base!r} is not among the annotated models {sorted(wide.columns)}")
    rows = []
    for (corpus, metric), g in wide.groupby(level=["corpus", "metric"], sort=False):
        for model in g.columns:
            if model == base:
                continue
            d = (g[model] - g[base]).dropna().to_numpy()
            rows.append(
                {
                    "corpus": corpus,
                    "metric": metric,
                    "model": model,
                    "n_items": len(d),
                    "diff": 100 * float(d.mean()) if len(d) else math.nan,
                    "p": sign_flip_test(d, permutations, seed),
                }
            )
    return pd.DataFrame(rows, columns=["corpus", "metric", "model", "n_items", "diff", "p"])


def human_table(
    selections: pd.DataFrame, base: str = "base", spread: str = "seed", permutations: int = 20000, digits: int = 2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The papers' table for ONE corpus: models × metrics, ``mean ± sd`` (+ ``*``/``**`` vs ``base``).

    The mean and sd run over the per-``spread`` percentages (sd ddof 0, a
    population sd like the papers' "± over 3 seeds"; the mean alone from one group). Rows:
    ``ground truth`` first, then ``base``, then the others in order of
    appearance. Returns ``(table, stats)``; ``stats`` is long (model, metric,
    mean, sd, groups, diff, p).
    """
    corpora = selections["corpus"].unique()
    if len(corpora) != 1:
        raise HumanEvalError(f"human_table takes one corpus at a time, got {sorted(corpora)}")
    pct = percentages(selections, spread)
    stats = (
        pct.groupby(["model", "metric"], sort=False)["percent"]
        .agg(mean="mean", sd=lambda s: float(np.std(s, ddof=0)), groups="count")
        .reset_index()
    )
    sig = significance(selections, base, permutations)
    stats = stats.merge(sig[["model", "metric", "diff", "p"]], on=["model", "metric"], how="left")
    order = [m for m in ("ground truth", base) if m in set(stats["model"])]
    order += [m for m in dict.fromkeys(selections["model"]) if m not in order]
    cell = stats.apply(lambda r: mean_sd_cell(r["mean"], r["sd"], r["groups"], digits) + stars(r["p"]), axis=1)
    table = stats.assign(cell=cell).pivot(index="model", columns="metric", values="cell")
    table = table.reindex(index=order, columns=[m for m in TABLE_ORDER if m in table.columns])
    table.columns.name, table.index.name = None, None
    return table, stats


def table_html(table: pd.DataFrame, stats: pd.DataFrame) -> str:
    """HTML of :func:`human_table`: bold where significantly better than base (p < 0.05, diff > 0)."""
    better = {
        (r["model"], r["metric"])
        for r in stats.to_dict("records")
        if np.isfinite(r["p"]) and r["p"] < 0.05 and r["diff"] > 0
    }
    head = "".join(f"<th>{html.escape(c)} (%) ↑</th>" for c in table.columns)
    body = []
    for model, row in table.iterrows():
        cells = "".join(
            f"<td>{'<b>' if (model, c) in better else ''}{html.escape(str(v))}"
            f"{'</b>' if (model, c) in better else ''}</td>"
            for c, v in row.items()
        )
        body.append(f"<tr><th>{html.escape(str(model))}</th>{cells}</tr>")
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def krippendorff_alpha_binary(ones: Sequence[int], counts: Sequence[int]) -> float:
    """Krippendorff's α (nominal) of 0/1 values, unit u holding ``counts[u]`` values of which ``ones[u]`` are 1.

    Units with < 2 values are not pairable and left out. Computed by the ``krippendorff`` package;
    for 0/1 values it is α = 1 − (n − 1)·o₀₁ / (n₀·n₁), with o₀₁ = Σ_u n₀ᵤ·n₁ᵤ / (mᵤ − 1) over
    pairable units and n, n₀, n₁ their value counts (the test checks it by hand); NaN when only
    one value occurs.
    """
    k, m = np.asarray(ones, float), np.asarray(counts, float)
    k, m = k[m >= 2], m[m >= 2]
    if k.sum() == 0 or (m - k).sum() == 0:  # one value only: the expected disagreement is 0
        return math.nan
    return float(krippendorff.alpha(value_counts=np.stack([m - k, k], axis=1), level_of_measurement="nominal"))


def percent_agreement(ones: Sequence[int], counts: Sequence[int]) -> float:
    """Mean over units with ≥ 2 values of the share of agreeing annotator pairs."""
    k, m = np.asarray(ones, float), np.asarray(counts, float)
    k, m = k[m >= 2], m[m >= 2]
    if not len(m):
        return math.nan
    return float(((k * (k - 1) + (m - k) * (m - k - 1)) / (m * (m - 1))).mean())


def agreement(selections: pd.DataFrame) -> pd.DataFrame:
    """Inter-annotator agreement per metric over (item, model) units: Krippendorff's α and % agreement."""
    units = selections.groupby(["metric", "kit_id", "item_id", "model"])["selected"].agg(["sum", "count"])
    rows = []
    for metric, u in units.groupby(level="metric", sort=False):
        rows.append(
            {
                "metric": metric,
                "units": int((u["count"] >= 2).sum()),
                "krippendorff_alpha": krippendorff_alpha_binary(u["sum"], u["count"]),
                "percent_agreement": percent_agreement(u["sum"], u["count"]),
            }
        )
    out = pd.DataFrame(rows, columns=["metric", "units", "krippendorff_alpha", "percent_agreement"])
    return out.set_index("metric").reindex([m for m in TABLE_ORDER if m in set(out["metric"])])


def protocol() -> pd.DataFrame:
    """The questions of the kit, their table column, and how each is reported."""
    return pd.DataFrame(
        [
            {
                "question": x.key,
                "table column": x.metric,
                "asked": x.text,
                "reported": "100 − ticked %" if x.negated else "ticked %",
            }
            for x in QUESTIONS
        ]
    )


def kit_summary(key: pd.DataFrame) -> pd.DataFrame:
    """Items and models of a kit per corpus and seed."""
    g = key.groupby(["corpus", "seed"])
    return pd.DataFrame(
        {"items": g["item_id"].nunique(), "models": g["model"].agg(lambda m: ", ".join(dict.fromkeys(m)))}
    ).reset_index()
