"""Benchmark: listener feature extraction speed (issues 4 and 14).

Target: one hour of listener video processed in under 10 minutes on 2 cores,
i.e. a real-time factor of at least 6 with 2 workers. Prints

- frames/s of the full visual pipeline (face tracking, smile, gaze, FER
  mini-Xception; decoding included) at 640x480 when *every* frame is analysed,
  one process, one thread;
- the real-time factor (video seconds per wall second) of the visual part at
  the default sampling rate, one process; the prosody real-time factor alone
  (Praat f0, intensity, jitter; log energy);
- the real-time factor of :func:`geli_lib.listener.features.extract_folder` (what the
  command line runs, audio included) on the same recordings three ways:
  serially in this process, on a local Dask cluster of ``--workers``
  processes (cluster start-up included, as a user pays it), and on a real
  ``dask scheduler`` with ``--workers`` ``dask worker`` processes on loopback
  (already running, as on a cluster); the projected wall time for one hour;
- Dask's per-task overhead: one no-op task's round trip, and no-op tasks
  submitted at once, on the local cluster and the loopback scheduler.

The clip is the smiling astronaut moving (nods, shakes, zoom) at 25 fps.
On a shared machine the wall time depends on the other load (the 1-minute
load average is printed), so some lines also give CPU time: CPU time per
video second says what dedicated cores would do.
Run: ``python benchmarks/bench_features.py [--seconds 60] [--workers 2] [--recordings 4]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from distributed import Client

from geli_lib.core.compute import dask_client, loopback_cluster
from geli_lib.core.params import FeatureParams
from geli_lib.listener import face, prosody
from geli_lib.listener.features import extract_folder


def extract(recordings: Path, out: Path, params: FeatureParams, scheduler: str | None = None) -> None:
    """One :func:`extract_folder` run that must extract every recording."""
    report = extract_folder(recordings, out, params, progress=False, scheduler=scheduler)
    assert report["counts"]["failed"] == 0 and report["counts"]["skipped"] == 0, report


def noop(i: int) -> int:
    """A task that does nothing: what remains of its wall time is Dask's overhead."""
    return i


def overhead(where: str, client: Client, n_tasks: int) -> str:
    """Dask's per-task overhead on ``client``'s cluster: one task's round trip, and ``n_tasks`` at once."""
    client.gather(client.map(noop, range(2 * len(client.scheduler_info()["workers"])), pure=False))  # warm up
    t0 = time.perf_counter()
    for i in range(20):
        client.submit(noop, i, pure=False).result()
    round_trip = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    client.gather(client.map(noop, range(n_tasks), pure=False))
    each = (time.perf_counter() - t0) / n_tasks
    return (
        f"  {where}: {round_trip * 1e3:.1f} ms for one task's round trip; {each * 1e3:.2f} ms per task "
        f"when {n_tasks} are submitted at once"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="length of each benchmark clip")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (local cluster and loopback)")
    parser.add_argument("--recordings", type=int, default=4, help="recordings extracted by each of the three paths")
    parser.add_argument("--tasks", type=int, default=200, help="no-op tasks timed for the per-task overhead")
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
        for k in range(1, args.recordings):
            shutil.copy(clip, tmp / "rec" / f"l{k}.avi")
            shutil.copy(tmp / "rec" / "l0.wav", tmp / "rec" / f"l{k}.wav")
        face.fer_model()  # load once, outside the timings

        short = face.write_face_clip(photo, tmp / "every.avi", motions[:10])
        print(f"load average (1 min) on {os.cpu_count()} cores: {os.getloadavg()[0]:.1f}")
        t0, c0 = time.perf_counter(), time.process_time()
        _, info = face.analyse_video(short, sample_fps=25.0, detect_width=FeatureParams().detect_width)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"full visual pipeline, every frame: {info['samples'] / dt:.1f} frames/s wall, "
            f"{info['samples'] / cpu:.1f} frames/CPU-s at 640x480 "
            f"(1 process, 1 thread; {info['face_samples']}/{info['samples']} frames with a face)"
        )

        t0, c0 = time.perf_counter(), time.process_time()
        _, info = face.analyse_video(clip, sample_fps=args.fps, detect_width=FeatureParams().detect_width)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"visual at {args.fps:g} fps sampling, 1 process: real-time factor {info['duration'] / dt:.1f}x wall, "
            f"{info['duration'] / cpu:.1f}x per CPU-s ({info['samples'] / dt:.1f} sampled frames/s)"
        )

        t0 = time.perf_counter()
        prosody.prosody_per_second(prosody.read_sound(tmp / "rec" / "l0.wav"))
        dt = time.perf_counter() - t0
        print(f"prosody alone: real-time factor {args.seconds / dt:.0f}x")

        video_s = args.recordings * args.seconds
        print(
            f"{args.recordings} recordings of {args.seconds} s video+audio through extract_folder "
            "(what the command line runs):"
        )
        t0, c0 = time.perf_counter(), time.process_time()
        extract(tmp / "rec", tmp / "serial", FeatureParams(sample_fps=args.fps, workers=1))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"  serially in this process (--workers 1): {dt:.1f} s wall, real-time factor {video_s / dt:.1f}x "
            f"({video_s / cpu:.1f}x per CPU-s)"
        )

        params = FeatureParams(sample_fps=args.fps, workers=args.workers)
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        extract(tmp / "rec", tmp / "local", params)
        dt = time.perf_counter() - t0
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
        rtf, rtf_dedicated = video_s / dt, args.workers * video_s / cpu
        print(
            f"  local Dask cluster of {args.workers} workers (--workers {args.workers}): {dt:.1f} s wall, "
            f"real-time factor {rtf:.1f}x -> 1 h of video in {3600 / rtf / 60:.1f} min (target < 10 min)"
        )
        print(
            f"    workers' CPU time {cpu:.1f} s: on {args.workers} dedicated cores that is a real-time factor "
            f"{rtf_dedicated:.1f}x -> 1 h of video in {3600 / rtf_dedicated / 60:.1f} min "
            "(incl. cluster start-up and each worker importing torch and loading the networks)"
        )

        with loopback_cluster(tmp / "logs", args.workers) as cluster:
            t0 = time.perf_counter()
            extract(tmp / "rec", tmp / "loopback", params, scheduler=cluster.address)
            dt = time.perf_counter() - t0
            print(
                f"  loopback scheduler + {args.workers} `dask worker` processes (--scheduler): {dt:.1f} s wall, "
                f"real-time factor {video_s / dt:.1f}x (workers already running)"
            )
            with Client(cluster.address) as client:
                loopback_overhead = overhead("loopback scheduler", client, args.tasks)

        t0 = time.perf_counter()
        with dask_client(None, args.workers) as client:
            print(f"per-task overhead (no-op tasks; a {args.seconds}-s recording takes seconds):")
            print(f"  local cluster start-up: {time.perf_counter() - t0:.1f} s")
            print(overhead("local cluster", client, args.tasks))
        print(loopback_overhead)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
