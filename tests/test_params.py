"""Profiles load into validated dataclasses; bad values name the file and field."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from geli_lib.core import params as params_mod
from geli_lib.core.io import cache_dir
from geli_lib.core.params import (
    PROFILES,
    REPO_ROOT,
    ComputeParams,
    ParamError,
    SimulationParams,
    SlurmParams,
    StudyParams,
    adhoc_name,
    check_injected_types,
    field_docs,
    injected_parameters,
    key_value,
    load_params,
    to_dict,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile):
    p = load_params(profile)
    assert p.profile == profile
    assert p.corpus == "simulated"
    assert p.notebooks, "a profile must run at least one notebook"


def test_profile_sizes_follow_the_issue():
    assert load_params("smoke").simulation.n_conversations <= 30
    assert 100 <= load_params("cpu").simulation.n_conversations <= 1000
    gpu = load_params("gpu").simulation
    assert (gpu.n_conversations, gpu.mean_turns) == (1656, 160)


def test_overrides_merge_into_sections_and_ignore_none():
    p = load_params("smoke", simulation={"n_conversations": 5}, corpus=None)
    assert p.simulation.n_conversations == 5
    assert p.simulation.mean_turns == load_params("smoke").simulation.mean_turns
    assert p.corpus == "simulated"


@pytest.mark.parametrize(
    "override, field",
    [
        ({"simulation": {"score_noise": -1}}, "simulation.score_noise"),
        ({"simulation": {"n_conversations": "many"}}, "simulation.n_conversations"),
        ({"simulation": {"frame_dropout": 1.5}}, "simulation.frame_dropout"),
        ({"simulation": {"no_such_knob": 1}}, "simulation.no_such_knob"),
        ({"splits": {"reward_train": 0.9}}, "splits.reward_train"),
        ({"data": {"segmentation": "chapters"}}, "data.segmentation"),
        ({"corpus": "candor"}, "data_path"),
        ({"corpus": "twitter", "data_path": "x"}, "corpus"),
        ({"notebooks": ["99_missing"]}, "notebooks"),
        ({"seeds": []}, "seeds"),
        ({"eval": {"best_of_n": -1}}, "eval.best_of_n"),
    ],
)
def test_bad_values_name_file_and_field(override, field):
    with pytest.raises(ParamError) as e:
        load_params("smoke", **override)
    msg = str(e.value)
    assert "smoke.yaml" in msg and field in msg


def test_choices_are_validated_from_their_literal_type():
    with pytest.raises(
        ParamError,
        match=r"reward\.rrd_sampling: must be one of 'ren', 'with_replacement', "
        r"'without_replacement', got 'sometimes'",
    ):
        load_params("smoke", reward={"rrd_sampling": "sometimes"})
    with pytest.raises(ParamError, match=r"rl\.algorithm: expected a string, got 3"):
        load_params("smoke", rl={"algorithm": 3})
    bad = dataclasses.replace(load_params("smoke").reward, ge_form="product")  # built in code, not from YAML
    with pytest.raises(params_mod._FieldError, match="ge_form: must be one of 'mean', 'sum'"):
        bad.validate()
    with pytest.raises(params_mod._FieldError, match=r"reward_fns: must be one of .*got 'rrd'"):
        params_mod.RLParams(reward_fns=["va", "rrd"]).validate()  # a list of choices: each one checked
    assert params_mod.GE_METHODS == ("sum", "ircr", "rudder", "rrd")  # the tuples are read off the types


def test_bad_files(tmp_path: Path):
    with pytest.raises(ParamError, match="not found"):
        load_params("cpu", params_dir=tmp_path)
    (tmp_path / "cpu.yaml").write_text("simulation: [1, 2\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        load_params("cpu", params_dir=tmp_path)
    with pytest.raises(ParamError, match="unknown"):
        load_params("huge")


def test_every_field_has_a_docstring():
    for cls in (StudyParams, SimulationParams, ComputeParams, SlurmParams):
        docs = field_docs(cls)
        missing = [f for f in to_dict(cls()) if f not in docs]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("seed: 0\nrl:\n  steps: 3\nreward:\n  K: 32\nrl:\n  steps: 9\n", "key 'rl' given twice (lines 2 and 6)"),
        ("", "empty parameter file"),
        ("# only a comment\n", "empty parameter file"),
        ("reward:\n  lr: .inf\n", "reward.lr: expected a finite number, got inf"),
        ("reward:\n  lr: .nan\n", "reward.lr: expected a finite number"),
        (
            "simulation:\n  n_conversations: 1000000000000\n",
            "simulation.n_conversations: expected an integer of at most",
        ),
        ("simulation:\n  n_conversations: 1.0e+12\n", "simulation.n_conversations: expected an integer"),
        ("simulation:\n  n_conversations: 200000\n", "simulation.n_conversations: must be in [1, 100000]"),
        ("data:\n  score_range: [1, 5, 10]\n", "data.score_range: expected a list of 2 values, got [1, 5, 10]"),
        ("- a list\n", "expected a mapping at the top level, got list"),
    ],
)
def test_bad_profile_files_name_file_and_field(tmp_path: Path, text, message):
    (tmp_path / "smoke.yaml").write_text(text)
    with pytest.raises(ParamError) as e:
        load_params("smoke", params_dir=tmp_path)
    assert str(tmp_path / "smoke.yaml") in str(e.value) and message in str(e.value)


def test_non_utf8_profile_names_file_and_byte(tmp_path: Path):
    (tmp_path / "smoke.yaml").write_bytes(b"seed: 0\ncorpus: simul\xe9ted\n")
    with pytest.raises(ParamError, match=r"smoke.yaml: not UTF-8 text \(line 2, byte 21: b'\\xe9'\)"):
        load_params("smoke", params_dir=tmp_path)


@pytest.mark.parametrize(
    "override, field",
    [
        ({"reward": {"lam": "abc"}}, "reward.lam: expected a number, got 'abc'"),
        ({"seeds": ["abc"]}, "seeds[0]: expected an integer, got 'abc'"),
        ({"seeds": [1.7]}, "seeds[0]: expected an integer, got 1.7"),
        ({"simulation": {"min_turns": 1000}}, "simulation.mean_turns: must be >= min_turns"),
    ],
)
def test_bad_overrides_are_named_as_overrides_not_as_the_file(override, field):
    with pytest.raises(ParamError) as e:
        load_params("smoke", **override)
    msg = str(e.value)
    assert msg.startswith(f"override {field}") and "not read from" in msg and "smoke.yaml" in msg


def test_changed_parameters_get_their_own_results_key():
    assert load_params("smoke").results_key == "smoke"
    # the runner's own choices and overrides equal to the profile's keep the study's key
    same = load_params("smoke", reward={"lam": load_params("smoke").reward.lam, "K": None}, seeds=None)
    assert same.results_key == "smoke" and same.adhoc == ""
    assert load_params("smoke", corpus="esconv", data_path="x.json").results_key == "smoke/esconv"
    p = load_params("smoke", reward={"lam": 0.1}, seeds=[0])
    assert p.results_key == "smoke/adhoc/reward.lam=0.1_seeds=0"
    assert p.study_key == "smoke"  # where an ad-hoc run reads earlier stages' tables (06 reads 02-05's)
    assert (
        load_params("smoke", corpus="esconv", data_path="x.json", reward={"K": 4}).results_key
        == "smoke/esconv/adhoc/reward.K=4"
    )
    assert load_params("smoke", corpus="esconv", data_path="x.json", reward={"K": 4}).study_key == "smoke/esconv"


def test_adhoc_name_stays_one_safe_folder_name():
    name = adhoc_name({"rl": {"reward_fns": ["a"]}}, {"rl": {"reward_fns": ["GELI: RRD + VA/../x" * 9]}})
    assert "/" not in name and " " not in name and len(name) <= 80


def test_command_line_key_value_reads_yaml_and_names_a_malformed_one():
    assert key_value("steps=15", "--rl") == ("steps", 15)
    assert key_value("lr=5.0e-4", "--rl") == ("lr", 5.0e-4)
    assert key_value("reward_fns=[geli, ls]", "--rl") == ("reward_fns", ["geli", "ls"])
    for bad in ("steps", "=3"):
        with pytest.raises(ParamError, match=f"--rl expects KEY=VALUE, got '{bad}'"):
            key_value(bad, "--rl")
    params = load_params("cpu", rl=dict([key_value("steps=7", "--rl")]))
    assert params.rl.steps == 7 and params.adhoc == "rl.steps=7"


def test_adhoc_is_not_a_parameter(tmp_path: Path):
    (tmp_path / "smoke.yaml").write_text("adhoc: mine\n")
    with pytest.raises(ParamError, match="adhoc is set by load_params"):
        load_params("smoke", params_dir=tmp_path)


def test_injected_parameters_read_from_papermills_cell():
    history = [
        "",
        'profile = "smoke"\nlam = None\nseed = None\nlams = [0.0, 0.5]',
        "# Parameters\nlamda = 0.3\nseed = 1\nlams = [0.0, 0.5]\nx = f(1)\n",
        "params = load_params(profile)",
    ]
    declared, injected = injected_parameters(history)
    assert declared == {"profile": "smoke", "lam": None, "seed": None, "lams": [0.0, 0.5]}
    assert injected == {"lamda": 0.3, "seed": 1, "lams": [0.0, 0.5], "x": "f(1)"}
    assert injected_parameters(history[:2] + history[3:]) == ({}, {})  # not run by papermill


def _papermill(notebook: str, out: Path, env: dict[str, str], *params: str) -> subprocess.CompletedProcess:
    """The papermill command line, as a user types it (``-p name value`` pairs in ``params``)."""
    args = [a for i in range(0, len(params), 2) for a in ("-p", params[i], params[i + 1])]
    return subprocess.run(
        [str(Path(sys.executable).parent / "papermill"), f"notebooks/{notebook}.ipynb", str(out), *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "notebook, params, message",
    [
        (
            "03_rrd_va",
            ("lamda", "0.3"),
            "papermill -p lamda: not a parameter of this notebook (its parameters: K, corpus",
        ),
        ("03_rrd_va", ("seed", "1.7"), "papermill -p seed: expected an integer, got 1.7"),
        ("03_rrd_va", ("seed", "abc"), "papermill -p seed: expected an integer, got 'abc'"),
        ("05_llm_geli", ("seed", "1.7"), "papermill -p seed: expected an integer, got 1.7"),
        ("03_rrd_va", ("K", "3.5"), "papermill -p K: expected an integer, got 3.5"),
        ("03_rrd_va", ("lam", "1.5"), "override reward.lam: must be in [0, 1], got 1.5 (given as a notebook parameter"),
    ],
)
def test_bad_papermill_parameters_stop_the_notebook(tmp_path: Path, notebook, params, message):
    proc = _papermill(notebook, tmp_path / "out.ipynb", {"GELI_RESULTS": str(tmp_path / "results")}, *params)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
    assert "smoke.yaml:" not in proc.stderr  # the file is not blamed for a value it does not hold
    assert not (tmp_path / "results" / "smoke" / "tables").exists()


def test_a_papermill_value_must_have_the_type_of_the_study_parameter_it_is_named_after():
    check_injected_types({"seed": 2, "K": None, "lam": 1, "lams": [0.5], "profile": "cpu"})
    with pytest.raises(ParamError, match=r"papermill -p seed: expected an integer, got 1\.7"):
        check_injected_types({"seed": 1.7})
    with pytest.raises(ParamError, match=r"papermill -p backend: expected a string, got 3"):
        check_injected_types({"backend": 3})


@pytest.mark.slow
def test_an_adhoc_papermill_run_never_touches_the_studys_results(tmp_path: Path):
    """The README's own example, `papermill notebooks/03_rrd_va.ipynb out.ipynb -p lam 0.1 -p seed 0`."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    cache.mkdir()
    for entry in cache_dir().iterdir():  # reuse the encoded features and models, not saved reward functions
        if entry.name != "reward_functions":
            (cache / entry.name).symlink_to(entry)
    study = results / "smoke" / "tables" / "reward_functions" / "geli.csv"
    study.parent.mkdir(parents=True)
    study.write_text("method,seed\nthe study's own rows,0\n")
    proc = _papermill(
        "03_rrd_va",
        tmp_path / "out.ipynb",
        {"GELI_RESULTS": str(results), "GELI_CACHE": str(cache)},
        "lam",
        "0.1",
        "seed",
        "0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert study.read_text() == "method,seed\nthe study's own rows,0\n"
    adhoc = results / "smoke" / "adhoc" / "lam=0.1_seed=0"  # named by what was typed
    rows = pd.read_csv(adhoc / "tables" / "reward_functions" / "geli.csv")
    assert set(rows["seed"]) == {0}
    assert sorted(p.name for p in (results / "smoke").iterdir()) == ["adhoc", "tables"]
    # its saved reward functions too: under the ad-hoc key, never listed as the study's (07 and 08 read those)
    saved = cache / "reward_functions" / "smoke" / "simulated"
    assert sorted(p.name for p in saved.iterdir()) == ["adhoc"]
    assert (saved / "adhoc" / "lam=0.1_seed=0" / "geli" / "seed0" / "reward.json").is_file()


def test_a_parameter_of_the_notebook_alone_also_gets_its_own_key(tmp_path: Path):
    """Under papermill the key is named by the -p values that differ from the notebook's defaults,
    also those that never reach load_params (06's `lams`); the runner's own three keep the study's key."""
    import nbformat
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell('profile = "smoke"\ncorpus = "simulated"\ndata_path = ""\nlams = [0.0, 0.5]')
    cell.metadata["tags"] = ["parameters"]
    out = tmp_path / "key.txt"
    nb.cells = [
        cell,
        nbformat.v4.new_code_cell(
            f"from geli_lib.core.params import load_params\nfrom pathlib import Path\n"
            f"Path({str(out)!r}).write_text(load_params(profile, corpus=corpus, data_path=data_path).results_key)"
        ),
    ]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    for params, key in (
        ({"profile": "smoke", "corpus": "simulated", "data_path": ""}, "smoke"),
        ({"lams": [0.5]}, "smoke/adhoc/lams=0.5"),
        ({"lams": [0.0, 0.5]}, "smoke"),
    ):
        pm.execute_notebook(
            str(tmp_path / "nb.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters=params,
            kernel_name="python3",
            cwd=str(REPO_ROOT),
            progress_bar=False,
        )
        assert out.read_text() == key, params


SLURM_OK = (
    "compute:\n  scheduler: slurm\n  slurm:\n    queue: gpu\n    cores: 4\n    memory: 16GB\n    walltime: '02:00:00'\n"
)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            SLURM_OK.replace("    walltime: '02:00:00'\n", ""),
            "compute.slurm.walltime: is required with scheduler: slurm",
        ),
        (SLURM_OK.replace("    queue: gpu\n", ""), "compute.slurm.queue: is required with scheduler: slurm"),
        (SLURM_OK.replace("'02:00:00'", "2h"), "compute.slurm.walltime: must be HH:MM:SS or D-HH:MM:SS, got '2h'"),
        (SLURM_OK.replace("16GB", "lots"), "compute.slurm.memory: must be an amount such as 16GB"),
        (SLURM_OK + "    gpus: 2\n", "compute.slurm.gpus: must be 0 or 1"),
        (SLURM_OK + "device: cuda\n", "compute.slurm.gpus: must be 1 with device cuda"),
        (
            "compute:\n  scheduler: 127.0.0.1:8786\n",
            "compute.scheduler: must be serial, local, slurm or a scheduler "
            "address tcp://HOST:PORT, got '127.0.0.1:8786'",
        ),
        (
            "device: cuda\ncompute:\n  scheduler: local\n",
            "compute.workers: must be 1 with device cuda and scheduler local",
        ),
        ("device: cuda\nrl:\n  workers: 2\n  threads: 1\n", "rl.workers: must be 1 with device cuda"),
        ("rl:\n  workers: 2\n", "rl.threads: must be >= 1 with workers > 1"),
        ("rl:\n  workers: 0\n", "rl.workers: must be >= 1, got 0"),
    ],
)
def test_bad_compute_sections_name_file_and_setting(tmp_path: Path, text, message):
    (tmp_path / "smoke.yaml").write_text(text)
    with pytest.raises(ParamError) as e:
        load_params("smoke", params_dir=tmp_path)
    assert str(tmp_path / "smoke.yaml") in str(e.value) and message in str(e.value)


def test_compute_section_loads_and_makes_no_run_ad_hoc(tmp_path: Path, monkeypatch):
    (tmp_path / "smoke.yaml").write_text(SLURM_OK + "    gpus: 1\n    jobs: 4\n    directives: [--account=geli]\n")
    c = load_params("smoke", params_dir=tmp_path).compute
    assert (c.scheduler, c.slurm.gpus, c.slurm.jobs, c.slurm.directives) == ("slurm", 1, 4, ["--account=geli"])
    assert load_params("smoke").compute == ComputeParams()  # the default: serial, in the notebook's process
    # where the grid runs changes no result: the study's own results key, whatever the choice
    p = load_params("smoke", compute={"scheduler": "tcp://10.0.0.1:8786"})
    assert (p.compute.scheduler, p.results_key) == ("tcp://10.0.0.1:8786", "smoke")
    # what the runner's --scheduler / --workers become in the notebooks' kernels
    monkeypatch.setenv("GELI_SCHEDULER", "local")
    monkeypatch.setenv("GELI_WORKERS", "3")
    p = load_params("smoke")
    assert (p.compute.scheduler, p.compute.workers, p.adhoc) == ("local", 3, "")
    assert load_params("smoke", compute={"workers": 1}).compute.workers == 1  # an explicit override wins
    monkeypatch.setenv("GELI_WORKERS", "three")
    with pytest.raises(ParamError, match=r"\$GELI_WORKERS='three': compute.workers must be a whole number"):
        load_params("smoke")
    monkeypatch.setenv("GELI_WORKERS", "0")
    with pytest.raises(ParamError, match=r"override compute.workers: must be >= 1.*\$GELI_SCHEDULER / \$GELI_WORKERS"):
        load_params("smoke")


def test_a_float_in_exponent_notation_without_a_dot_is_a_number():
    """YAML 1.1 reads ``1e-3`` as a string; a learning rate is written that way more often than not."""
    assert load_params("smoke", rl={"lr": "1e-3"}).rl.lr == 1e-3
    assert load_params("smoke", rl={"kl_coef": "2E+1"}).rl.kl_coef == 20.0
    with pytest.raises(ParamError, match="expected a number, got '1e-3x'"):
        load_params("smoke", rl={"lr": "1e-3x"})


def test_the_profiles_cite_sections_of_the_rl_record_that_exist():
    """`params/cpu.yaml` and the README justify RL settings by sections of `docs/rl_record.md`, cited by their
    bold titles; a renamed or dropped section must not leave a citation pointing nowhere."""
    import re

    root = Path(__file__).parents[1]
    record = (root / "docs" / "rl_record.md").read_text()
    titles = [" ".join(m.group(1).split()) for m in re.finditer(r"(?:^|\n\n)\*\*(.+?)\*\*", record, re.S)]
    cited = []
    for path in [root / "README.md", *sorted((root / "params").glob("*.yaml"))]:
        # a comment's citation may run over lines: drop the comment marks and join them
        text = " ".join(line.strip().lstrip("#").strip() for line in path.read_text().splitlines())
        for m in re.finditer(r"rl_record\.md`?,? \(?((?:\"[^\"]+\"(?:, )?)+)", text):
            cited += [(path.name, title) for title in re.findall(r"\"([^\"]+)\"", m.group(1))]
    assert len(cited) >= 10, cited
    for name, title in cited:
        assert any(t.startswith(title) for t in titles), f"{name} cites {title!r}, not a section of docs/rl_record.md"
