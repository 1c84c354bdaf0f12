"""Reward functions: the GE / LI / GELI losses, the reward model, LLM-GELI's decomposition, Table 1.

- ``losses``        GELI eqs. 2-4, 6, 9 (sum decomposition, RRD, IRCR, RUDDER, LI, GELI)
- ``reward_model``  r_θ: a frozen text encoder's features and the authors' head, trained by every method
- ``llm``           LLM-GELI: a session's score decomposed into turn labels by an LLM, then distilled
- ``evaluation``    Table 1's metrics (L_GE, Δ_LI, agreement with the planted truth)
- ``experiments``   the method × seed grids, Table 1, the sweeps, the saved reward functions
"""

from geli_lib.reward import evaluation, experiments, llm, losses, reward_model
from geli_lib.reward.evaluation import REWARD_TABLE_COLUMNS
from geli_lib.reward.experiments import saved_reward_functions

__all__ = [
    "REWARD_TABLE_COLUMNS",
    "evaluation",
    "experiments",
    "llm",
    "losses",
    "reward_model",
    "saved_reward_functions",
]
