"""Command line: ``python -m geli_lib run --profile smoke`` and friends (see README)."""

from __future__ import annotations

import argparse
import sys

from geli_lib.core.compute import NoGPUWorkers, SchedulerUnreachable
from geli_lib.core.models import offline_env, prepare_models
from geli_lib.core.params import ParamError
from geli_lib.core.runs import StageError, StageInterrupted, build_book, run_study


def main(argv: list[str] | None = None) -> int:
    offline_env()
    parser = argparse.ArgumentParser(prog="python -m geli_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the notebook chain of a profile, then build the book")
    run.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    run.add_argument("--force", action="store_true", help="re-run stages even when unchanged")
    run.add_argument("--only", nargs="+", help="run only these notebooks (names without .ipynb)")
    run.add_argument("--no-book", action="store_true", help="skip the book build")
    run.add_argument("--corpus", help="simulated | candor | esconv | soda (overrides the profile)")
    run.add_argument("--data-path", help="real data for --corpus")
    run.add_argument(
        "--scheduler",
        help="where the reward-function grids run: serial (in the notebook, the default), "
        "local (a Dask cluster of --workers processes), tcp://HOST:PORT (an existing Dask scheduler) "
        "or slurm (the profile's compute.slurm jobs); overrides the profile's compute.scheduler",
    )
    run.add_argument("--workers", type=int, help="worker processes of --scheduler local (compute.workers)")
    book = sub.add_parser("book", help="build the book from a profile's executed notebooks")
    book.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    sub.add_parser("models", help="prepare the offline models once (SmolLM2 from its GGUF)")
    args = parser.parse_args(argv)

    try:
        if args.command == "run":
            run_study(
                args.profile,
                force=args.force,
                only=args.only,
                book=not args.no_book,
                corpus=args.corpus,
                data_path=args.data_path,
                compute={"scheduler": args.scheduler, "workers": args.workers},
            )
        elif args.command == "book":
            build_book(args.profile)
        elif args.command == "models":
            for name, path in prepare_models().items():
                print(f"{name}: {path}")
    except StageInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 128 + e.signum  # the shell's convention for a run ended by a signal
    except (ParamError, StageError, SchedulerUnreachable, NoGPUWorkers) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
