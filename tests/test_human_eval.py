"""Human-evaluation kit: blinding, hand-computed tables and tests, bad input, the form in Chromium, notebooks 08/09."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from geli_lib.alignment import human_eval as he
from geli_lib.core import browser

MODELS = ("base", "M", "ground truth")
KIT = "kit1"


def hand_key(kit: str = KIT) -> pd.DataFrame:
    """20 items (10 per seed, 2 seeds) of 3 models; odd items show base as A, even items as C."""
    rows = []
    for seed in (0, 1):
        for i in range(1, 11):
            order = MODELS if i % 2 else MODELS[::-1]
            for letter, m in zip("ABC", order):
                rows.append(
                    {
                        "kit_id": kit,
                        "item_id": f"s{seed}-i{i:02d}",
                        "corpus": "simulated",
                        "seed": seed,
                        "context_id": f"c{i}",
                        "letter": letter,
                        "model": m,
                    }
                )
    return pd.DataFrame(rows)


#: (question, seed) -> model -> items (1-based) on which that model was ticked.
TICKS = {
    ("positivity", 0): {"base": [1], "M": [1, 2, 3, 4, 5, 6]},
    ("positivity", 1): {"base": [1, 2], "M": [1, 2, 3, 4, 5, 6, 7, 8]},
    ("sensible", 0): {"base": [10], "M": [1, 2, 3]},  # "did NOT make sense": reversed
    ("sensible", 1): {"base": [10], "M": [1, 2, 3, 4, 5]},
    ("reuse", 0): {"base": [10], "M": [1, 2, 3, 4, 5]},
    ("reuse", 1): {"M": [1, 2, 3, 4]},
}


def hand_annotations(
    key: pd.DataFrame, ticks: dict = TICKS, annotator: str = "ann1", items: range = range(1, 11)
) -> pd.DataFrame:
    letter = key.set_index(["item_id", "model"])["letter"]
    rows = []
    for seed in (0, 1):
        for i in items:
            item = f"s{seed}-i{i:02d}"
            r = {"kit_id": str(key["kit_id"].iloc[0]), "annotator": annotator, "item_id": item}
            for q in he.QUESTIONS:
                picked = sorted(letter[(item, m)] for m, its in ticks.get((q.key, seed), {}).items() if i in its)
                r[q.key] = "".join(picked) or he.NONE
            r["reason"] = "because"
            rows.append(r)
    return pd.DataFrame(rows)


def _read(tmp_path: Path, *frames: pd.DataFrame) -> pd.DataFrame:
    files = []
    for k, f in enumerate(frames):
        files.append(tmp_path / f"answers{k}.csv")
        f.to_csv(files[-1], index=False)
    return he.read_annotations(files)


# --------------------------------------------------------------------------- hand-computed table


def test_table_and_significance_by_hand(tmp_path):
    key = hand_key()
    sel, report = he.unblind(_read(tmp_path, hand_annotations(key)), key)
    assert report == {"annotations": 20, "dropped_duplicates": 0, "dropped_missing": 0}
    table, stats = he.human_table(sel, base="base")
    assert list(table.index) == ["ground truth", "base", "M"]
    assert list(table.columns) == list(he.TABLE_ORDER)
    # Positivity: M 60% and 80% over the seeds -> 70 ± 10 (population sd, as the papers' ± over 3 seeds);
    # vs base, 11 discordant items all for M: McNemar exact p = 2 · 0.5^11 = 0.000977 -> **
    assert table.loc["M", "Positivity"] == "70.00 ± 10.00**"
    assert table.loc["base", "Positivity"] == "15.00 ± 5.00"
    # Sensible is asked negated: 100 - ticked. M 70%, 50%; base 90% both seeds.
    # Discordant: 8 items where only M was ticked (M worse), 2 where only base was: p = 2·P(X<=2 | 10) = 112/1024
    assert table.loc["M", "Sensible"] == "60.00 ± 10.00"
    assert table.loc["base", "Sensible"] == "90.00 ± 0.00"
    assert table.loc["ground truth", "Sensible"] == "100.00 ± 0.00"
    # Reuse: M 50%, 40%; base 10%, 0%. Discordant 9 for M, 1 for base: p = 2·11/1024 = 0.0215 -> *
    assert table.loc["M", "Reuse"] == "45.00 ± 5.00*"
    assert table.loc["base", "Reuse"] == "5.00 ± 5.00"
    # Nothing ticked: 0 on positive questions, 100 on negated ones
    assert table.loc["M", "Connection"] == "0.00 ± 0.00" and table.loc["M", "Fluency"] == "100.00 ± 0.00"
    p = stats.set_index(["model", "metric"])["p"]
    assert p[("M", "Positivity")] == pytest.approx(2 * 0.5**11)
    assert p[("M", "Sensible")] == pytest.approx(112 / 1024)
    assert p[("M", "Reuse")] == pytest.approx(22 / 1024)
    assert p[("ground truth", "Positivity")] == pytest.approx(0.25)  # 3 items, all for base
    assert p[("M", "Connection")] == 1.0
    html = he.table_html(table, stats)
    assert "<b>70.00 ± 10.00**</b>" in html and "<b>45.00 ± 5.00*</b>" in html
    assert "<b>60.00" not in html  # worse than base is never bold


def test_spread_over_annotators(tmp_path):
    key = hand_key()
    a1 = hand_annotations(
        key, {("positivity", 0): {"M": [1, 2, 3, 4, 5, 6]}, ("positivity", 1): {"M": [1, 2, 3, 4, 5, 6]}}, "a1"
    )
    a2 = hand_annotations(key, {("positivity", 0): {"M": [1, 2, 3, 4]}, ("positivity", 1): {"M": [1, 2, 3, 4]}}, "a2")
    sel, _ = he.unblind(_read(tmp_path, a1, a2), key)
    table, _ = he.human_table(sel, spread="annotator")
    assert table.loc["M", "Positivity"].startswith("50.00 ± 10.00")  # a1 60%, a2 40%
    # one annotator: the mean alone, not "± 0.00", which would claim that annotators agree
    table, _ = he.human_table(sel[sel["annotator"] == "a1"], spread="annotator")
    assert table.loc["M", "Positivity"].startswith("60.00") and not table.stack().str.contains("±").any()


def test_mean_sd_cell():
    assert he.mean_sd_cell(70.0, 10.0, 3) == "70.00 ± 10.00" and he.mean_sd_cell(70.0, 0.0, 1) == "70.00"
    assert he.mean_sd_cell(float("nan"), 0.0, 3) == "–" and he.mean_sd_cell(1.234, 0.5, 2, digits=1) == "1.2 ± 0.5"


def test_sign_flip_test_by_hand():
    # all |d| equal: McNemar exact = binomial(5 of 6, p=0.5), two-sided: 2·(6+1)/64
    assert he.sign_flip_test([1, 1, 1, 1, 1, -1, 0, 0]) == pytest.approx(14 / 64)
    # unequal |d| (two annotators on item 1): the 8 sign patterns of (0.5, 1, 1) give |S| = 2.5 twice
    assert he.sign_flip_test([0.5, 1, 1]) == pytest.approx(2 / 8)
    assert he.sign_flip_test([0, 0]) == 1.0


def test_sign_flip_exact_matches_the_binomial_and_monte_carlo(monkeypatch):
    from scipy.stats import binomtest

    d = np.r_[np.ones(40), -np.ones(22), np.zeros(5)]
    assert he.sign_flip_test(d) == pytest.approx(binomtest(40, 62, 0.5).pvalue, rel=1e-9)
    thirds = np.random.default_rng(3).integers(-3, 4, size=30) / 3  # three annotators per item
    exact = he.sign_flip_test(thirds)
    monkeypatch.setattr(he, "MAX_DENOMINATOR", 0)  # force the Monte-Carlo path
    mc = he.sign_flip_test(thirds, permutations=40000, seed=1)
    assert abs(mc - exact) < 0.01 and mc != exact


def test_two_annotators_per_item_use_the_permutation_test(tmp_path):
    key = hand_key()
    # item 1 of seed 0: a1 ticks M only, a2 ticks M and base -> d = 0.5; items 2, 3: both tick M only -> d = 1
    t1 = {("positivity", 0): {"M": [1, 2, 3]}}
    t2 = {("positivity", 0): {"M": [1, 2, 3], "base": [1]}}
    sel, _ = he.unblind(_read(tmp_path, hand_annotations(key, t1, "a1"), hand_annotations(key, t2, "a2")), key)
    sig = he.significance(sel, "base").set_index(["model", "metric"])
    assert sig.loc[("M", "Positivity"), "p"] == pytest.approx(0.25)
    assert sig.loc[("M", "Positivity"), "diff"] == pytest.approx(100 * 2.5 / 20)


def test_krippendorff_alpha_and_percent_agreement_by_hand():
    units = [[1, 1], [1, 0], [0, 0], [1, 1, 0], [1]]  # the last unit is not pairable
    ones, counts = [sum(u) for u in units], [len(u) for u in units]
    # n0 = 4, n1 = 5, n = 9; o01 = 1/1 + 2/2 = 2; alpha = 1 - 8·2/(4·5) = 0.2
    assert he.krippendorff_alpha_binary(ones, counts) == pytest.approx(0.2)
    assert he.percent_agreement(ones, counts) == pytest.approx((1 + 0 + 1 + 1 / 3) / 4)
    assert np.isnan(he.krippendorff_alpha_binary([2, 2], [2, 2]))  # no variation: undefined


def test_agreement_table(tmp_path):
    key = hand_key()
    same = hand_annotations(key, TICKS, "a1"), hand_annotations(key, TICKS, "a2")
    sel, _ = he.unblind(_read(tmp_path, *same), key)
    agr = he.agreement(sel)
    assert agr.loc["Positivity", "krippendorff_alpha"] == pytest.approx(1.0)
    assert agr.loc["Positivity", "units"] == 60
    assert np.isnan(agr.loc["Connection", "krippendorff_alpha"])  # nobody ticked anything


# --------------------------------------------------------------------------- bad input


def test_unknown_item_id(tmp_path):
    ann = hand_annotations(hand_key())
    ann.loc[1, "item_id"] = "s0-i99"
    with pytest.raises(he.HumanEvalError, match=r"answers0.csv: row 3: unknown item_id 's0-i99'"):
        he.unblind(_read(tmp_path, ann), hand_key())


def test_key_of_another_kit(tmp_path):
    with pytest.raises(he.HumanEvalError, match=r"kit_id 'other' has no key \(keys for: \['kit1'\]\)"):
        he.unblind(_read(tmp_path, hand_annotations(hand_key("other"))), hand_key())


def test_missing_answer_raises_or_is_dropped_and_counted(tmp_path):
    ann = hand_annotations(hand_key())
    ann.loc[4, "reuse"] = ""
    with pytest.raises(he.HumanEvalError, match=r"row 6: missing answer\(s\) to \['reuse'\]"):
        he.unblind(_read(tmp_path, ann), hand_key())
    sel, report = he.unblind(_read(tmp_path, ann), hand_key(), missing="drop")
    assert report["dropped_missing"] == 1 and report["annotations"] == 19
    assert sel["item_id"].nunique() == 19


def test_duplicate_annotator(tmp_path):
    key = hand_key()
    ann = hand_annotations(key)
    sel, report = he.unblind(_read(tmp_path, ann, ann), key)  # the same file read twice
    assert report["dropped_duplicates"] == 20 and report["annotations"] == 20
    changed = ann.copy()
    changed.loc[0, "positivity"] = "ABC"
    with pytest.raises(
        he.HumanEvalError,
        match=r"answers1.csv: row 2: annotator 'ann1' answered item s0-i01 "
        r"again with different answers \(first at .*answers0.csv: row 2\)",
    ):
        he.unblind(_read(tmp_path, ann, changed), key)


@pytest.mark.parametrize("cell", ["D", "A none", "?"])
def test_answer_that_is_not_a_letter_of_the_item(tmp_path, cell):
    ann = hand_annotations(hand_key())
    ann.loc[0, "social"] = cell
    with pytest.raises(he.HumanEvalError, match=r"row 2, social: .* is not an answer: expected letters of ABC"):
        he.unblind(_read(tmp_path, ann), hand_key())


def test_answer_separators_and_case_are_accepted():
    assert he.parse_answer("a, c", "ABC", "x") == {"A", "C"}
    assert he.parse_answer("None", "ABC", "x") == set()
    assert he.parse_answer(" ", "ABC", "x") is None


def test_empty_annotator_and_missing_columns(tmp_path):
    ann = hand_annotations(hand_key())
    ann.loc[2, "annotator"] = ""
    with pytest.raises(he.HumanEvalError, match="row 4: empty annotator id"):
        he.unblind(_read(tmp_path, ann), hand_key())
    with pytest.raises(he.HumanEvalError, match=r"missing column\(s\) \['reuse'\]"):
        _read(tmp_path, hand_annotations(hand_key()).drop(columns="reuse"))


def test_crowdsourcing_results_read_like_the_local_form(tmp_path):
    key = hand_key()
    local = hand_annotations(key)
    mturk = local.rename(
        columns={
            "kit_id": "Input.kit_id",
            "item_id": "Input.item_id",
            "annotator": "WorkerId",
            **{q.key: f"Answer.{q.key}" for q in he.QUESTIONS},
            "reason": "Answer.reason",
        }
    )
    mturk.insert(0, "HITId", "h")
    a, _ = he.unblind(_read(tmp_path, local), key)
    b, _ = he.unblind(_read(tmp_path, mturk), key)
    pd.testing.assert_frame_equal(a.drop(columns="kit_id"), b.drop(columns="kit_id"))


# --------------------------------------------------------------------------- items and blinding


def _gens() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for c in range(6):
            for m in ("base", "ground truth", "GELI: RRD + VA", "GE: RRD (K=32)"):
                rows.append(
                    {
                        "corpus": "simulated",
                        "seed": seed,
                        "context_id": f"x{c}:5",
                        "convo_id": f"x{c}",
                        "turn_idx": 5,
                        "history": f"User: hello {c}\nAI: hi\nUser: what now {c}?",
                        "model": m,
                        "response": f"{m} answers {c} in seed {seed}",
                    }
                )
    return pd.DataFrame(rows)


def test_items_are_blinded_and_the_key_unblinds_them():
    gens = _gens()
    items, key = he.build_items(gens, n_items=4, seed=0)
    assert len(items) == 8 and items["item_id"].is_unique and items["kit_id"].nunique() == 1
    assert key.groupby("item_id")["model"].apply(lambda m: sorted(m) == sorted(gens["model"].unique())).all()
    # every response in the item is the generation the key names
    g = gens.set_index(["seed", "context_id", "model"])["response"]
    hist = gens.set_index(["seed", "context_id"])["history"]
    item = items.set_index("item_id")
    for r in key.itertuples():
        assert item.loc[r.item_id, f"response_{r.letter}"] == g[(r.seed, r.context_id, r.model)]
        assert item.loc[r.item_id, "history"] == hist[(r.seed, r.context_id)].iloc[0]
    # the model order is shuffled per item, and the same contexts are sampled in both seeds
    assert key[key["letter"] == "A"]["model"].nunique() > 1
    ctx = key.drop_duplicates("item_id").groupby("seed")["context_id"].apply(set)
    assert ctx[0] == ctx[1]
    # deterministic per seed; another seed blinds differently
    again = he.build_items(gens, n_items=4, seed=0)
    pd.testing.assert_frame_equal(again[1], key)
    assert not he.build_items(gens, n_items=4, seed=1)[1]["model"].equals(key["model"])


def test_kit_id_follows_the_content_and_incomplete_contexts_are_left_out(capsys):
    gens = _gens()
    kit = he.build_items(gens, 4)[0]["kit_id"].iloc[0]
    changed = gens.copy()
    changed["response"] += "!"
    assert he.build_items(changed, 4)[0]["kit_id"].iloc[0] != kit
    partial = gens.drop(
        index=gens.index[(gens["context_id"] == "x0:5") & (gens["model"] == "base") & (gens["seed"] == 0)]
    )
    items, key = he.build_items(partial, 10)
    assert "1 context(s) lack a model's response" in capsys.readouterr().out
    assert len(items) == 11 and "x0:5" not in set(key[key["seed"] == 0]["context_id"])


def test_write_kit_refuses_a_key_of_another_kit(tmp_path):
    items, key = he.build_items(_gens(), 2)
    with pytest.raises(he.HumanEvalError, match="key is for kit"):
        he.write_kit(tmp_path, items, key.assign(kit_id="zzz"))
    paths = he.write_kit(tmp_path, items, key)
    assert paths["key"].parent.name == "keys" and paths["key"].parent != paths["form"].parent
    pd.testing.assert_frame_equal(he.load_keys(tmp_path), key)
    assert paths["form"].read_text().count("</script>") == 2  # embedded texts cannot close the script


# --------------------------------------------------------------------------- the form in a real browser


pytest_browser = pytest.mark.skipif(
    not browser.chromium_available(), reason=f"{browser.CHROMIUM} is absent (apt-get install chromium chromium-driver)"
)


def _tick(driver, question: str, letters: str) -> None:
    for letter in letters:
        driver.find_element("id", f"q-{question}-{letter}").click()


@pytest.mark.slow
@pytest_browser
def test_local_form_saves_a_csv_that_the_analysis_reads(tmp_path):
    gens = _gens().replace({"response": {"base answers 0 in seed 0": 'Quotes " and </script> survive'}})
    items, key = he.build_items(gens, n_items=2, seed=0)
    paths = he.write_kit(tmp_path / "he", items, key)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    letter = key.set_index(["item_id", "model"])["letter"]
    answered = list(items["item_id"][:2])
    # over loopback http, not file://: headless Chromium lost a file:// page's local storage on reload in 6 of 16
    # tries on a loaded machine (16 of 16 kept over http), and failed this test on CI 3 times (notebook 09, "The kit")
    with browser.serve_dir(paths["form"].parent) as (base, _), browser.headless_chromium() as driver:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.get(base + paths["form"].name)
        assert driver.find_element("id", "progress").text.startswith("item 1 of 4")
        driver.find_element("id", "annotator").send_keys("ann-1")
        driver.find_element("id", "save").click()
        assert "No item is complete" in driver.find_element("id", "status").text
        for n, item in enumerate(answered):
            assert driver.find_element("id", "jump").get_attribute("value") == str(n)
            shown = driver.find_element("id", f"response-{letter[(item, 'base')]}").text
            assert items.set_index("item_id").loc[item, f"response_{letter[(item, 'base')]}"] in shown
            for q in he.QUESTIONS:
                if q.key == "positivity":
                    _tick(driver, q.key, letter[(item, "GELI: RRD + VA")])
                elif q.key == "sensible":
                    _tick(driver, q.key, letter[(item, "base")])
                elif q.key == "reuse":  # tick a letter, then "none": none wins
                    _tick(driver, q.key, "A")
                    driver.find_element("id", "q-reuse-none").click()
                else:
                    driver.find_element("id", f"q-{q.key}-none").click()
            assert not driver.find_element("id", "q-reuse-A").is_selected()
            driver.find_element("id", "reason").send_keys("Chatbot A sounded natural.")
            driver.find_element("id", "next").click()
        driver.find_element("id", "q-fluency-A").click()  # item 3 stays incomplete
        driver.find_element("id", "save").click()
        status = driver.find_element("id", "status").text
        deadline = time.monotonic() + 10
        while not list(downloads.glob("*.csv")) and time.monotonic() < deadline:
            time.sleep(0.2)
        driver.refresh()  # answers survive a reload (local storage)
        assert driver.find_element("id", "annotator").get_attribute("value") == "ann-1"
        assert "2 complete" in driver.find_element("id", "progress").text
    assert "Saved 2 of 4 items" in status and "2 incomplete" in status
    saved = list(downloads.glob("*.csv"))
    assert [p.name for p in saved] == [f"answers-{items['kit_id'].iloc[0]}-ann-1.csv"]
    ann = he.read_annotations(saved)
    assert list(ann["item_id"]) == answered and set(ann["reuse"]) == {"none"}
    sel, report = he.unblind(ann, he.load_keys(tmp_path / "he"))
    assert report["annotations"] == 2
    table, _ = he.human_table(sel)
    assert table.loc["GELI: RRD + VA", "Positivity"] == "100.00 ± 0.00"
    assert table.loc["base", "Positivity"] == "0.00 ± 0.00"
    assert table.loc["base", "Sensible"] == "0.00 ± 0.00"  # ticked "did NOT make sense" on both items
    assert table.loc["ground truth", "Sensible"] == "100.00 ± 0.00"
    assert table.loc["GELI: RRD + VA", "Reuse"] == "0.00 ± 0.00"


@pytest.mark.slow
@pytest_browser
def test_crowd_template_posts_the_answers_as_form_fields(tmp_path):
    import html

    items, key = he.build_items(_gens(), n_items=1, seed=0)
    paths = he.write_kit(tmp_path, items, key)
    row = items.iloc[0]
    page = paths["crowd_template"].read_text()
    for col in items.columns:  # what the platform does with one row of items.csv
        page = page.replace("${" + col + "}", html.escape(str(row[col])))
    assert "${" not in page
    hit = tmp_path / "hit.html"
    hit.write_text(page)
    letter = key[key["item_id"] == row["item_id"]].set_index("model")["letter"]
    # stands in for the platform: records what the form would post, unless the form refused to submit
    capture = (
        "var f = document.getElementById('crowd-form'); f.addEventListener('submit', function (e) {"
        " if (!e.defaultPrevented) { window.posted = Object.fromEntries(new FormData(f)); }"
        " e.preventDefault(); });"
    )
    with browser.headless_chromium() as driver:
        driver.get(hit.as_uri() + "?assignmentId=A1&workerId=W1")
        driver.execute_script(capture)
        assert row["history"].splitlines()[0] in driver.find_element("id", "history").text
        driver.find_element("id", "submit").click()
        assert driver.execute_script("return window.posted || null") is None  # incomplete: not submitted
        for q in he.QUESTIONS:
            _tick(driver, q.key, letter["ground truth"] + letter["base"] if q.key == "connection" else "")
            if q.key != "connection":
                driver.find_element("id", f"q-{q.key}-none").click()
        driver.find_element("id", "reason").send_keys("C is warm.")
        driver.find_element("id", "submit").click()
        posted = driver.execute_script("return window.posted")
    assert posted["assignmentId"] == "A1" and posted["item_id"] == row["item_id"]
    assert posted["connection"] == "".join(sorted(letter["ground truth"] + letter["base"]))
    assert posted["fluency"] == "none" and posted["reason"] == "C is warm."
    batch = pd.DataFrame([{"WorkerId": "W1", **{f"Answer.{k}": v for k, v in posted.items()}}])
    sel, _ = he.unblind(_read(tmp_path, batch), key)
    got = sel[sel["metric"] == "Connection"].set_index("model")["satisfied"]
    assert got.to_dict() == {"base": 1, "ground truth": 1, "GELI: RRD + VA": 0, "GE: RRD (K=32)": 0}


# --------------------------------------------------------------------------- notebooks 08 and 09


def _errors(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(
        o.get("text", "") + str(o.get("data", {}).get("text/html", "")) + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        for o in c.get("outputs", [])
    )


@pytest.mark.slow
def test_notebooks_08_and_09_at_smoke_on_a_smollm2_fixture(tmp_path, monkeypatch):
    from fixtures import write_generations

    from geli_lib.core.runs import NOTEBOOK_DIR, results_dir, run_notebook

    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    tables = results_dir("smoke", "tables")
    gens = write_generations(tables / "generations.csv", n_contexts=2, max_new_tokens=12)
    run_notebook(
        NOTEBOOK_DIR / "08_generations_eval.ipynb", tmp_path / "08.ipynb", {"profile": "smoke"}, progress=False
    )
    rows = pd.read_csv(tables / "auto_eval.csv")
    assert set(rows["model"]) == set(gens["model"]) and set(rows["seed"]) == {0, 1}
    assert (results_dir("smoke", "figures") / "08_auto_eval.png").stat().st_size > 1000
    assert not _errors(tmp_path / "08.ipynb")

    # no annotations: the protocol, and no numbers
    run_notebook(NOTEBOOK_DIR / "09_human_eval.ipynb", tmp_path / "09.ipynb", {"profile": "smoke"}, progress=False)
    text = _text(tmp_path / "09.ipynb")
    assert "No annotations yet" in text and "form.html" in text and "did NOT make sense" in text
    assert not list(tables.glob("human_eval_*.csv"))

    # one annotator's file: the table appears with the hand-checkable cells
    root = results_dir("smoke", "human_eval")
    key = he.load_keys(root)
    letter = key.set_index(["item_id", "model"])["letter"]
    ann = []
    for item in sorted(key["item_id"].unique()):
        r = {
            "kit_id": key["kit_id"].iloc[0],
            "annotator": "a1",
            "item_id": item,
            **{q.key: he.NONE for q in he.QUESTIONS},
            "reason": "r",
        }
        r["positivity"] = letter[(item, "ground truth")]
        ann.append(r)
    answers = tmp_path / "answers.csv"
    pd.DataFrame(ann).to_csv(answers, index=False)
    run_notebook(
        NOTEBOOK_DIR / "09_human_eval.ipynb",
        tmp_path / "09b.ipynb",
        {"profile": "smoke", "annotations_path": str(answers)},
        progress=False,
    )
    assert not _errors(tmp_path / "09b.ipynb")
    # an ad-hoc run (-p annotations_path): the study's kit and key, its own table, the study's tables untouched
    assert not (tables / "human_eval_simulated.csv").exists()
    (table,) = (results_dir("smoke") / "adhoc").glob("annotations_path=*/tables/human_eval_simulated.csv")
    stats = pd.read_csv(table).set_index(["model", "metric"])
    assert stats.loc[("ground truth", "Positivity"), "mean"] == 100.0
    assert stats.loc[("base", "Positivity"), "mean"] == 0.0
    assert stats.loc[("ground truth", "Positivity"), "p"] == pytest.approx(2 * 0.5**4)  # 4 items, all for GT


# --------------------------------------------------------------------------- bad key and result files


def _kit_with_key(tmp_path: Path, edit) -> Path:
    """A written kit whose key file was then edited by ``edit(key)`` (returning the new key)."""
    items, key = he.build_items(_gens(), 2)
    paths = he.write_kit(tmp_path, items, key)
    edit(key).to_csv(paths["key"], index=False)
    return paths["key"]


def test_a_key_showing_one_model_under_two_letters_is_refused(tmp_path):
    def same_model(key):
        key.loc[1, "model"] = key.loc[0, "model"]  # item 1: letters A and B both "base"
        return key

    path = _kit_with_key(tmp_path, same_model)
    key = pd.read_csv(path, dtype=str)
    with pytest.raises(he.HumanEvalError) as e:
        he.load_keys(tmp_path)
    assert str(e.value) == (
        f"{path}: row 3, field 'model': item {key.loc[1, 'item_id']} shows model "
        f"{key.loc[0, 'model']!r} under two letters ('A' in row 2 and 'B'); each letter "
        "must show a different model"
    )


def test_a_key_with_a_letter_twice_or_a_column_missing_is_refused(tmp_path):
    def same_letter(key):
        key.loc[1, "letter"] = key.loc[0, "letter"]
        return key

    _kit_with_key(tmp_path, same_letter)
    with pytest.raises(he.HumanEvalError, match=r"row 3, field 'letter': .* shows letter 'A' under two models"):
        he.load_keys(tmp_path)
    _kit_with_key(tmp_path, lambda key: key.drop(columns="model"))
    with pytest.raises(he.HumanEvalError, match=r"keys/.*\.csv: missing column\(s\) \['model'\]"):
        he.load_keys(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"answers\.csv: empty file \(0 bytes\): expected a header row with \['kit_id', 'item_id', 'annotator'"),
        (b"\n\n", r"answers\.csv: empty file \(2 bytes\)"),
        (
            b"kit_id,item_id,annotator\nk1,s0-i01,J\xfcrgen\n",
            r"answers\.csv: line 2, byte 36: not UTF-8 text \(b'\\xfc'\)",
        ),
    ],
)
def test_empty_or_non_utf8_result_files_are_named(tmp_path, content, message):
    (tmp_path / "answers.csv").write_bytes(content)
    with pytest.raises(he.HumanEvalError, match=message):
        he.read_annotations([tmp_path / "answers.csv"])


def test_a_non_utf8_key_file_is_named(tmp_path):
    path = _kit_with_key(tmp_path, lambda key: key)
    path.write_bytes(path.read_bytes().replace(b"base", b"b\xe4se", 1))
    with pytest.raises(he.HumanEvalError, match=r"keys/.*\.csv: line \d+, byte \d+: not UTF-8 text"):
        he.load_keys(tmp_path)
