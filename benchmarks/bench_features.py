"""Benchmark: listener feature extraction speed (issue 4).

Target: one hour of listener video processed in under 10 minutes on 2 cores,
i.e. a real-time factor of at least 6 with 2 workers. Prints

- frames/s of the full visual pipeline (face tracking, smile, gaze, FER
  mini-Xception; decoding included) at 640x480 when *every* frame is analysed,
  one process, one thread;
- the real-time factor (video seconds per wall second) at the default
  sampling rate, one process, and with 2 worker processes through the same
  :func:`geli_lib.features.extract_folder` the command line uses (audio
  included), and the projected wall time for one hour of video;
- the prosody real-time factor alone (Praat f0, intensity, jitter; log energy).

The clip is the smiling astronaut moving (nods, shakes, zoom) at 25 fps.
Each line also gives the CPU seconds the work took (this process, or the
pool's children): on a shared machine the wall time depends on the other
load (the 1-minute load average is printed), while CPU time per video second
says what dedicated cores would do.
Run: ``python benchmarks/bench_features.py [--seconds 60] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from geli_lib import face, prosody
from geli_lib.features import extract_folder
from geli_lib.params import FeatureParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="length of each benchmark clip")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fps", type=float, default=FeatureParams().sample_fps, help="sampling rate")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="geli-bench-features-"))
    try:
        motions = [("still", "nod", "still", "shake")[i % 4] for i in range(args.seconds)]
        photo = face.sample_faces()["astronaut"]
        t0 = time.perf_counter()
        clip = face.write_face_clip(photo, tmp / "rec" / "l0.avi", motions)
        print(f"wrote a {args.seconds}-s 640x480 25-fps clip in {time.perf_counter() - t0:.1f} s")
        prosody.write_tone(tmp / "rec" / "l0.wav", (120.0, 200.0), args.seconds, harmonics=8, syllables_per_s=2)
        for k in range(1, args.workers):
            shutil.copy(clip, tmp / "rec" / f"l{k}.avi")
            shutil.copy(tmp / "rec" / "l0.wav", tmp / "rec" / f"l{k}.wav")
        face.fer_model()  # load once, outside the timings

        short = face.write_face_clip(photo, tmp / "every.avi", motions[:10])
        print(f"load average (1 min) on {os.cpu_count()} cores: {os.getloadavg()[0]:.1f}")
        t0, c0 = time.perf_counter(), time.process_time()
        _, info = face.analyse_video(short, sample_fps=25.0, detect_width=FeatureParams().detect_width)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"full visual pipeline, every frame: {info['samples'] / dt:.1f} frames/s wall, "
              f"{info['samples'] / cpu:.1f} frames/CPU-s at 640x480 "
              f"(1 process, 1 thread; {info['face_samples']}/{info['samples']} frames with a face)")

        t0, c0 = time.perf_counter(), time.process_time()
        _, info = face.analyse_video(clip, sample_fps=args.fps, detect_width=FeatureParams().detect_width)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"visual at {args.fps:g} fps sampling, 1 process: real-time factor {info['duration'] / dt:.1f}x wall, "
              f"{info['duration'] / cpu:.1f}x per CPU-s ({info['samples'] / dt:.1f} sampled frames/s)")

        t0 = time.perf_counter()
        prosody.prosody_per_second(prosody.read_sound(tmp / "rec" / "l0.wav"))
        dt = time.perf_counter() - t0
        print(f"prosody alone: real-time factor {args.seconds / dt:.0f}x")

        params = FeatureParams(sample_fps=args.fps, workers=args.workers)
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        report = extract_folder(tmp / "rec", tmp / "out", params, progress=False)
        dt = time.perf_counter() - t0
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
        assert report["counts"]["failed"] == 0, report["failed"]
        video_s = args.workers * args.seconds
        rtf = video_s / dt
        rtf_dedicated = args.workers * video_s / cpu if cpu > 0 else float("nan")
        samples = sum(json.loads(p.read_text())["samples"] for p in (tmp / "out").glob("l*.json"))
        print(f"extract_folder, {args.workers} workers, {args.workers} x {args.seconds} s video+audio: "
              f"{dt:.1f} s wall ({samples / dt:.1f} sampled 640x480 frames/s on {args.workers} cores), "
              f"real-time factor {rtf:.1f}x -> 1 h of video in {3600 / rtf / 60:.1f} min (target < 10 min)")
        print(f"  workers' CPU time {cpu:.1f} s: on {args.workers} dedicated cores that is a real-time factor "
              f"{rtf_dedicated:.1f}x -> 1 h of video in {3600 / rtf_dedicated / 60:.1f} min "
              f"(incl. worker start-up: importing torch, loading the network)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
