"""geli_lib: the library behind the GELI / LLM-GELI study notebooks.

One sub-package per link of the method's chain, in the order the chain runs
(each imports only from the ones above it):

- ``core``       infrastructure: params, io (atomic writes, caches), runs (the runner), compute (Dask), models, browser
- ``corpus``     schema (the canonical form), simulation (the planted truth), data (loaders, splits, pairs)
- ``listener``   face, prosody and features: the listener's per-second signals aggregated per turn
- ``reward``     losses (GE, LI, GELI), reward_model (r_θ), llm (LLM-GELI), evaluation and experiments (Table 1)
- ``alignment``  rl (PPO + LoRA), generation_eval and human_eval (the adapted agents)
- ``figures``    plots shared by notebooks and the book (they draw from every link, so they sit beside them)
"""

__version__ = "0.1.0"
