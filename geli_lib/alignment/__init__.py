"""Alignment: RL of the policy against a reward function, and the evaluation of the adapted agents.

- ``rl``               PPO (or RLOO / GRPO) with LoRA against r_θ (GELI eq. 1), curves, generations
- ``best_of_n``        the training-free control: best-of-n of the base policy under each reward
- ``generation_eval``  automatic scores of the generations: cross-reward table, repetition, distinct-n
- ``human_eval``       the human-evaluation kit (blinded form) and its analysis (Krippendorff's α)
"""

from geli_lib.alignment import best_of_n, generation_eval, human_eval, rl

__all__ = ["best_of_n", "generation_eval", "human_eval", "rl"]
