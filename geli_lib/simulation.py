"""The simulated corpus: CANDOR-shaped video-call conversations with a planted turn-level truth.

CANDOR cannot be shipped, so the study's default data come from this simulator.
It writes the CANDOR file layout (README, "Real data") so the real loader is exercised,
plus one file real CANDOR lacks, ``simulation_truth.csv``: the true reward of every
AI turn. That truth is what no paper could measure: how close a decomposition of
the session score comes to each turn's real contribution.

The generative model, read top to bottom (every number below is a named constant
or a :class:`~geli_lib.params.SimulationParams` knob):

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
   GELI authors' convention, :func:`geli_lib.losses.session_estimate`), so a
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

from __future__ import annotations

import json
import math
import re
import shutil
import uuid
from bisect import bisect_right
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from geli_lib import params as params_mod
from geli_lib.io import atomic_write, progress_enabled, write_json
from geli_lib.params import ParamError, SimulationParams, to_dict
from geli_lib.schema import EMOTIONS, FACE_COLUMNS

#: Bump when the generative model changes, so an old simulation is not trusted.
SIMULATOR_VERSION = 2
MARKER = "_COMPLETE.json"

# --------------------------------------------------------------------------- #
# Social acts and their value                                                  #
# --------------------------------------------------------------------------- #

#: The AI's social acts.
ACTS: tuple[str, ...] = (
    "backchannel",
    "generic_question",
    "topical_question",
    "self_disclosure",
    "empathy",
    "humour",
    "agreement",
    "elaboration",
    "dismissive",
    "off_topic",
    "repetition",
)
#: Context-free value of each act (logit units): what it is worth on average.
ACT_VALUE: dict[str, float] = {
    "backchannel": 0.0,
    "generic_question": 0.1,
    "topical_question": 0.6,
    "self_disclosure": 0.4,
    "empathy": 0.3,
    "humour": 0.4,
    "agreement": 0.3,
    "elaboration": 0.5,
    "dismissive": -1.5,
    "off_topic": -1.0,
    "repetition": -1.2,
}
#: Mean of the persona's habit Dirichlet (sums to 1).
HABIT_PRIOR: dict[str, float] = {
    "backchannel": 0.13,
    "generic_question": 0.10,
    "topical_question": 0.12,
    "self_disclosure": 0.11,
    "empathy": 0.07,
    "humour": 0.08,
    "agreement": 0.10,
    "elaboration": 0.09,
    "dismissive": 0.08,
    "off_topic": 0.07,
    "repetition": 0.05,
}
HABIT_CONCENTRATION = 4.0  # < 1 per act (α ≈ 0.2-0.5): habits differ a lot between AIs
SKILL_A, SKILL_B = 0.7, 0.7  # skill ~ Beta: from careless to attentive
SKILL_TEMPERATURE = 0.35  # how sharply a skilled choice prefers the best-fitting act
TASTE_ACTS: tuple[str, ...] = (
    "humour",
    "self_disclosure",
    "generic_question",
    "topical_question",
    "backchannel",
    "empathy",
)
TASTE_SD = 0.4
#: User turn kinds ("acts" of the User in the truth file).
USER_KINDS: tuple[str, ...] = ("greeting", "story", "statement", "answer", "question", "reaction")
LONG_TURN_WORDS = 25  # a User turn this long is a story worth a "mhm"
QUESTION_ACTS = ("generic_question", "topical_question")
BAD_ACTS = ("dismissive", "off_topic", "repetition")


@lru_cache(maxsize=None)
def context_fit(act: str, user_kind: str, valence: int, long_turn: bool, last_ai: tuple[str, ...]) -> float:
    """Context-fit component of an AI act's quality (logit units).

    ``user_kind``, ``valence`` (-1 bad news, 0, +1 good news) and ``long_turn``
    describe the User turn just before; ``last_ai`` holds the AI's previous two
    acts (most recent last). Pure and cached: the table a teacher can read.
    """
    asked = user_kind in ("question", "greeting")
    fit = 0.0
    if act == "backchannel":
        fit += 0.4 if long_turn else -0.3  # "mhm" rewards a story, not a one-liner
        fit -= 0.5 if asked else 0.0  # and does not answer a question
    elif act == "generic_question":
        fit += -0.4 if asked else 0.1  # ignoring their question
        fit -= 0.4 if valence < 0 else 0.0  # changing the subject after bad news
    elif act == "topical_question":
        fit += -0.3 if asked else 0.5  # following their topic
    elif act == "self_disclosure":
        fit += 0.6 if asked else 0.1  # answering what they asked
        fit -= 0.6 if valence < 0 else 0.0  # making their bad news about yourself
        fit -= 0.3 if last_ai[-1:] == ("self_disclosure",) else 0.0  # hogging the floor
    elif act == "empathy":
        fit += {-1: 1.2, 0: -0.4, 1: -0.8}[valence]  # sympathy fits bad news only
    elif act == "humour":
        fit += {-1: -1.4, 0: 0.2, 1: 0.6}[valence]  # jokes fit a relaxed mood, not grief
    elif act == "agreement":
        fit += -0.2 if asked else (0.3 if user_kind in ("story", "statement") else 0.0)
    elif act == "elaboration":
        fit += 0.5 if asked else 0.2
    elif act == "dismissive":
        fit -= 0.6 if valence < 0 else 0.0
        fit -= 0.3 if asked else 0.0
    elif act == "off_topic":
        fit -= 0.5 if long_turn else 0.2  # worse after they opened up at length
    elif act == "repetition":
        fit -= 0.3 if "repetition" in last_ai else 0.0
    if act in QUESTION_ACTS and sum(a in QUESTION_ACTS for a in last_ai) == 2:
        fit -= 0.4  # a third question in a row is an interrogation
    return fit


@lru_cache(maxsize=None)
def _skilled_cdf(user_kind: str, valence: int, long_turn: bool, last_ai: tuple[str, ...]) -> tuple[float, ...]:
    """Cumulative probabilities of a skilled act choice: softmax of value + fit."""
    utility = np.array([ACT_VALUE[a] + context_fit(a, user_kind, valence, long_turn, last_ai) for a in ACTS])
    w = np.exp((utility - utility.max()) / SKILL_TEMPERATURE)
    return tuple(np.cumsum(w / w.sum()).tolist())


# --------------------------------------------------------------------------- #
# Words: topics and templates                                                  #
# --------------------------------------------------------------------------- #


def _topic(nouns: str, activities: str, names: str, good: str, bad: str, neutral: str) -> dict[str, tuple[str, ...]]:
    """One topic's vocabulary; each argument is a ``|``-separated list."""
    return {
        k: tuple(v.split("|"))
        for k, v in dict(noun=nouns, activity=activities, name=names, good=good, bad=bad, neutral=neutral).items()
    }


#: Topics: nouns, activities (gerund phrases), named places and things, and
#: first-person good, bad and neutral events (past tense) for User stories.
TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "travel": _topic(
        "flight|hotel|beach|road trip|backpack|train ride|museum|passport",
        "traveling abroad|backpacking|planning trips|camping by the coast",
        "Lisbon|Japan|Iceland|the Grand Canyon|Mexico City|Thailand|Barcelona",
        "we finally got to see the northern lights|I found this tiny cafe nobody knew about|"
        "we got upgraded to a room with a view",
        "our flight got cancelled twice|I lost my passport at the airport|it rained every single day we were there",
        "we took a train up the coast|I booked a trip for the spring|we spent a week visiting friends",
    ),
    "cooking": _topic(
        "sourdough|cast iron pan|recipe|spice rack|dinner party|lasagna|slow cooker",
        "baking bread|meal prepping|trying new recipes|cooking Thai food",
        "Trader Joe's|the farmers market|Julia Child|Gordon Ramsay",
        "my bread actually rose this time|everybody asked for the recipe|I nailed my grandma's dumplings",
        "I burned the whole dinner|the oven died on Thanksgiving|I cut my finger pretty badly",
        "I made a big pot of chili|we tried a new pasta recipe|I reorganized the whole kitchen",
    ),
    "pets": _topic(
        "puppy|cat|dog park|vet|leash|fish tank|litter box",
        "walking the dog|training our puppy|fostering kittens",
        "Biscuit|Luna|the humane society|Petco",
        "we adopted a rescue dog|our cat finally learned her name|the puppy slept through the night",
        "our dog got really sick|the cat ran away for two days|we had to put our old dog down",
        "we took the dog to the vet for a checkup|I bought a new cat tree|we walked the dog by the river",
    ),
    "work": _topic(
        "boss|deadline|meeting|office|promotion|commute|spreadsheet",
        "working from home|managing a team|job hunting",
        "Zoom|Slack|Amazon|the downtown office",
        "I got the promotion|my project finally launched|my boss gave me a shout out in front of everyone",
        "I got laid off|I had to work all weekend|my manager took credit for my work",
        "we moved to a new office|I started a new project|we had our quarterly review",
    ),
    "music": _topic(
        "guitar|concert|playlist|vinyl|band|piano|festival",
        "playing guitar|going to concerts|learning piano|singing in a choir",
        "Taylor Swift|Radiohead|Coachella|Spotify|the Beatles",
        "I got front row tickets|our band played its first gig|I finally learned that song",
        "the concert got cancelled|I broke a string in the middle of a song|someone stole my guitar",
        "I made a new playlist|I went to a jazz night|I started taking piano lessons",
    ),
    "sports": _topic(
        "game|team|marathon|gym|soccer ball|playoffs|coach",
        "running|playing pickup basketball|watching football|lifting weights",
        "the Lakers|the World Cup|the Yankees|the Super Bowl",
        "I ran my first half marathon|our team won the league|I hit a personal record",
        "I tore a ligament|we lost in overtime|I got cut from the team",
        "I joined a rec league|we watched the game at a bar|I switched gyms",
    ),
    "movies": _topic(
        "movie|sequel|theater|documentary|trailer|popcorn",
        "watching horror movies|binge watching shows|going to the cinema",
        "Netflix|Dune|Pixar|the Marvel movies|Christopher Nolan",
        "I saw the best movie of the year|we had a movie marathon|the sequel was actually better",
        "the ending was a total letdown|somebody spoiled the whole plot|the theater lost power halfway through",
        "we watched a documentary about whales|I rewatched an old favorite|we went to a matinee",
    ),
    "family": _topic(
        "parents|sister|brother|cousins|grandma|reunion|kids",
        "visiting my parents|spending time with the kids|planning the family reunion",
        "Thanksgiving|Christmas|my hometown|grandma's house",
        "my sister had a baby|we had the whole family together|my dad finally retired",
        "my grandma ended up in the hospital|my parents are getting divorced|we had a huge fight at dinner",
        "my cousins came to visit|we called my parents on Sunday|my brother helped me paint",
    ),
    "moving house": _topic(
        "apartment|boxes|landlord|neighborhood|lease|moving truck",
        "packing boxes|apartment hunting|painting the walls",
        "Craigslist|Zillow|Chicago|Denver|Austin",
        "we found a place with a huge yard|the neighbors turned out really friendly|the move went super smoothly",
        "the movers broke half our stuff|the landlord kept our deposit|the new place has mold",
        "we signed a new lease|I packed up the kitchen|we looked at a few apartments",
    ),
    "school": _topic(
        "exam|professor|thesis|class|campus|homework|semester",
        "studying for finals|taking night classes|writing my thesis",
        "Stanford|community college|the library|chemistry class",
        "I aced my exam|I got into grad school|I finally defended my thesis",
        "I failed my midterm|I missed the application deadline|my advisor hated my draft",
        "I signed up for a statistics class|I spent the day in the library|we had a group project",
    ),
    "weather": _topic(
        "snowstorm|heat wave|rain|thunderstorm|forecast|sunshine",
        "shoveling snow|sitting out on the porch|chasing storms",
        "Seattle|Florida|Minnesota|the Midwest",
        "we finally got a sunny weekend|it snowed just in time for the holidays|the fall colors were incredible",
        "the storm knocked out our power|our basement flooded|the heat was unbearable all week",
        "it was cloudy all week|we got a bit of rain|the temperature dropped overnight",
    ),
    "hobbies": _topic(
        "puzzle|garden|knitting needles|board game|camera|paint set",
        "gardening|knitting|doing jigsaw puzzles|painting watercolors|photography",
        "Etsy|Catan|the craft store|Instagram",
        "my tomatoes finally came in|I sold my first painting|we beat the board game on hard mode",
        "the squirrels ate my whole garden|I ruined the painting|my camera fell in the lake",
        "I started a new puzzle|I planted some herbs|I bought a cheap film camera",
    ),
    "books": _topic(
        "novel|book club|library card|bookstore|audiobook|author",
        "reading fantasy|listening to audiobooks|writing short stories",
        "Stephen King|Harry Potter|Goodreads|Brandon Sanderson",
        "I finished a thousand page book|my book club loved my pick|I met the author at a signing",
        "I lost the book halfway through|the ending made me so angry|my manuscript got rejected again",
        "I picked up a mystery novel|I joined a book club|I went to a used bookstore",
    ),
    "health": _topic(
        "doctor|workout|diet|sleep schedule|yoga class|checkup",
        "doing yoga|eating healthier|meditating|getting more sleep",
        "Peloton|the clinic|Weight Watchers|Headspace",
        "my blood pressure is finally normal|I lost twenty pounds|I've been sleeping way better",
        "I got really sick last week|I threw my back out|the doctor found something on my scan",
        "I had my annual checkup|I started walking in the mornings|I cut back on coffee",
    ),
    "tech": _topic(
        "laptop|phone|app|video game|computer|smart watch|router",
        "building computers|coding side projects|playing video games",
        "Apple|Python|the Switch|Linux|Android",
        "I built my own computer|my app got its first users|I finally fixed the wifi",
        "my laptop crashed and I lost everything|I cracked my phone screen|my account got hacked",
        "I updated my phone|I set up a new monitor|I tried a new note taking app",
    ),
    "restaurants": _topic(
        "restaurant|taco truck|brunch|coffee shop|pizza place|menu",
        "trying new restaurants|hunting for good tacos|going out for brunch",
        "Chipotle|Starbucks|the pizza place downtown|In-N-Out",
        "we found an amazing ramen place|the chef sent out free dessert|I finally got a reservation",
        "I got food poisoning|they messed up our order twice|my favorite place closed down",
        "we tried a new diner|I grabbed coffee with a friend|we ordered takeout",
    ),
    "cars": _topic(
        "car|engine|traffic|mechanic|driving test|truck",
        "fixing up an old car|driving cross country|learning stick shift",
        "Toyota|Tesla|the highway|Route 66",
        "I passed my driving test|I bought my first car|we drove the whole coast",
        "my car broke down on the highway|I got a speeding ticket|someone hit my parked car",
        "I took the car in for an oil change|we rented a van|I drove to see my aunt",
    ),
    "outdoors": _topic(
        "trail|tent|campfire|lake|mountain|kayak",
        "hiking|camping|kayaking|rock climbing",
        "Yosemite|the Appalachian Trail|Lake Tahoe|the Rockies",
        "we made it to the summit|we saw a bear from a safe distance|the sunrise over the lake was unreal",
        "we got lost on the trail|the tent leaked all night|I sprained my ankle on the hike",
        "we went for a short hike|I bought a new tent|we spent the afternoon by the lake",
    ),
    "money": _topic(
        "budget|rent|savings|stock market|credit card|paycheck",
        "saving for a house|budgeting|investing",
        "Robinhood|the bank|Venmo|Wall Street",
        "we paid off our student loans|we saved enough for a down payment|I got a raise",
        "my rent went up again|I lost money in crypto|I got a surprise medical bill",
        "I made a spreadsheet for our budget|I opened a savings account|I did my taxes",
    ),
    "dating": _topic(
        "date|boyfriend|girlfriend|wedding|anniversary|dating app",
        "online dating|planning a wedding|going on dates",
        "Tinder|Hinge|Valentine's Day|Paris",
        "I got engaged|we celebrated our anniversary|I met someone really great",
        "I got dumped|my date never showed up|we broke up after five years",
        "I went on a coffee date|we planned a weekend away|I helped a friend with her wedding",
    ),
    "volunteering": _topic(
        "food bank|shelter|community garden|fundraiser|neighbors",
        "volunteering|organizing a fundraiser|coaching little league",
        "the Red Cross|Habitat for Humanity|the local church",
        "we raised ten thousand dollars|the kids won their first game|the shelter found homes for every dog",
        "the fundraiser flopped|nobody showed up to help|the program lost its funding",
        "I helped at the food bank|we cleaned up the park|I signed up to tutor kids",
    ),
    "holidays": _topic(
        "holiday|gifts|party|decorations|costume|fireworks",
        "decorating the house|shopping for gifts|hosting parties",
        "Halloween|New Year's|the Fourth of July|Christmas",
        "I found the perfect gift|our party was a huge hit|the fireworks were amazing",
        "I forgot to buy gifts|the party got shut down|we spent the holiday stuck at the airport",
        "we put up the decorations|I wrapped presents all night|we had a quiet dinner",
    ),
    "the pandemic": _topic(
        "lockdown|mask|vaccine|quarantine|zoom call",
        "working remotely|baking during lockdown|social distancing",
        "the CDC|Zoom|2020",
        "I finally got vaccinated|we reunited with my parents|lockdown gave me time to learn guitar",
        "I got covid|I was stuck alone for months|my business almost went under",
        "we did a lot of zoom calls|I worked from my kitchen table|we stayed home mostly",
    ),
    "languages": _topic(
        "Spanish class|vocabulary|accent|flashcards|tutor",
        "learning Spanish|practicing French|studying Japanese",
        "Duolingo|Madrid|Quebec|Tokyo",
        "I had a whole conversation in Spanish|I hit a five hundred day streak|my tutor said my accent improved",
        "I completely froze up|I forgot everything after a month|people kept switching to English",
        "I started a French app|I watched a show in Spanish|I bought some flashcards",
    ),
}
TOPIC_NAMES: tuple[str, ...] = tuple(TOPICS)

TIMEREFS = (
    "last weekend",
    "yesterday",
    "a couple of years ago",
    "this morning",
    "over the holidays",
    "last summer",
    "back in college",
    "a few weeks ago",
    "on Friday",
    "last month",
)
OPENERS = (
    "",
    "",
    "",
    "",
    "um, ",
    "so ",
    "you know, ",
    "oh, ",
    "well, ",
    "yeah, ",
    "I mean, ",
    "hmm, ",
    "okay so ",
    "honestly, ",
)
CODA = {
    1: (
        "it was honestly the best part of my year.",
        "I was so happy.",
        "I still can't believe it.",
        "it made my whole week.",
        "it was such a good feeling.",
    ),
    -1: (
        "it was pretty rough.",
        "I'm still kind of upset about it.",
        "honestly it was a nightmare.",
        "I didn't sleep for days.",
        "it's been really hard.",
    ),
    0: ("so that was my week.", "nothing too exciting.", "it was fine.", "anyway.", ""),
}
USER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "greeting": (
        "hi, how's it going?",
        "hey! can you hear me okay?",
        "hello? oh hi, how are you?",
        "hi there, how's your day going?",
        "hey, nice to meet you. how are you?",
    ),
    "story": ("{timeref} {event}.",),
    "detail": (
        "it reminded me of {name}, weirdly.",
        "it was right after I started {activity}.",
        "the {noun} thing was a big part of it.",
        "my friend was there too.",
        "it all happened so fast.",
        "I had been {activity} for a while before that.",
    ),
    "statement": (
        "I've been {activity} a lot lately.",
        "I'm really into {activity} these days.",
        "honestly {name} is my favorite.",
        "for me it's all about the {noun}.",
        "I think about {activity} way too much.",
        "I've always wanted to try {activity}.",
    ),
    "answer": (
        "oh, probably {activity}.",
        "I'd say {name}, for sure.",
        "mostly {activity}, I guess.",
        "good question, I think the {noun}.",
        "not much, just {activity}.",
        "I'd have to say {name}.",
    ),
    "question": (
        "what about you, do you like {activity}?",
        "what do you think of {name}?",
        "what's your take on the whole {noun} thing?",
        "what do you do for fun?",
        "how about you?",
        "have you tried {activity}?",
    ),
    "reaction": ("oh. okay.", "um, sure.", "right.", "haha, okay.", "uh, yeah.", "hm.", "oh, I see."),
}
AI_TEMPLATES: dict[str, tuple[str, ...]] = {
    "backchannel": (
        "yeah.",
        "mhm.",
        "right.",
        "oh wow.",
        "totally.",
        "uh huh.",
        "I see.",
        "oh nice.",
        "hmm, yeah.",
        "oh really?",
        "no way.",
        "gotcha.",
    ),
    "generic_question": (
        "so what do you do for fun?",
        "how has your week been?",
        "what else is new with you?",
        "where are you from originally?",
        "what are you up to this weekend?",
        "do you have any plans for the summer?",
        "what do you do for work?",
        "so how's everything going?",
        "what's been the highlight of your week?",
    ),
    "topical_question": (
        "how long have you been {activity}?",
        "what's your favorite thing about {activity}?",
        "how do you feel about {name}?",
        "what got you into {activity}?",
        "how did the whole {noun} thing go?",
        "is {name} as good as people say?",
        "do you think you'll keep {activity}?",
        "what was the {noun} part like?",
    ),
    "self_disclosure": (
        "I actually spent a year {activity}, and I still think about {name}.",
        "my brother is really into {activity}, he talks about it all the time.",
        "I've never really gotten into {name}, but it's on my list.",
        "I got really into the {noun} thing last year.",
        "I had a whole {name} phase a long time ago.",
        "I used to be really into {activity} back in college.",
    ),
    "empathy": (
        "oh no, I'm sorry to hear that.",
        "that sounds really hard.",
        "that must have been so stressful.",
        "I can imagine how frustrating that was.",
        "that's a lot to deal with, I'm sorry.",
        "oh man, that sounds rough. how are you holding up?",
        "I'm sorry, that's really tough.",
    ),
    "humour": (
        "ha, sounds like the {noun} won that round.",
        "well, at least the {noun} didn't file a complaint.",
        "I'd blame the {noun}, personally.",
        "ha, {activity} is basically a personality trait at this point.",
        "classic {name}, honestly.",
        "so you're basically a professional at {activity} now, haha.",
    ),
    "agreement": (
        "yeah, I totally agree.",
        "exactly, {activity} is like that.",
        "oh for sure, {name} is the best.",
        "yeah, that makes a lot of sense.",
        "same here, honestly.",
        "right, the {noun} part really makes the difference.",
    ),
    "elaboration": (
        "I think {activity} is one of those things that takes a while to click.",
        "from what I've heard, {name} is really worth it.",
        "the thing with {activity} is you have to keep at it.",
        "I read that the {noun} side of it matters a lot, which makes sense.",
        "yeah, {activity} can be a really good way to unwind after work.",
    ),
    "dismissive": (
        "okay.",
        "sure, whatever.",
        "hm, I guess.",
        "if you say so.",
        "not really my thing.",
        "cool, anyway.",
        "yeah, no, I don't really care about {activity}.",
        "that's kind of boring, honestly.",
    ),
    "off_topic": (
        "anyway, have you ever tried {activity}?",
        "random, but I've been thinking about {name} a lot.",
        "so, totally unrelated, but do you like {name}?",
        "oh, that reminds me, I need to look into {activity}.",
        "by the way, what do you think about the {noun} thing?",
    ),
}
#: Tone phrases: the main carrier of an AI utterance's wording sentiment.
TONE = {
    1: ("that's great.", "I love that.", "how wonderful.", "awesome.", "that's so nice.", "amazing.", "great."),
    -1: ("ugh.", "that's awful.", "that sucks.", "honestly that's terrible.", "I hate that.", "what a pain.", "yikes."),
}
TONE_RATE = 0.6  # share of AI turns that carry a tone phrase
TONE_GOOD_Q = 0.35  # a turn counts as "good" for wording when q_t exceeds this
BACKCHANNEL_WORDS = ("mhm", "yeah", "right", "uh huh", "okay", "wow", "yeah yeah")

# --------------------------------------------------------------------------- #
# Face, body and prosody constants                                             #
# --------------------------------------------------------------------------- #

#: Baseline emotion logits (order of EMOTIONS): a resting face is mostly neutral.
FACE_BASE = np.array([-1.6, -2.6, -2.1, -2.3, -0.45, 1.2, -1.1, -1.6])
#: Pull of the reaction level s on each logit, as a multiple of face_coupling.
FACE_PULL = np.array([-0.2, 0.0, -0.15, 0.0, 1.0, 0.0, -0.35, 0.0])
EXPRESSIVENESS_SD = 0.4  # people differ in how much they smile
NOISE_RHO = 0.6  # per-second noise is smoothed: faces do not flicker independently
NOISE_TAPS = 8
WORDS_PER_SECOND = (2.1, 2.9)


# --------------------------------------------------------------------------- #
# Small helpers                                                                #
# --------------------------------------------------------------------------- #


class _Dice:
    """Uniform draws for the Python-level text loop, pre-drawn in blocks from one generator."""

    def __init__(self, rng: np.random.Generator, block: int = 4096):
        self._rng, self._block = rng, block
        self._u: list[float] = []
        self._i = 0

    def u(self) -> float:
        if self._i >= len(self._u):
            self._u, self._i = self._rng.random(self._block).tolist(), 0
        self._i += 1
        return self._u[self._i - 1]

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[int(self.u() * len(seq))]

    def chance(self, p: float) -> bool:
        return self.u() < p

    def draw_cdf(self, cdf: Sequence[float]) -> int:
        return min(bisect_right(cdf, self.u() * cdf[-1]), len(cdf) - 1)


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _hex_id(rng: np.random.Generator, n_hex: int) -> str:
    return "".join(f"{b:02x}" for b in rng.integers(0, 256, n_hex // 2).tolist())


def _smooth_noise(rng: np.random.Generator, n: int, k: int, sd: float) -> np.ndarray:
    """(n, k) Gaussian noise with SD ``sd``, smoothed over time by a short AR(1)-like kernel."""
    w = NOISE_RHO ** np.arange(NOISE_TAPS)
    w /= np.sqrt((w**2).sum())
    eps = rng.standard_normal((n + NOISE_TAPS - 1, k))
    out = np.zeros((n, k))
    for j, wj in enumerate(w):
        out += wj * eps[NOISE_TAPS - 1 - j : NOISE_TAPS - 1 - j + n]
    return sd * out


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_OPENER_PREFIX = re.compile(r"^(Um|So|You know|Oh|Well|Yeah|I mean|Hmm|Okay so|Honestly),? ")
_HAS_OPENER = re.compile(
    r"(so|oh|yeah|well|ha|haha|hm|hmm|um|uh|okay|anyway|random|exactly|right|same|"
    r"cool|sure|honestly|good question|not|I mean|mhm|totally|gotcha|no way)\b",
    re.IGNORECASE,
)


def split_sentences(utterance: str) -> list[str]:
    """Sentences of an utterance (the audiophile segmentation splits turns on them)."""
    return [s for s in _SENTENCE_END.split(utterance.strip()) if s]


# --------------------------------------------------------------------------- #
# One conversation                                                             #
# --------------------------------------------------------------------------- #


@dataclass
class Dialogue:
    """The turns of one conversation with their planted truth (before timing)."""

    roles: list[str] = field(default_factory=list)  # "User" | "AI"
    acts: list[str] = field(default_factory=list)  # AI act or User kind
    topics: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    valence: list[float] = field(default_factory=list)  # User turns: -1/0/1; AI: NaN
    tone: list[float] = field(default_factory=list)  # AI turns: -1/0/1 wording polarity; User: NaN
    fit: list[float] = field(default_factory=list)  # AI turns: context fit; User: NaN
    quality: list[float] = field(default_factory=list)  # AI turns: latent q_t; User: NaN


@dataclass
class Listener:
    mood: float
    taste: dict[str, float]
    expressiveness: float


@dataclass
class Persona:
    habit_cdf: tuple[float, ...]
    habits: dict[str, float]
    skill: float


def n_turns_for(params: SimulationParams, rng: np.random.Generator) -> int:
    """Conversation length: max(min_turns, round(N(mean_turns, turns_sd · mean_turns)))."""
    n = round(rng.normal(params.mean_turns, params.turns_sd * params.mean_turns))
    return max(params.min_turns, int(n))


def draw_listener(params: SimulationParams, rng: np.random.Generator) -> Listener:
    mood = float(rng.normal(params.listener_mood_mean, params.listener_mood_sd))
    taste = {a: float(x) for a, x in zip(TASTE_ACTS, rng.normal(0, TASTE_SD, len(TASTE_ACTS)))}
    return Listener(mood, taste, float(rng.normal(0, EXPRESSIVENESS_SD)))


def draw_persona(rng: np.random.Generator) -> Persona:
    habits = rng.dirichlet(HABIT_CONCENTRATION * np.array([HABIT_PRIOR[a] for a in ACTS]))
    return Persona(
        tuple(np.cumsum(habits).tolist()), dict(zip(ACTS, habits.tolist())), float(rng.beta(SKILL_A, SKILL_B))
    )


def _user_kind(prev_ai_act: str | None, dice: _Dice) -> str:
    """What the User does next depends on what the AI just did."""
    if prev_ai_act is None:
        return "greeting"
    if prev_ai_act in QUESTION_ACTS:
        return "answer" if dice.chance(0.7) else "story"
    if prev_ai_act in BAD_ACTS:
        return dice.pick(("reaction", "reaction", "statement", "question"))
    if prev_ai_act == "empathy":
        return dice.pick(("story", "statement"))
    return dice.pick(
        (
            "story",
            "story",
            "story",
            "statement",
            "statement",
            "statement",
            "statement",
            "question",
            "question",
            "reaction",
        )
    )


def _user_valence(kind: str, prev_valence: float, mood_dev: float, dice: _Dice) -> int:
    """Good or bad news; a happier listener tells more good news; bad news lingers."""
    if kind in ("greeting", "question", "reaction"):
        return 0
    if prev_valence < 0 and dice.chance(0.45):
        return -1
    p_neg = min(max(0.22 - 0.1 * mood_dev, 0.05), 0.6)
    p_pos = min(max(0.33 + 0.1 * mood_dev, 0.1), 0.7)
    u = dice.u()
    return -1 if u < p_neg else (1 if u < p_neg + p_pos else 0)


def _with_opener(text: str, dice: _Dice) -> str:
    """Maybe prefix a spoken opener ("um, ", "so "), unless the line already starts with one."""
    opener = dice.pick(OPENERS)
    return text if _HAS_OPENER.match(text) else opener + text


def _fill(template: str, vocab: dict[str, tuple[str, ...]], dice: _Dice) -> str:
    return template.format(
        noun=dice.pick(vocab["noun"]), activity=dice.pick(vocab["activity"]), name=dice.pick(vocab["name"])
    )


def _event(valence: int, vocab: dict[str, tuple[str, ...]], dice: _Dice) -> str:
    key = {1: "good", -1: "bad", 0: "neutral"}[valence]
    return f"{dice.pick(TIMEREFS)} {dice.pick(vocab[key])}."


def user_utterance(kind: str, valence: int, topic: str, dice: _Dice) -> str:
    """A User turn: a kind of turn, a valence and a topic rendered into words."""
    vocab = TOPICS[topic]
    if kind == "story":
        parts = [_event(valence, vocab, dice)]
        if dice.chance(0.7):
            parts.append(_fill(dice.pick(USER_TEMPLATES["detail"]), vocab, dice))
        if dice.chance(0.5):
            parts.append(_fill(dice.pick(USER_TEMPLATES["detail"]), vocab, dice))
        parts.append(dice.pick(CODA[valence]))
    elif kind in ("statement", "answer"):
        parts = [_fill(dice.pick(USER_TEMPLATES[kind]), vocab, dice)]
        if valence != 0 or dice.chance(0.3):
            parts.append(_event(valence, vocab, dice))
        if valence != 0 and dice.chance(0.5):
            parts.append(dice.pick(CODA[valence]))
    else:
        parts = [_fill(dice.pick(USER_TEMPLATES[kind]), vocab, dice)]
    if kind != "greeting":
        parts[0] = _with_opener(parts[0], dice)
    return " ".join(_capitalise(s) for p in parts if p for s in split_sentences(p))


def ai_utterance(act: str, topic: str, tone: int, earlier: list[str], dice: _Dice) -> str:
    """An AI turn: an act's template, topic words, an opener and maybe a tone phrase."""
    if act == "repetition":
        # Nearly verbatim: an earlier AI line, at most its opener changed.
        core = _OPENER_PREFIX.sub("", dice.pick(earlier))
        opener = dice.pick(OPENERS)
        if dice.chance(0.5):
            core = opener + (core if core.startswith(("I ", "I'")) else core[:1].lower() + core[1:])
        return _capitalise(core)
    core = _fill(dice.pick(AI_TEMPLATES[act]), TOPICS[topic], dice)
    text = _capitalise(_with_opener(core, dice))
    # The tone phrase and its place are drawn even when unused, so that a knob that
    # changes only the tone (sentiment_coupling) leaves every other word in place.
    phrase, before = _capitalise(dice.pick(TONE[tone or 1])), dice.chance(0.5)
    if tone:
        text = f"{phrase} {text}" if before else f"{text} {phrase}"
    # Capitalise the start of every sentence inside multi-sentence templates.
    return " ".join(_capitalise(s) for s in split_sentences(text))


def simulate_dialogue(
    params: SimulationParams, n_turns: int, listener: Listener, persona: Persona, rng: np.random.Generator
) -> Dialogue:
    """Alternate User and AI turns; pick acts, words and the planted quality of AI turns."""
    dice = _Dice(rng)
    turn_z = rng.standard_normal(n_turns)  # per-turn noise, drawn up front
    d = Dialogue()
    topic = dice.pick(TOPIC_NAMES)
    prev_ai: str | None = None
    last_ai: tuple[str, ...] = ()
    prev_valence, kind, valence, long_turn = 0.0, "greeting", 0, False
    ai_texts: list[str] = []
    for i in range(n_turns):
        if i % 2 == 0:  # ---- the User
            kind = _user_kind(prev_ai, dice)
            if prev_ai == "off_topic" and dice.chance(0.3):
                topic = d.topics[-1]  # the User follows the AI's digression
            elif i > 0 and dice.chance(0.4 if prev_ai == "generic_question" else 0.07):
                topic = dice.pick([t for t in TOPIC_NAMES if t != topic])
            valence = _user_valence(kind, prev_valence, listener.mood - params.listener_mood_mean, dice)
            text = user_utterance(kind, valence, topic, dice)
            long_turn = text.count(" ") + 1 >= LONG_TURN_WORDS
            prev_valence = valence
            d.roles.append("User")
            d.acts.append(kind)
            d.topics.append(topic)
            d.texts.append(text)
            d.valence.append(float(valence))
            d.tone.append(math.nan)
            d.fit.append(math.nan)
            d.quality.append(math.nan)
            continue
        # ---- the AI: with probability `skill` it reads the context, else it follows habit
        cdf = _skilled_cdf(kind, valence, long_turn, last_ai) if dice.chance(persona.skill) else persona.habit_cdf
        act = ACTS[dice.draw_cdf(cdf)]
        if act == "repetition" and not ai_texts:
            act = "generic_question"  # nothing to repeat yet
        fit = context_fit(act, kind, valence, long_turn, last_ai)
        q = ACT_VALUE[act] + fit + listener.taste.get(act, 0.0) + params.turn_noise * turn_z[i]
        # Wording polarity: agrees with the turn's quality with probability
        # sentiment_coupling, else a coin flip (three draws always, to keep the dice in step).
        has_tone, agree, coin = dice.u() < TONE_RATE, dice.chance(params.sentiment_coupling), dice.u()
        tone = (
            ((1 if q > TONE_GOOD_Q else -1) if agree else (1 if coin < 0.5 else -1))
            if has_tone and act != "repetition"
            else 0
        )  # a repeated line keeps its old wording
        ai_topic = dice.pick([t for t in TOPIC_NAMES if t != topic]) if act == "off_topic" else topic
        text = ai_utterance(act, ai_topic, tone, ai_texts, dice)
        ai_texts.append(text)
        d.roles.append("AI")
        d.acts.append(act)
        d.topics.append(ai_topic)
        d.texts.append(text)
        d.valence.append(math.nan)
        d.tone.append(float(tone))
        d.fit.append(fit)
        d.quality.append(q)
        prev_ai, last_ai = act, (last_ai + (act,))[-2:]
    return d


def turn_times(n_words: np.ndarray, roles_ai: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (s, 3 decimals) from word counts: ~2.5 words/s, jitter, short gaps."""
    rate = rng.uniform(*WORDS_PER_SECOND, size=2)[roles_ai.astype(int)]
    dur = n_words / rate * np.exp(rng.normal(0, 0.15, len(n_words))) + 0.3
    gap = np.minimum(0.15 + rng.exponential(0.45, len(n_words)), 3.0)
    gap[0] = rng.uniform(0.5, 2.5)  # the recording starts a moment before the first word
    start = np.round(np.cumsum(gap + dur) - dur, 3)
    stop = np.round(start + dur, 3)
    stop = np.minimum(stop, np.append(start[1:], np.inf))  # rounding never creates overlap
    return start, stop


# --------------------------------------------------------------------------- #
# Per-second signals                                                           #
# --------------------------------------------------------------------------- #


def _face_probs(
    s: np.ndarray, coupling: float, expressiveness: float, noise_sd: float, rng: np.random.Generator
) -> np.ndarray:
    """(n, 8) emotion probabilities: softmax(base + coupling·s·pull + noise)."""
    logits = FACE_BASE + coupling * s[:, None] * FACE_PULL
    logits[:, EMOTIONS.index("happiness")] += expressiveness
    logits += _smooth_noise(rng, len(s), len(EMOTIONS), noise_sd)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def participant_signals(
    s: np.ndarray,
    speaking: np.ndarray,
    expressiveness: float,
    f0_base: float,
    params: SimulationParams,
    rng: np.random.Generator,
    coupling: float,
) -> dict[str, np.ndarray]:
    """One participant's per-second columns, driven by the reaction level ``s`` ∈ [-1, 1].

    ``coupling`` scales how much the face follows ``s`` (face_coupling for the
    listener); smiles, gaze, nods and prosody follow ``s`` through their own noise.
    """
    n = len(s)
    spk = speaking.astype(float)
    probs = _face_probs(s, coupling, expressiveness, params.face_noise, rng)
    probs[rng.random(n) < params.frame_dropout] = np.nan  # no face found this second
    smile_p = _sigmoid(-1.1 + 1.5 * s + expressiveness + 0.4 * spk + _smooth_noise(rng, n, 1, params.smile_noise)[:, 0])
    gaze_p = _sigmoid(1.6 + 0.8 * s - 0.7 * spk + _smooth_noise(rng, n, 1, params.gaze_noise)[:, 0])
    listening = 1.0 - spk
    nod_yes_p = np.clip(params.nod_rate * (listening * (1 + 0.8 * s) + spk * 0.3), 0, 1)
    nod_no_p = 0.01 + listening * 0.06 * (1 - s) / 2
    u = rng.random((n, 4))
    pn = _smooth_noise(rng, n, 4, params.prosody_noise)
    cols: dict[str, np.ndarray] = {
        "is_speaking": speaking.astype(np.int8),
        "gaze_on": (u[:, 0] < gaze_p).astype(np.int8),
        "smile": (u[:, 1] < smile_p).astype(np.int8),
        "nod_yes": (u[:, 2] < nod_yes_p).astype(np.int8),
        "nod_no": (u[:, 3] < nod_no_p).astype(np.int8),
    }
    for j, c in enumerate(FACE_COLUMNS):
        cols[c] = np.round(probs[:, j], 4)
    intensity = 47 + 14 * spk + 1.5 * s + 3 * pn[:, 1]
    cols["f0_mean"] = np.round(f0_base + 6 * s + 8 * spk + 12 * pn[:, 0], 2)
    cols["intensity_mean"] = np.round(intensity, 2)
    cols["jitter"] = np.round(np.clip(0.015 - 0.002 * s + 0.004 * pn[:, 2], 0.002, None), 4)
    cols["log_energy"] = np.round(intensity / 8.7 + 0.3 * pn[:, 3], 3)
    return cols


def reaction_levels(
    t: np.ndarray, start: np.ndarray, turn_level: np.ndarray, lag: float, rest_level: float
) -> np.ndarray:
    """s at each second: the level of the latest turn started ``lag`` s before (rest before any)."""
    j = np.searchsorted(start, t - lag, side="right") - 1
    return np.where(j >= 0, turn_level[np.maximum(j, 0)], rest_level)


def speaking_mask(t: np.ndarray, start: np.ndarray, stop: np.ndarray, mine: np.ndarray) -> np.ndarray:
    """1 where second t falls inside one of this participant's turns."""
    j = np.searchsorted(start, t, side="right") - 1
    jj = np.maximum(j, 0)
    return (j >= 0) & (t < stop[jj]) & mine[jj]


# --------------------------------------------------------------------------- #
# CSV rendering (pyarrow: ~10x faster than DataFrame.to_csv, byte-stable)      #
# --------------------------------------------------------------------------- #

_TIMEDELTA_CACHE: list[pa.Array] = []


def _timedelta_strings(n: int) -> pa.Array:
    """``"0 days HH:MM:SS"`` for seconds 0..n-1 (pandas' str(Timedelta) form), cached."""
    if not _TIMEDELTA_CACHE or len(_TIMEDELTA_CACHE[0]) < n:
        m = max(n, 4 * 3600)
        _TIMEDELTA_CACHE[:] = [
            pa.array([f"{k // 86400} days {k % 86400 // 3600:02d}:{k % 3600 // 60:02d}:{k % 60:02d}" for k in range(m)])
        ]
    return _TIMEDELTA_CACHE[0].slice(0, n)


def _arrow(v: Any) -> pa.Array:
    if isinstance(v, pa.Array):
        return v
    if isinstance(v, np.ndarray) and v.dtype.kind == "f":
        return pa.array(v, from_pandas=True)  # NaN -> null -> empty field
    return pa.array(v)


def csv_bytes(columns: dict[str, Any], quote_strings: bool = True) -> bytes:
    """Render columns as CSV bytes that ``pandas.read_csv`` reads back.

    Floats must be rounded by the caller (they print in shortest round-trip
    form); NaN prints as an empty field, booleans as true/false. Strings are
    quoted unless ``quote_strings`` is False (only for strings without commas).
    """
    table = pa.table({k: _arrow(v) for k, v in columns.items()})
    sink = pa.BufferOutputStream()
    pacsv.write_csv(
        table, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed" if quote_strings else "none")
    )
    return (",".join(columns) + "\n").encode() + sink.getvalue().to_pybytes()


def _transcript_columns(
    speaker: Sequence[str], start: np.ndarray, stop: np.ndarray, texts: Sequence[str]
) -> dict[str, Any]:
    """The cliffhanger-style columns shared by the three segmentations."""
    interval = np.round(start - np.append(np.nan, stop[:-1]), 3)
    return {
        "turn_id": np.arange(len(texts), dtype=np.int64),
        "speaker": list(speaker),
        "start": start,
        "stop": stop,
        "utterance": list(texts),
        "interval": interval,
        "delta": np.round(stop - start, 3),
        "questions": np.array([u.count("?") for u in texts], dtype=np.int64),
        "end_question": np.array([u.endswith("?") for u in texts]),
        "overlap": np.zeros(len(texts), dtype=bool),
        "n_words": np.array([len(u.split()) for u in texts], dtype=np.int64),
    }


def audiophile_rows(
    speaker: Sequence[str], start: np.ndarray, stop: np.ndarray, texts: Sequence[str]
) -> dict[str, Any]:
    """Split each turn into one row per sentence, times proportional to word counts."""
    spk, st, sp, tx = [], [], [], []
    for who, a, b, text in zip(speaker, start.tolist(), stop.tolist(), texts):
        sentences = split_sentences(text) or [text]
        words = [len(s.split()) for s in sentences]
        bounds = [a + (b - a) * c / sum(words) for c in accumulate(words, initial=0)]
        for k, s in enumerate(sentences):
            spk.append(who)
            tx.append(s)
            st.append(bounds[k])
            sp.append(bounds[k + 1])
    st_a, sp_a = np.round(np.array(st), 3), np.round(np.array(sp), 3)
    sp_a = np.minimum(sp_a, np.append(st_a[1:], np.inf))
    return _transcript_columns(spk, st_a, sp_a, tx)


def backchannel_columns(
    speaker_ids: tuple[str, str],
    roles_ai: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    pleasantness: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Short listener backchannels during long turns (extra to the cliffhanger turns).

    The User says "mhm" more often during pleasant AI turns (a mild, honest cue).
    """
    n = len(start)
    dur = stop - start
    p = np.where(roles_ai, 0.25 + 0.4 * np.nan_to_num(pleasantness), 0.45)
    has = (dur > 6.0) & (rng.random(n) < p)
    two = has & (dur > 12.0) & (rng.random(n) < 0.5)
    u = rng.random((n, 4))
    words = np.array(BACKCHANNEL_WORDS)
    w1, w2 = words[(u[:, 0] * len(words)).astype(int)], words[(u[:, 1] * len(words)).astype(int)]
    first = start + dur * np.where(two, 0.25 + 0.15 * u[:, 2], 0.3 + 0.4 * u[:, 2])
    last = np.where(two, start + dur * (0.6 + 0.25 * u[:, 3]), first)
    text = [(f"{a}, {b}" if t else a) if h else "" for a, b, h, t in zip(w1, w2, has, two)]
    listener = [speaker_ids[0] if ai else speaker_ids[1] for ai in roles_ai]
    return {
        "backchannel": text,
        "backchannel_count": np.where(has, 1 + two, 0).astype(np.int64),
        "backchannel_speaker": [who if h else "" for who, h in zip(listener, has)],
        "backchannel_start": np.where(has, np.round(first, 3), np.nan),
        "backchannel_stop": np.where(has, np.round(last + 0.4, 3), np.nan),
    }


def _survey_items(score: int, rng: np.random.Generator) -> dict[str, Any]:
    """Survey items correlated with overall_affect, plus demographics."""
    noisy = lambda sd: int(np.clip(round(score + rng.normal(0, sd)), 1, 10))  # noqa: E731
    return {
        "overall_affect": score,
        "end_affect": noisy(1.2),
        "how_enjoyable": noisy(1.0),
        "i_like_you": noisy(1.4),
        "conversationalist": noisy(1.6),
        "age": int(rng.integers(18, 71)),
        "sex": "female" if rng.random() < 0.55 else "male",
    }


# --------------------------------------------------------------------------- #
# One conversation end to end                                                  #
# --------------------------------------------------------------------------- #


def _streams(params: SimulationParams, index: int) -> dict[str, np.random.Generator]:
    """Independent generators per stage, keyed by (seed, index, stage)."""
    names = ("ids", "people", "dialogue", "reward", "timing", "signals", "survey")
    return {n: np.random.default_rng([params.seed, index, k]) for k, n in enumerate(names)}


def simulate_conversation(params: SimulationParams, index: int) -> tuple[str, dict[str, Any]]:
    """Simulate conversation ``index``: returns its id and its files (relative path -> bytes or dict).

    Pure: no file is written. ``metadata.json`` is returned as a dict.
    """
    rng = _streams(params, index)
    convo_id = str(
        uuid.UUID(int=int(rng["ids"].integers(0, 2**63)) << 64 | int(rng["ids"].integers(0, 2**63)), version=4)
    )
    user_id, ai_id = _hex_id(rng["ids"], 24), _hex_id(rng["ids"], 24)

    listener, persona = draw_listener(params, rng["people"]), draw_persona(rng["people"])
    n_turns = n_turns_for(params, rng["people"])
    d = simulate_dialogue(params, n_turns, listener, persona, rng["dialogue"])

    # The planted truth: pleasantness, each AI turn's reward on the score scale, the score their mean.
    is_ai = np.array([r == "AI" for r in d.roles])
    quality = np.array(d.quality)
    p = np.where(is_ai, _sigmoid(listener.mood + np.nan_to_num(quality)), np.nan)
    true_reward = np.where(is_ai, 100.0 * p, np.nan)
    total = float(np.nanmean(true_reward))
    score = int(np.clip(round((total + rng["reward"].normal(0, params.score_noise)) / 10), 1, 10))

    texts = d.texts
    n_words = np.array([len(t.split()) for t in texts], dtype=float)
    start, stop = turn_times(n_words, is_ai, rng["timing"])
    speakers = [ai_id if a else user_id for a in is_ai]

    files: dict[str, Any] = {}
    cliff = _transcript_columns(speakers, start, stop, texts)
    files["transcription/transcript_cliffhanger.csv"] = csv_bytes(cliff)
    files["transcription/transcript_audiophile.csv"] = csv_bytes(audiophile_rows(speakers, start, stop, texts))
    files["transcription/transcript_backbiter.csv"] = csv_bytes(
        {**cliff, **backchannel_columns((user_id, ai_id), is_ai, start, stop, p, rng["timing"])}
    )

    files["audio_video_features.csv"] = _frames_csv(
        params, listener, start, stop, is_ai, p, np.array(d.valence), user_id, ai_id, rng["signals"]
    )

    srv = rng["survey"]
    ai_score = int(np.clip(round(srv.normal(7.4, 1.8)), 1, 10))
    rows = [
        {"user_id": user_id, "convo_id": convo_id, **_survey_items(score, srv)},
        {"user_id": ai_id, "convo_id": convo_id, **_survey_items(ai_score, srv)},
    ]
    if srv.random() < 0.5:  # real survey rows come in no particular order
        rows.reverse()
    files["survey.csv"] = csv_bytes({k: [r[k] for r in rows] for k in rows[0]})

    files["simulation_truth.csv"] = csv_bytes(
        {
            "turn_id": np.arange(n_turns, dtype=np.int64),
            "speaker": speakers,
            "role": d.roles,
            "start": start,
            "stop": stop,
            "act": d.acts,
            "topic": d.topics,
            "true_reward": np.round(true_reward, 6),
            "fit": np.round(np.array(d.fit), 4),
            "pleasantness": np.round(p, 6),
            "valence": np.array(d.valence),
            "tone": np.array(d.tone),
        }
    )
    files["metadata.json"] = {
        "convo_id": convo_id,
        "participants": [user_id, ai_id],
        "duration": float(stop[-1]),
        "topics": list(dict.fromkeys(d.topics)),
        "simulated": True,
        "seed": params.seed,
        "index": index,
        "simulator_version": SIMULATOR_VERSION,
        "truth": {
            "listener_mood": round(listener.mood, 6),
            "ai_skill": round(persona.skill, 6),
            "ai_habits": {a: round(v, 6) for a, v in persona.habits.items()},
            "listener_taste": {a: round(v, 6) for a, v in listener.taste.items()},
            "mean_true_reward": round(total, 6),
            "overall_affect": score,
        },
    }
    return convo_id, files


def _frames_csv(
    params: SimulationParams,
    listener: Listener,
    start: np.ndarray,
    stop: np.ndarray,
    is_ai: np.ndarray,
    p: np.ndarray,
    valence: np.ndarray,
    user_id: str,
    ai_id: str,
    rng: np.random.Generator,
) -> bytes:
    """audio_video_features.csv: one row per second per participant, sorted by user_id then time."""
    n_sec = int(math.floor(stop[-1])) + 1
    t = np.arange(n_sec, dtype=float)
    # The listener reacts to AI turns through their pleasantness, and shows the
    # valence of their own news while telling it.
    own = 2 * _sigmoid(listener.mood + 0.9 * np.nan_to_num(valence)) - 1
    level = np.where(is_ai, 2 * np.nan_to_num(p) - 1, own)
    s_user = reaction_levels(t, start, level, params.reaction_lag, 2 * _sigmoid(listener.mood) - 1)
    # The AI participant: its own slowly drifting mood, unrelated to the truth.
    ai_mood = rng.normal(0.8, 0.6)
    s_ai = 2 * _sigmoid(ai_mood + _smooth_noise(rng, n_sec, 1, 0.8)[:, 0]) - 1
    f0 = rng.uniform(110, 220, size=2)
    blocks = {
        user_id: participant_signals(
            s_user,
            speaking_mask(t, start, stop, ~is_ai),
            listener.expressiveness,
            f0[0],
            params,
            rng,
            params.face_coupling,
        ),
        ai_id: participant_signals(
            s_ai, speaking_mask(t, start, stop, is_ai), rng.normal(0, EXPRESSIVENESS_SD), f0[1], params, rng, 2.0
        ),
    }
    order = sorted(blocks)
    td = _timedelta_strings(n_sec)
    cols: dict[str, Any] = {
        "timedelta": pa.concat_arrays([td, td]),
        "user_id": pa.array([order[0]] * n_sec + [order[1]] * n_sec),
    }
    for c in blocks[user_id]:
        cols[c] = np.concatenate([blocks[order[0]][c], blocks[order[1]][c]])
    return csv_bytes(cols, quote_strings=False)


# --------------------------------------------------------------------------- #
# The corpus                                                                   #
# --------------------------------------------------------------------------- #


def write_conversation(out_dir: Path, convo_id: str, files: dict[str, Any]) -> None:
    """Write one conversation's files atomically into ``out_dir/<convo_id>/``."""
    folder = out_dir / convo_id
    for rel, content in files.items():
        if isinstance(content, dict):
            write_json(folder / rel, content)
        else:
            with atomic_write(folder / rel) as tmp:
                tmp.write_bytes(content)


def _simulate_and_write(job: tuple[SimulationParams, int, str]) -> str:
    params, index, out_dir = job
    convo_id, files = simulate_conversation(params, index)
    write_conversation(Path(out_dir), convo_id, files)
    return convo_id


def _marker(params: SimulationParams, convo_ids: list[str] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"simulator_version": SIMULATOR_VERSION, "params": to_dict(params)}
    if convo_ids is not None:
        m["convo_ids"] = convo_ids
    return m


def is_complete(out_dir: str | Path, params: SimulationParams) -> bool:
    """True when ``out_dir`` holds a finished simulation of exactly these knobs."""
    path = Path(out_dir) / MARKER
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    want = _marker(params)
    return m.get("simulator_version") == want["simulator_version"] and m.get("params") == want["params"]


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete simulated conversation folders a previous run left that this one did not write."""
    for child in out_dir.iterdir():
        meta = child / "metadata.json"
        if child.is_dir() and child.name not in keep and meta.exists():
            try:
                simulated = json.loads(meta.read_text()).get("simulated") is True
            except ValueError:
                simulated = False
            if simulated:
                shutil.rmtree(child)


def simulate_corpus(params: SimulationParams, out_dir: str | Path, workers: int = 2, progress: bool = True) -> Path:
    """Write ``params.n_conversations`` simulated conversations in CANDOR layout under ``out_dir``.

    Deterministic: the same knobs give byte-identical files whatever ``workers``.
    ``out_dir/_COMPLETE.json`` (the knobs and the conversation ids) is written
    last; when it already matches the knobs nothing is done. Simulated folders
    of an earlier, different simulation in ``out_dir`` are removed.
    Returns ``out_dir``.
    """
    try:
        params.validate()
    except params_mod._FieldError as e:  # the same message a parameter file would give
        raise ParamError(f"simulation.{e}") from None
    out_dir = Path(out_dir)
    if is_complete(out_dir, params):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).unlink(missing_ok=True)  # from here on the folder is not trusted
    jobs = [(params, i, str(out_dir)) for i in range(params.n_conversations)]
    bar = dict(total=len(jobs), disable=not progress_enabled(progress), desc="simulating", unit="conv")
    if workers <= 1 or len(jobs) == 1:
        ids = [_simulate_and_write(j) for j in tqdm(jobs, **bar)]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            chunk = max(1, min(16, len(jobs) // (8 * workers)))
            ids = list(tqdm(pool.map(_simulate_and_write, jobs, chunksize=chunk), **bar))
    if len(set(ids)) != len(ids):  # 128-bit ids: a clash would mean a seeding bug
        raise RuntimeError("simulated conversation ids are not unique")
    _remove_stale(out_dir, set(ids))
    write_json(out_dir / MARKER, _marker(params, ids))
    return out_dir
