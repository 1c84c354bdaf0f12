"""One profile: the sections of a study together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from geli_lib.core.params.alignment import EvalParams, RLParams
from geli_lib.core.params.base import ADHOC_DIR, CORPORA, PROFILES, REPO_ROOT, _check, _check_choices
from geli_lib.core.params.compute import ComputeParams
from geli_lib.core.params.corpus import DataParams, SimulationParams, SplitParams
from geli_lib.core.params.listener import FeatureParams
from geli_lib.core.params.reward import LLMParams, RewardParams


@dataclass
class StudyParams:
    """One profile: everything a run of the notebook chain needs."""

    profile: str = "smoke"
    """Profile name: smoke, cpu or gpu."""
    corpus: str = "simulated"
    """simulated | candor | esconv | soda."""
    data_path: str = ""
    """Folder (CANDOR), JSON file (ESConv) or JSON/JSONL file (SODA) of real data; empty for simulated."""
    seed: int = 0
    """Seed of single-seed steps."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of multi-seed tables (mean ± sd)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """torch device: cpu or cuda."""
    notebooks: list[str] = field(default_factory=lambda: ["00_data"])
    """Notebook chain run by ``make study``, in order (names without .ipynb)."""
    simulation: SimulationParams = field(default_factory=SimulationParams)
    """Simulated corpus knobs."""
    data: DataParams = field(default_factory=DataParams)
    """Loader conventions."""
    splits: SplitParams = field(default_factory=SplitParams)
    """Conversation splits."""
    reward: RewardParams = field(default_factory=RewardParams)
    """Reward model and reward-function training."""
    llm: LLMParams = field(default_factory=LLMParams)
    """LLM-GELI reward decomposition."""
    rl: RLParams = field(default_factory=RLParams)
    """RL adaptation of the policy (PPO + LoRA)."""
    eval: EvalParams = field(default_factory=EvalParams)
    """Evaluation of generations: automatic scores and the human-evaluation kit."""
    features: FeatureParams = field(default_factory=FeatureParams)
    """Listener feature extraction from recordings (video, audio)."""
    compute: ComputeParams = field(default_factory=ComputeParams)
    """Where the reward-function grid runs: in this process, or on a Dask cluster."""
    adhoc: str = ""
    """Set by :func:`load_params`, never in a profile: the parameters an override changed from the profile's file
    (other than ``corpus`` and ``data_path``), e.g. ``reward.lam=0.1``; empty for the study's own runs."""

    @property
    def study_key(self) -> str:
        """The study's own results for this profile and corpus: the profile for the default
        (simulated) corpus, ``<profile>/<corpus>`` for any other. An ad-hoc run reads earlier
        stages' tables from here (06 reads 02-05's) and writes under :attr:`results_key`."""
        return self.profile if self.corpus == "simulated" else f"{self.profile}/{self.corpus}"

    @property
    def results_key(self) -> str:
        """Where this run's results go under the results root: :attr:`study_key`, so runs on
        different corpora never overwrite each other; an ad-hoc run adds ``adhoc/<changed parameters>``."""
        return f"{self.study_key}/{ADHOC_DIR}/{self.adhoc}" if self.adhoc else self.study_key

    def validate(self) -> None:
        _check_choices(self)
        _check(self.profile in PROFILES, "profile", f"must be one of {PROFILES}", self.profile)
        _check(self.corpus in CORPORA, "corpus", f"must be one of {CORPORA}", self.corpus)
        _check(
            self.corpus == "simulated" or bool(self.data_path),
            "data_path",
            f"is required for corpus {self.corpus!r}",
            self.data_path,
        )
        _check(len(self.seeds) >= 1, "seeds", "must list at least one seed", self.seeds)
        c = self.compute
        # Every worker of a local cluster would see the same cuda:0; one GPU runs one task at a time.
        _check(
            not (self.device == "cuda" and c.scheduler == "local" and c.workers != 1),
            "compute.workers",
            "must be 1 with device cuda and scheduler local (the workers share one GPU)",
            c.workers,
        )
        _check(
            not (self.device == "cuda" and self.rl.workers != 1),
            "rl.workers",
            "must be 1 with device cuda (the adaptations would share one GPU)",
            self.rl.workers,
        )
        _check(
            not (self.device == "cuda" and c.scheduler == "slurm" and c.slurm.gpus == 0),
            "compute.slurm.gpus",
            "must be 1 with device cuda (the jobs need a GPU)",
            c.slurm.gpus,
        )
        for nb in self.notebooks:
            _check(
                (REPO_ROOT / "notebooks" / f"{nb}.ipynb").exists(),
                "notebooks",
                "names a notebook that does not exist",
                nb,
            )
