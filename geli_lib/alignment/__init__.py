"""Alignment: RL of the policy against a reward function, and the evaluation of the adapted agents.

- ``rl``               PPO (or RLOO / GRPO) with LoRA against r_θ (GELI eq. 1), curves, generations
- ``generation_eval``  automatic scores of the generations: cross-reward table, repetition, distinct-n
- ``human_eval``       the human-evaluation kit (blinded form) and its analysis (Krippendorff's α)
"""

from geli_lib.alignment import generation_eval, human_eval, rl

__all__ = ["generation_eval", "human_eval", "rl"]
