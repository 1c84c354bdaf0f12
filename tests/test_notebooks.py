"""Notebooks are committed as in-sync pairs, without outputs, with the runner's parameters."""

from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from geli_lib.core.params import PROFILES, REPO_ROOT, load_params

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_a_pair():
    ipynb = {p.stem for p in NOTEBOOKS}
    py = {p.stem for p in (REPO_ROOT / "notebooks").glob("*.py")}
    assert ipynb, "no notebooks found"
    assert ipynb == py, f"unpaired: {sorted(ipynb ^ py)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync_and_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: saved outputs"
    text = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in text.cells] == [c.source for c in nb.cells], (
        f"{path.name} and its .py differ: run `make sync`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_takes_profile_corpus_data_path(path: Path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line}
    assert {"profile", "corpus", "data_path"} <= names


def test_every_notebook_is_in_every_chain_and_in_the_book():
    toc = yaml.safe_load((REPO_ROOT / "book" / "_toc.yml").read_text())
    files = {ch["file"] for part in toc["parts"] for ch in part["chapters"]}
    for path in NOTEBOOKS:
        assert f"generated/{path.stem}" in files, f"{path.stem} missing from book/_toc.yml"
        for profile in PROFILES:
            assert path.stem in load_params(profile).notebooks, f"{path.stem} not run by {profile}"
