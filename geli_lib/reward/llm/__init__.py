"""LLM-GELI (seed 003, Sec. 4): an LLM redistributes the session score over the AI's utterances.

The LLM reads the transcript (and, in the multimodal variant, the listener's
cues as text after each AI utterance) and the session score R_GE, and returns
a score per AI utterance (Sec. 4.1, eqs. 2-4); a text-only r_θ is then
distilled from those labels by MSE (eq. 5, method ``llm`` of
:mod:`geli_lib.reward.reward_model`). This module is the decomposition half:

**Prompt** (:func:`prompt_messages`). The paper's Sec. 4.1 prompt, word for
word, with the session score, then the transcript. Speaker A is the AI (the
utterances to score), Speaker B the listener whose survey is R_GE. Every AI
line carries a stable id ``A<turn_idx>`` (its index in the conversation), so an
answer can be checked turn by turn; the listener's lines carry no id. We add
one instruction the paper leaves implicit: answer with a JSON object mapping
ids to numbers, an utterance left out counting as 0. The text-only variant drops the paper's words about the
features ("with aligned multimodal conversational features", "and the
features"), nothing else.

**Chunks** (:func:`build_chunks`). A conversation whose transcript exceeds
``chunk_chars`` characters is cut, between turns and never inside one, into
consecutive chunks that each fit. Each chunk is one request and gets its
*share* of the score, R · (its AI turns) / (all AI turns): the share an even
split would give it, so the parts add up to R and no chunk is told the whole
conversation's score for a fraction of it. The LLM redistributes the share
within the chunk; the prompt says "part k of n". A single utterance longer than
``max_utterance_chars`` is cut (marked ``[…]``).

**Backends** (one interface, :class:`Backend`): ``openai`` (any
OpenAI-compatible chat-completions endpoint through the ``openai`` client;
base URL and model from parameters or ``GELI_LLM_BASE_URL`` /
``GELI_LLM_MODEL``, the key only from the environment variable named by
``api_key_env``, never stored), ``local`` (SmolLM2-135M-Instruct through
transformers, offline; its decoding is constrained by lm-format-enforcer to
the JSON object ``{"A1": <number>, "A3": <number>, …}`` with exactly the
chunk's ids in order and bounded numbers, :func:`answer_pattern`, so every
answer parses and scores every turn; :func:`constrained_decode` appends the
tokens the grammar forces without a forward pass) and ``reference`` (:class:`ReferenceDecomposer`, a
deterministic split of the score by the listener's affect: **not an LLM**, a
yardstick for the LLMs).

**Answers** (:func:`parse_scores`, :func:`validate_scores`). Parsed tolerantly
(code fences, text around the object, single quotes, trailing commas,
unquoted ids, ``id: value`` lines); ids must be AI turns of the chunk (others
are reported as unknown); values outside ±(score range width) are reported
and dropped. The prompt asks for the *salient* utterances, so in a chunk
whose answer parsed an AI turn without a (valid) value gets the label **0**
and ``annotated = False``: "no annotation" is App. J's third consistency
class, not a training mask. Only the turns of a **failed** chunk (no usable
answer after ``output_retries`` re-samples, each with a new seed) are NaN,
masked out of eq. 5; a failed chunk never stops a run. The sum constraint
(eq. 4): each chunk records the answer's deviation Σ values − share, and
``rescale`` (default ``shift``: the same amount added to each annotated turn;
or ``scale``; or ``none``) makes the chunk's labels sum to its share.

**Cache** (:class:`ResponseCache`). Every raw answer is stored under
``cache_dir('llm')`` keyed by (backend, model, messages, sampling
parameters incl. the seed), before it is parsed; the local backend's model id
names its decoding (free after a prefill, or constrained with the grammar's
version and number pattern), so an unconstrained answer is never reused as a
constrained one: a re-run, or a run resumed
after a crash, never pays for a call twice. Endpoint errors are retried with
exponential backoff, then raised with what to do (finished chunks stay
cached); at most ``concurrency`` requests run at once.

**Consistency** (:func:`consistency`, App. J): two samples at temperature 1;
agreement over the classes positive / zero-or-negative / no annotation, the
last from the ``annotated`` flag (what the LLM actually scored), not from the
label.
"""

from geli_lib.reward.llm.backends import (
    DECODER_VERSION,
    GRAMMAR_VERSION,
    NUMBER_DECIMALS,
    Backend,
    LLMEndpointError,
    LocalBackend,
    OpenAIBackend,
    ReferenceDecomposer,
    answer_max_chars,
    answer_pattern,
    constrained_decode,
    lmfe_tokenizer_data,
    make_backend,
    next_token,
    number_pattern,
)
from geli_lib.reward.llm.cache import ResponseCache
from geli_lib.reward.llm.decomposition import (
    PROMPT_VERSION,
    Decomposition,
    decompose,
    decompose_chunk,
    labels_for_pairs,
    sampling_params,
)
from geli_lib.reward.llm.distillation import (
    DISTILLED,
    distillation_data,
    distilled_name,
    distilled_spec,
    llm_conversations,
    unroll_table,
)
from geli_lib.reward.llm.parsing import (
    MAX_ANSWER_CHARS,
    MAX_DECODE_STARTS,
    MalformedOutput,
    Validated,
    parse_scores,
    validate_scores,
)
from geli_lib.reward.llm.prompt import (
    CUE_PREFIX,
    FORMAT_INSTRUCTION,
    PART_NOTE,
    PROMPT_MULTIMODAL,
    PROMPT_TEXT,
    VARIANTS,
    Chunk,
    LLMError,
    LLMInputError,
    build_chunks,
    conversation_chunks,
    listener_affect,
    listener_cues,
    prompt_messages,
    transcript_lines,
    turn_id,
)
from geli_lib.reward.llm.quality import CLASSES, consistency, decomposition_table, label_classes, quality

__all__ = [
    "VARIANTS",
    "PROMPT_MULTIMODAL",
    "PROMPT_TEXT",
    "FORMAT_INSTRUCTION",
    "PART_NOTE",
    "CUE_PREFIX",
    "LLMError",
    "LLMInputError",
    "Chunk",
    "turn_id",
    "transcript_lines",
    "conversation_chunks",
    "prompt_messages",
    "listener_cues",
    "listener_affect",
    "build_chunks",
    "MalformedOutput",
    "MAX_ANSWER_CHARS",
    "MAX_DECODE_STARTS",
    "parse_scores",
    "Validated",
    "validate_scores",
    "ResponseCache",
    "LLMEndpointError",
    "Backend",
    "ReferenceDecomposer",
    "GRAMMAR_VERSION",
    "DECODER_VERSION",
    "NUMBER_DECIMALS",
    "number_pattern",
    "answer_pattern",
    "answer_max_chars",
    "lmfe_tokenizer_data",
    "next_token",
    "constrained_decode",
    "LocalBackend",
    "OpenAIBackend",
    "make_backend",
    "PROMPT_VERSION",
    "sampling_params",
    "decompose_chunk",
    "Decomposition",
    "decompose",
    "labels_for_pairs",
    "CLASSES",
    "quality",
    "label_classes",
    "consistency",
    "decomposition_table",
    "DISTILLED",
    "distilled_name",
    "distilled_spec",
    "llm_conversations",
    "distillation_data",
    "unroll_table",
]
