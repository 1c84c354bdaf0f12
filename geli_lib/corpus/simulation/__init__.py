"""The simulated corpus: CANDOR-shaped video-call conversations with a planted turn-level truth.

CANDOR cannot be shipped, so the study's default data come from this simulator.
It writes the CANDOR file layout (README, "Real data") so the real loader is exercised,
plus one file real CANDOR lacks, ``simulation_truth.csv``: the true reward of every
AI turn. That truth is what no paper could measure: how close a decomposition of
the session score comes to each turn's real contribution.

The generative model, read top to bottom (every number below is a named constant
or a :class:`~geli_lib.core.params.SimulationParams` knob):

1. **Who talks.** Two participants alternate turns. The first speaker is the
   *User* (the listener whose survey score is R_GE); the other is the *AI*
   (the authors' convention). A conversation has
   ``max(min_turns, round(N(mean_turns, turns_sd * mean_turns)))`` turns.

2. **The listener.** A baseline mood ``m ~ N(listener_mood_mean, listener_mood_sd)``
   (logit units) shifts the pleasantness of *every* turn: session-level variance
   that no turn explains. Tastes: offsets ``N(0, TASTE_SD)`` on a few acts
   (this listener loves humour, that one dislikes self-disclosure).

3. **The AI persona.** Habits ``π ~ Dirichlet(HABIT_CONCENTRATION * HABIT_PRIOR)``
   over the social acts in :data:`ACTS`, and a skill ``κ ~ Beta(SKILL_A, SKILL_B)``:
   at each AI turn, with probability κ the act is chosen for the context (a softmax
   over act value + context fit), otherwise from the habits. Some AIs are good and
   some poor: between-conversation variance that the turns *do* explain.

4. **What is said.** The User talks about a topic (:data:`TOPICS`, each with its
   own nouns, activities, named things and good and bad events), sometimes
   switching. User turns are greetings, stories, statements, answers, questions
   or short reactions, each with a valence (good news, bad news or neutral)
   whose odds follow the mood. The AI answers with an act rendered from several
   templates × topic words × openers ("um", "you know"), so utterances rarely
   repeat exactly (except the *repetition* act, which repeats an earlier AI line).

5. **The true reward.** For AI turn t, a latent quality
   ``q_t = ACT_VALUE[act] + fit_t + taste[act] + N(0, turn_noise)`` where the
   context fit ``fit_t`` (:func:`context_fit`) rewards empathy after bad news,
   humour in a relaxed mood (and punishes it after bad news), topical questions,
   answering when asked, a backchannel after a long story; it punishes ignoring a
   question, interrogating, talking about oneself after a disclosure. The
   listener's pleasantness is ``p_t = sigmoid(m + q_t)`` and the true reward is
   ``r_t = 100 p_t`` on the 0-100 score scale.

6. **The session score** (CANDOR's ``overall_affect``, 1-10):
   ``clip(round((mean_t r_t + N(0, score_noise)) / 10), 1, 10)``: the score is
   the *mean* of the AI turns' rewards, plus noise. Other survey items are the
   score plus noise.

   **The truth–length relation this plants.** A turn's true reward depends on
   what was said and to whom, never on how long the conversation is: the
   score is the fixed-T mean form R ≈ (T̄/T)·Σ_t (r_t/T̄) for any unit T̄ (the
   GELI authors' convention, :func:`geli_lib.reward.losses.session_estimate`), so a
   per-turn model r_θ(s_t, a_t) can learn r_t / T̄ exactly. (Simulator
   version 1 planted r_t = 100 p_t / T, each turn's share of a sum, whose scale
   follows the conversation's length, which no per-turn model sees: it put a
   floor under L_GE and made pooled correlations meaningless.) Length still
   correlates with nothing here: ``n_turns`` is drawn independently of mood,
   persona and acts.

7. **Timing.** Turn duration = words / speaking rate (≈2.5 words/s) with jitter;
   short gaps between turns; no overlaps.

8. **The listener's face and body, per second.** A reaction level ``s(t) ∈ [-1, 1]``
   follows the turn that started ``reaction_lag`` seconds earlier: ``2 p_t - 1``
   after an AI turn, the listener's own story's valence while they speak.
   Emotion logits (neutral high at baseline) get ``face_coupling · s`` on
   happiness (and a smaller, opposite pull on sadness, anger, disgust) plus
   smoothed noise of SD ``face_noise``; a softmax gives the eight
   ``prob_face_*``. Smiles, gaze and nods are Bernoulli draws from noisy
   reward-driven propensities; prosody shifts a little with ``s``. A fraction
   ``frame_dropout`` of seconds has no face. So visual affect is a *noisy* proxy
   of the truth, as in life. The AI participant's signals are plausible and
   unrelated to the truth.

9. **Wording sentiment.** An AI utterance often carries a tone phrase ("that's
   great", "ugh"). With probability ``sentiment_coupling`` its polarity agrees
   with the turn's quality; otherwise it is random. Empathy itself uses negative
   words ("sorry to hear that") and a dismissive reply can say "great, whatever",
   so language sentiment is a weak proxy, as the papers found.

Every conversation draws from ``np.random.default_rng([seed, index, stream])``
(one stream per stage), so files are byte-identical for the same knobs whatever
the number of workers, and changing a signal knob (``face_noise``, ``smile_noise``,
``sentiment_coupling``, ...) leaves the dialogue's acts and its truth unchanged:
paired comparisons across knobs are fair.

Files per conversation ``<out_dir>/<convo_id>/`` (CANDOR layout):
``transcription/transcript_{cliffhanger,audiophile,backbiter}.csv``, ``survey.csv``,
``audio_video_features.csv`` (both participants, sorted by user_id then second),
``metadata.json`` (participants in speaking order: the User first) and
``simulation_truth.csv`` (one row per cliffhanger turn: ``turn_id, speaker, role,
start, stop, act, topic, true_reward, fit`` then ``pleasantness`` p_t, the User's
``valence`` and the AI wording's ``tone``). ``<out_dir>/_COMPLETE.json`` is written
last: a folder without it is an unfinished simulation.
"""

from geli_lib.corpus.simulation.acts import (
    ACT_VALUE,
    ACTS,
    BAD_ACTS,
    HABIT_CONCENTRATION,
    HABIT_PRIOR,
    LONG_TURN_WORDS,
    QUESTION_ACTS,
    SKILL_A,
    SKILL_B,
    SKILL_TEMPERATURE,
    TASTE_ACTS,
    TASTE_SD,
    USER_KINDS,
    context_fit,
)
from geli_lib.corpus.simulation.common import (
    EXPRESSIVENESS_SD,
    FACE_BASE,
    FACE_PULL,
    NOISE_RHO,
    NOISE_TAPS,
    WORDS_PER_SECOND,
    split_sentences,
)
from geli_lib.corpus.simulation.conversation import SIMULATOR_VERSION, simulate_conversation
from geli_lib.corpus.simulation.corpus import MARKER, is_complete, simulate_corpus, write_conversation
from geli_lib.corpus.simulation.dialogue import (
    Dialogue,
    Listener,
    Persona,
    ai_utterance,
    draw_listener,
    draw_persona,
    n_turns_for,
    simulate_dialogue,
    turn_times,
    user_utterance,
)
from geli_lib.corpus.simulation.render import audiophile_rows, backchannel_columns, csv_bytes
from geli_lib.corpus.simulation.signals import participant_signals, reaction_levels, speaking_mask
from geli_lib.corpus.simulation.words import (
    AI_TEMPLATES,
    BACKCHANNEL_WORDS,
    CODA,
    OPENERS,
    TIMEREFS,
    TONE,
    TONE_GOOD_Q,
    TONE_RATE,
    TOPIC_NAMES,
    TOPICS,
    USER_TEMPLATES,
)

__all__ = [
    "ACTS",
    "ACT_VALUE",
    "HABIT_PRIOR",
    "HABIT_CONCENTRATION",
    "SKILL_A",
    "SKILL_B",
    "SKILL_TEMPERATURE",
    "TASTE_ACTS",
    "TASTE_SD",
    "USER_KINDS",
    "LONG_TURN_WORDS",
    "QUESTION_ACTS",
    "BAD_ACTS",
    "context_fit",
    "TOPICS",
    "TOPIC_NAMES",
    "TIMEREFS",
    "OPENERS",
    "CODA",
    "USER_TEMPLATES",
    "AI_TEMPLATES",
    "TONE",
    "TONE_RATE",
    "TONE_GOOD_Q",
    "BACKCHANNEL_WORDS",
    "FACE_BASE",
    "FACE_PULL",
    "EXPRESSIVENESS_SD",
    "NOISE_RHO",
    "NOISE_TAPS",
    "WORDS_PER_SECOND",
    "split_sentences",
    "Dialogue",
    "Listener",
    "Persona",
    "n_turns_for",
    "draw_listener",
    "draw_persona",
    "user_utterance",
    "ai_utterance",
    "simulate_dialogue",
    "turn_times",
    "participant_signals",
    "reaction_levels",
    "speaking_mask",
    "csv_bytes",
    "audiophile_rows",
    "backchannel_columns",
    "SIMULATOR_VERSION",
    "simulate_conversation",
    "MARKER",
    "write_conversation",
    "is_complete",
    "simulate_corpus",
]
