"""Words: topics and templates the turns are written from."""

from __future__ import annotations

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
