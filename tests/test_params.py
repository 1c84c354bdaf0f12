"""Profiles load into validated dataclasses; bad values name the file and field."""

from pathlib import Path

import pytest

from geli_lib.params import (PROFILES, ParamError, SimulationParams, StudyParams, field_docs,
                             load_params, to_dict)


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


@pytest.mark.parametrize("override, field", [
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
])
def test_bad_values_name_file_and_field(override, field):
    with pytest.raises(ParamError) as e:
        load_params("smoke", **override)
    msg = str(e.value)
    assert "smoke.yaml" in msg and field in msg


def test_bad_files(tmp_path: Path):
    with pytest.raises(ParamError, match="not found"):
        load_params("cpu", params_dir=tmp_path)
    (tmp_path / "cpu.yaml").write_text("simulation: [1, 2\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        load_params("cpu", params_dir=tmp_path)
    with pytest.raises(ParamError, match="unknown"):
        load_params("huge")


def test_every_field_has_a_docstring():
    for cls in (StudyParams, SimulationParams):
        docs = field_docs(cls)
        missing = [f for f in to_dict(cls()) if f not in docs]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
