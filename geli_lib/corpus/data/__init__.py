"""Loaders into the canonical :class:`~geli_lib.corpus.schema.Corpus`, splits and reward-model pairs.

One function per source format (README, "Real data"):

- :func:`load_candor`  CANDOR's folder-per-conversation layout (also what the
  simulator writes, plus its ``simulation_truth.csv``);
- :func:`load_esconv`  the ESConv JSON list of sessions;
- :func:`load_soda`    SODA records (JSON list or JSONL);
- :func:`load_corpus`  what the notebooks call: picks the loader from
  :class:`~geli_lib.core.params.StudyParams`, simulates when asked, and caches the
  canonical corpus as parquet;
- :func:`split_conversations`  reproducible conversation-level splits;
- :func:`build_pairs`  one (history, response) pair per AI turn, in the
  authors' context format.

Bad input is handled strictly, because a loader that guesses produces wrong
numbers nobody sees. Two kinds of problem are distinguished:

*Errors* (always a :class:`DataError` whose message names the file, the row
and the column): a missing file or column, a value that is not a number, a
survey value outside ``DataParams.score_range`` (or ESConv's 1-5), turn
timestamps with ``stop < start`` or starts that run backwards in file order,
duplicate turn ids, a features file without any row of the listener, listener
frames whose time does not strictly increase, probabilities outside [0, 1], a
truth file that does not match the transcript, an unknown ESConv role name.
These mean the data or the reader is wrong, so skipping them would hide it.

A CANDOR transcript value that spans lines and holds a whole row of the file
(a stray ``"`` opened a quoted field that swallowed rows) is an error too, as
are text files that are not UTF-8, JSON ``true``/``false`` given as a rating,
and SODA speakers that are missing or empty.

*Bad conversations* (``DataParams.bad_conversations``): an empty conversation
(no turns, or no words in any turn), one with a single speaker or with more
than two, and one without a session score (no survey row for the listener, or a missing / NaN value). With
``"skip"`` the conversation is left out, counted in ``Corpus.skipped``
(reason -> ``["path: detail"]``) and a summary is logged; with ``"error"`` it is
a :class:`DataError`. Conversations whose score is missing by design (SODA) are
never skipped for it.

*Counted and reported* (kept, one warning per kind with the total, and a column
of ``conversations`` per kind, :data:`ANOMALY_COLUMNS`): turns whose utterance is
empty or only whitespace, conversations without a face in any listener frame,
and ``f0_mean`` values below 0 (missing-value codes such as -999999, read as
missing).

Speed: CANDOR at full scale (1,656 conversations, ~265k turns, ~3.3M feature
rows) is read with a pool of worker processes over chunks of conversations,
reading only the needed columns with pyarrow's CSV reader (no per-file pandas
frames) and parsing ``timedelta`` strings with a vectorised regular expression
(``pd.to_timedelta`` alone would take ~8 s on 3.3M strings). Measured on 2
cores with 2 workers: the gpu-profile simulated corpus (1,656 conversations,
265,939 turns, 3.1M feature rows, 567 MB) loads in ~8.5 s; a cached re-run of
:func:`load_corpus` reads the parquet in ~1.4 s.
"""

from geli_lib.corpus.data.candor import (
    FEATURES_OPTIONAL,
    FEATURES_REQUIRED,
    SURVEY_REQUIRED,
    TRANSCRIPT_REQUIRED,
    TRUTH_REQUIRED,
    UNIT_INTERVAL_COLUMNS,
    candor_folders,
    load_candor,
)
from geli_lib.corpus.data.common import ANOMALY_COLUMNS, Columns, DataError, merge_consecutive
from geli_lib.corpus.data.esconv import ESCONV_ROLES, esconv_score, load_esconv
from geli_lib.corpus.data.load import LOADER_VERSION, corpus_cache_folder, load_corpus
from geli_lib.corpus.data.pairs import SPLITS, build_pairs, split_conversations, split_sizes
from geli_lib.corpus.data.soda import load_soda

__all__ = [
    "ANOMALY_COLUMNS",
    "DataError",
    "Columns",
    "merge_consecutive",
    "TRANSCRIPT_REQUIRED",
    "SURVEY_REQUIRED",
    "FEATURES_REQUIRED",
    "FEATURES_OPTIONAL",
    "TRUTH_REQUIRED",
    "UNIT_INTERVAL_COLUMNS",
    "candor_folders",
    "load_candor",
    "ESCONV_ROLES",
    "esconv_score",
    "load_esconv",
    "load_soda",
    "LOADER_VERSION",
    "corpus_cache_folder",
    "load_corpus",
    "SPLITS",
    "split_sizes",
    "split_conversations",
    "build_pairs",
]
