"""The runner: a failing stage is named and kept; the smoke chain runs, skips, builds the book."""

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from geli_lib.params import REPO_ROOT, load_params
from geli_lib.runs import StageError, build_book, run_notebook, run_study


def _notebook(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "smoke"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)
    return path


def test_failing_notebook_is_named_and_kept(tmp_path: Path):
    src = _notebook(tmp_path / "bad.ipynb", "raise ValueError('planted failure')")
    out = tmp_path / "out" / "bad.ipynb"
    with pytest.raises(StageError, match="bad failed") as e:
        run_notebook(src, out, {"profile": "smoke"}, progress=False)
    assert "planted failure" in str(e.value)
    assert not out.exists(), "a failed run must not leave an output a re-run would trust"
    assert (tmp_path / "out" / "bad.failed.ipynb").exists()


def test_parameters_reach_the_notebook(tmp_path: Path):
    src = _notebook(tmp_path / "ok.ipynb", "assert profile == 'cpu', profile")
    seconds = run_notebook(src, tmp_path / "ok_out.ipynb", {"profile": "cpu"}, progress=False)
    assert seconds > 0 and (tmp_path / "ok_out.ipynb").exists()


def test_book_needs_a_run(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GELI_RESULTS", str(tmp_path))
    with pytest.raises(StageError, match="no run of profile"):
        build_book("smoke", book_dir=tmp_path / "book")


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """Run the whole smoke chain once into a temporary results root and book copy."""
    root = tmp_path_factory.mktemp("smoke")
    book = root / "book"
    shutil.copytree(REPO_ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "generated", "_mathjax"))
    old = os.environ.get("GELI_RESULTS")
    os.environ["GELI_RESULTS"] = str(root / "results")
    try:
        first = run_study("smoke", book_dir=book, progress=False)
        second = run_study("smoke", book_dir=book, progress=False)
        only = run_study("smoke", book=False, progress=False, only=["03_rrd_va"])
    finally:
        if old is None:
            os.environ.pop("GELI_RESULTS")
        else:
            os.environ["GELI_RESULTS"] = old
    return root, book, first, second, only


@pytest.mark.slow
def test_smoke_chain_writes_results_and_manifest(smoke_study):
    root, _, first, *_ = smoke_study
    out = root / "results" / "smoke"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["seeds"] == [0, 1, 2]
    assert manifest["packages"]["torch"].startswith("2.13.0")
    assert manifest["git_commit"] != ""
    assert manifest["params"]["simulation"]["n_conversations"] == 20
    for nb, stage in first["stages"].items():
        assert not stage["skipped"] and stage["seconds"] > 0
        executed = nbformat.read(out / "notebooks" / f"{nb}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    assert "00_data: load corpus" in manifest["step_seconds"]
    assert (out / "figures" / "00_score_histogram.png").stat().st_size > 1000


@pytest.mark.slow
def test_smoke_chain_writes_the_reward_table_and_figures(smoke_study):
    import pandas as pd

    from geli_lib.evaluation import REWARD_TABLE_COLUMNS

    root, *_ = smoke_study
    out = root / "results" / "smoke"
    rows = pd.read_csv(out / "tables" / "reward_functions.csv")
    assert list(rows.columns) == list(REWARD_TABLE_COLUMNS)
    assert set(rows["family"]) == {"baseline", "GE", "LI", "GELI", "LLM", "oracle"}
    assert (rows.groupby("method")["seed"].nunique() == 3).all()
    assert rows["l_ge_mse"].notna().all() and rows["gt_spearman_within"].notna().all()
    for fig in ("03_unroll", "06_unroll", "06_lambda_sweep", "06_face_noise_sweep"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000, fig


@pytest.mark.slow
def test_smoke_chain_writes_curves_generations_and_auto_eval(smoke_study):
    """The results contract (DESIGN.md §7) of notebooks 07-08."""
    import pandas as pd

    root, *_ = smoke_study
    tables = root / "results" / "smoke" / "tables"
    curves = pd.read_csv(tables / "ppo_curves.csv")
    assert {"reward_fn", "seed", "step", "reward_mean", "kl"} <= set(curves.columns)
    assert len(curves) >= 2 and curves["reward_mean"].notna().all()
    gens = pd.read_csv(tables / "generations.csv")
    assert {"base", "ground truth"} <= set(gens["model"]) and len(set(gens["model"])) >= 3
    auto = pd.read_csv(tables / "auto_eval.csv")
    assert set(auto["model"]) == set(gens["model"])


@pytest.mark.slow
def test_rerun_skips_unchanged_stages(smoke_study):
    *_, second, only = smoke_study
    assert all(s["skipped"] for s in second["stages"].values())
    # `--only` keys stages along the whole chain, so an unchanged selected stage is skipped too
    assert all(s["skipped"] for s in only["stages"].values())


@pytest.mark.slow
def test_book_builds_strict_and_opens_in_a_browser(smoke_study):
    _, book, *_ = smoke_study
    html = book / "_build" / "html"
    assert (html / "index.html").exists()
    assert (html / "generated" / "00_data.html").exists()
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium not installed (.ci/run installs it)")
    from geli_lib.browser import check_html_pages

    chain = load_params("smoke").notebooks
    report = check_html_pages(html, ["index.html", *[f"generated/{nb}.html" for nb in chain],
                                     "generated/run_record.html"],
                              strict=True,
                              count_selectors={"math": ".MathJax, .MathJax_CHTML, mjx-container"})
    data_page = report["pages"]["generated/00_data.html"]
    assert data_page["n_images"] >= 3 and data_page["n_broken_images"] == 0
    assert data_page["counts"]["math"] > 0, "math was not typeset offline"
    # every page that draws figures shows them (signals, consistency, curves, auto-eval bars)
    for nb in ("01_features", "05_llm_geli", "07_ppo", "08_generations_eval"):
        assert report["pages"][f"generated/{nb}.html"]["n_images"] >= 1, nb
    assert report["pages"]["generated/06_reward_table.html"]["n_images"] >= 3


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["candor", "esconv", "soda"])
def test_00_data_runs_on_real_formats_by_parameters_alone(corpus, tmp_path: Path, monkeypatch):
    from fixtures import write_candor, write_esconv, write_soda

    monkeypatch.setenv("GELI_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GELI_CACHE", str(tmp_path / "cache"))
    if corpus == "candor":
        data_path = tmp_path / "candor"
        write_candor(data_path, n_conversations=3)
    elif corpus == "esconv":
        data_path = write_esconv(tmp_path / "ESConv.json")
    else:
        data_path = write_soda(tmp_path / "soda.jsonl")
    out = tmp_path / "out.ipynb"
    run_notebook(REPO_ROOT / "notebooks" / "00_data.ipynb", out,
                 {"profile": "smoke", "corpus": corpus, "data_path": str(data_path)}, progress=False)
    executed = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "history-utterance pairs" in text
    # a corpus other than the default writes under its own key, never over the simulated study's results
    assert (tmp_path / "results" / "smoke" / corpus / "tables" / "corpus_summary.csv").is_file()
    assert not (tmp_path / "results" / "smoke" / "tables").exists()
