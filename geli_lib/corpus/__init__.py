"""The corpus: its canonical form, the simulated corpus with a planted truth, the loaders, splits and pairs.

- ``schema``      the canonical :class:`Corpus` every loader produces
- ``simulation``  the simulated corpus, written in CANDOR's layout, with the planted turn rewards
- ``data``        the CANDOR / ESConv / SODA loaders, the cached entry point, the split and the pairs
"""

from geli_lib.corpus import data, schema, simulation
from geli_lib.corpus.data import build_pairs, load_candor, load_corpus, split_conversations
from geli_lib.corpus.schema import Corpus

__all__ = [
    "Corpus",
    "build_pairs",
    "data",
    "load_candor",
    "load_corpus",
    "schema",
    "simulation",
    "split_conversations",
]
