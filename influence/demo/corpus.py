"""A generated corpus of movie reviews for the offline demo.

The demo needs data that a small DistilBERT-architecture classifier, trained
from scratch in a couple of CPU minutes, learns well, and that still rewards
exploring with influence functions. So the reviews are built from templates
with many slot fillers, and besides plain reviews they contain:

* negated praise and criticism ("never boring", "hardly a masterpiece"), so
  that single words do not decide the label;
* mixed reviews whose label is fixed by an explicit concluding verdict;
* contrast reviews that quote the opposite expectation before refuting it;
* a few hard reviews whose plot is described in grim words but whose verdict
  is positive (and the mirror image), like the war-film review of the
  reference notebook; plain reviews use such words in the tone of their
  label, so a model relying on them gets the hard reviews wrong;
* a few test reviews that are light paraphrases of training reviews, so that
  the most influential training example of such a test review is known.

Topics are drawn independently of the label, so topic words carry no label
information on their own. Pure standard library and fully determined by the
seed (only a private ``random.Random`` is used).
"""

from __future__ import annotations

import functools
import random
import re
import string
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = [
    "BRIGHT_ADJECTIVES",
    "DemoCorpus",
    "DemoReview",
    "GRIM_ADJECTIVES",
    "KINDS",
    "LABEL_NAMES",
    "NEGATION_CUES",
    "NEGATIVE_ADJECTIVES",
    "POSITIVE_ADJECTIVES",
    "TOPICS",
    "TOPIC_NAMES",
    "count_tokens",
    "generate_corpus",
]

LABEL_NAMES = ("negative", "positive")
NEGATIVE = 0
POSITIVE = 1

KIND_PLAIN = "plain"
KIND_NEGATED = "negated"
KIND_MIXED = "mixed"
KIND_CONTRAST = "contrast"
KIND_GRIM_PLOT = "grim_plot"
KIND_BRIGHT_PLOT = "bright_plot"
KIND_NEAR_DUPLICATE = "near_duplicate"
KINDS = (
    KIND_PLAIN,
    KIND_NEGATED,
    KIND_MIXED,
    KIND_CONTRAST,
    KIND_GRIM_PLOT,
    KIND_BRIGHT_PLOT,
    KIND_NEAR_DUPLICATE,
)

# Shares of the freely drawn kinds. Plain reviews dominate so that the demo
# classifier learns the task quickly; negated and mixed reviews, which need
# word order, keep a bag-of-words model clearly below perfect.
DRAWN_KIND_WEIGHTS = (
    (KIND_PLAIN, 0.55),
    (KIND_NEGATED, 0.16),
    (KIND_MIXED, 0.21),
    (KIND_CONTRAST, 0.08),
)
# Exact quotas per split: grim plot with a positive verdict (the notebook's
# war-film case) and its mirror image, uplifting plot with a negative verdict.
GRIM_PLOT_FRACTION = 0.02
BRIGHT_PLOT_FRACTION = 0.01
NEAR_DUPLICATE_FRACTION = 0.04  # enough planted pairs that the demo's 100 test reviews hold a few

MIN_SENTENCES = 3
MAX_SENTENCES = 8
MIN_WORDS = 40
MAX_WORDS = 120
# Words plus punctuation marks, which is what a word-level tokenizer with a
# whitespace/punctuation pre-tokenizer produces at most: 120 leaves room for
# [CLS] and [SEP] within the demo model's 128 positions, so the concluding
# verdict, which decides mixed reviews, is never truncated.
MAX_TOKENS = 120
# Length the optional sentences fill a review up to, drawn per review.
TARGET_WORDS_RANGE = (50, 100)
MAX_ATTEMPTS = 200
MAX_FILLERS = 3
RATING_PROBABILITY = 0.25
PLOT_PROBABILITY = 0.85
LEAD_IN_PROBABILITY = 0.3
NEGATED_OPINION_PROBABILITY = 0.7
NEGATED_VERDICT_PROBABILITY = 0.6
TONE_PROBABILITY = 0.5
EXTRA_OPINION_PROBABILITY = 0.4
STRONG_PROBABILITY = 0.5
# Otherwise a generic graded adjective ("superb", "dull") is used.
ASPECT_ADJECTIVE_PROBABILITY = 0.5
NEAR_DUPLICATE_DROP_PROBABILITY = 0.5
NEAR_DUPLICATE_MAX_SWAPS = 3

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_WORD_RE = re.compile(r"[A-Za-z]+")

NEGATION_CUES = ("not", "never", "hardly", "nothing", "cannot", "far from")

# ---------------------------------------------------------------------------
# Sentiment vocabulary, graded: generic adjectives go with any craft aspect.

POSITIVE_STRONG = (
    "superb", "magnificent", "extraordinary", "masterful", "brilliant",
    "stunning", "exceptional", "outstanding", "wonderful", "sublime",
    "excellent", "dazzling", "terrific", "marvelous", "phenomenal",
)
POSITIVE_MILD = (
    "good", "solid", "decent", "pleasant", "nice", "effective", "likable",
    "capable", "enjoyable", "appealing", "engaging", "competent",
)
NEGATIVE_MILD = (
    "weak", "uneven", "mediocre", "bland", "dull", "forgettable", "tired",
    "underwhelming", "lazy", "disappointing", "bad", "boring", "lackluster",
    "pedestrian", "flimsy",
)
NEGATIVE_STRONG = (
    "awful", "terrible", "dreadful", "abysmal", "atrocious", "painful",
    "horrible", "embarrassing", "insufferable", "disastrous", "lousy",
    "woeful", "dismal", "ghastly",
)
STRONG_ADVERBS = (
    "truly", "utterly", "absolutely", "remarkably", "genuinely",
    "consistently", "simply", "downright", "exceptionally", "thoroughly",
)
MILD_ADVERBS = (
    "fairly", "quite", "mostly", "reasonably", "pretty", "largely",
    "generally", "somewhat", "rather",
)
NEGATED_ADVERBS = ("remotely", "particularly", "especially", "in any way")


@dataclass(frozen=True)
class _Aspect:
    """A craft aspect a reviewer can judge, with adjectives that fit it."""

    singular: tuple[str, ...]
    plural: tuple[str, ...]
    positive: tuple[str, ...]
    negative: tuple[str, ...]


ASPECTS = (
    _Aspect(("the score", "the music", "the soundtrack"), (),
            ("haunting", "soaring", "gorgeous", "memorable"),
            ("intrusive", "overbearing", "shrill", "syrupy")),
    _Aspect(("the pacing", "the editing", "the rhythm of the film"), (),
            ("brisk", "taut", "assured", "propulsive"),
            ("sluggish", "plodding", "choppy", "erratic")),
    _Aspect(("the cinematography", "the camera work", "the photography"), ("the visuals",),
            ("luminous", "striking", "elegant", "breathtaking"),
            ("murky", "flat", "drab", "ugly")),
    _Aspect(("the dialogue", "the writing", "the script"), (),
            ("sharp", "witty", "natural", "clever"),
            ("clunky", "stilted", "wooden", "awkward")),
    _Aspect(("the effects work",), ("the special effects", "the visual effects"),
            ("seamless", "spectacular", "convincing", "inventive"),
            ("cheap", "rubbery", "phony", "cartoonish")),
    _Aspect(("{actor}'s performance", "the lead performance", "{actor} in the lead role"), (),
            ("magnetic", "moving", "nuanced", "commanding"),
            ("lifeless", "mannered", "bloodless", "stiff")),
    _Aspect(("the supporting cast", "the ensemble"), (),
            ("lively", "charming", "delightful", "splendid"),
            ("wasted", "miscast", "forgettable", "bland")),
    _Aspect(("the story", "the plot", "the screenplay"), (),
            ("gripping", "engrossing", "absorbing", "original"),
            ("predictable", "muddled", "contrived", "incoherent")),
    _Aspect(("the ending", "the final act"), ("the last twenty minutes",),
            ("powerful", "satisfying", "unforgettable", "rousing"),
            ("rushed", "baffling", "limp", "silly")),
    _Aspect(("the production design",), ("the sets", "the costumes"),
            ("lavish", "meticulous", "rich", "beautiful"),
            ("shabby", "sloppy", "garish", "tacky")),
    _Aspect(("the sound design", "the sound mix"), (),
            ("immersive", "precise", "thunderous", "crisp"),
            ("muddy", "deafening", "tinny", "messy")),
    _Aspect(("the humor", "the comic timing"), ("the jokes",),
            ("funny", "warm", "playful", "hilarious"),
            ("stale", "forced", "crude", "juvenile")),
    _Aspect((), ("the action sequences", "the set pieces", "the fight scenes"),
            ("thrilling", "exhilarating", "kinetic", "stylish"),
            ("confusing", "repetitive", "tedious", "incomprehensible")),
    _Aspect(("the direction", "{director}'s direction"), (),
            ("confident", "inspired", "graceful", "masterly"),
            ("timid", "clumsy", "listless", "ponderous")),
    _Aspect(("the opening", "the first act", "the prologue"), (),
            ("arresting", "electric", "intriguing", "elegant"),
            ("slow", "confusing", "limp", "clumsy")),
    _Aspect(("the tone", "the mood", "the atmosphere"), (),
            ("atmospheric", "assured", "haunting", "delicate"),
            ("inconsistent", "glum", "muddled", "shrill")),
    _Aspect(("the chemistry between the leads",), (),
            ("electric", "palpable", "believable", "warm"),
            ("nonexistent", "awkward", "forced", "wooden")),
    _Aspect(("the villain", "the central romance"), ("the characters",),
            ("compelling", "believable", "vivid", "complex"),
            ("thin", "shallow", "annoying", "cardboard")),
)

# Every sentiment adjective, for checking that the polarity of a sentence is right.
POSITIVE_ADJECTIVES = frozenset(
    POSITIVE_STRONG + POSITIVE_MILD + tuple(word for aspect in ASPECTS for word in aspect.positive)
)
NEGATIVE_ADJECTIVES = frozenset(
    NEGATIVE_STRONG + NEGATIVE_MILD + tuple(word for aspect in ASPECTS for word in aspect.negative)
)

# Words about the events on screen rather than about the film.
GRIM_ADJECTIVES = (
    "brutal", "harrowing", "painful", "devastating", "bleak", "sickening",
    "agonizing", "cruel", "grim", "relentless",
)
BRIGHT_ADJECTIVES = (
    "uplifting", "heartwarming", "joyful", "triumphant", "inspiring",
    "hopeful", "tender", "radiant", "sweet", "lovely",
)

# ---------------------------------------------------------------------------
# Topics: shared by both labels and both splits.


@dataclass(frozen=True)
class _Topic:
    """What a film is about: genres, places, heroes, plots and dark or bright events."""

    name: str
    genres: tuple[str, ...]
    settings: tuple[str, ...]
    protagonists: tuple[str, ...]
    plots: tuple[str, ...]
    grim_events: tuple[str, ...]
    bright_events: tuple[str, ...]


TOPICS = (
    _Topic(
        "war",
        ("war drama", "war epic", "wartime thriller", "combat film"),
        ("on the western front", "in an occupied coastal town", "behind enemy lines",
         "during a long winter siege", "on a remote island garrison"),
        ("a young infantry sergeant", "a field nurse", "a reluctant radio operator",
         "a veteran tank commander", "a resistance courier"),
        ("tries to lead a lost platoon home", "must carry a message across enemy territory",
         "hides a family from the invading army", "holds a bridge against the invasion",
         "searches for a missing brother"),
        ("villages burn while soldiers die in the mud", "the invasion leaves whole towns in ruins",
         "prisoners are executed in the snow", "a boy watches his father shot at the border",
         "the wounded scream through the night in a field hospital"),
        ("the liberated town dances in the streets", "one soldier's courage saves an entire village",
         "old enemies share bread on a frozen night", "ordinary people finally turn back the invasion",
         "a lost platoon makes it home to cheering families"),
    ),
    _Topic(
        "romance",
        ("romantic comedy", "romantic drama", "love story", "period romance"),
        ("in a seaside village", "in nineteenth-century Vienna", "in a busy Paris bakery",
         "on a cross-country train", "in a small bookshop in Dublin"),
        ("a shy architect", "a widowed violinist", "a travelling wedding photographer",
         "a stubborn florist", "a retired sailor"),
        ("falls for a rival chef", "meets a first love again after twenty years",
         "writes letters to a stranger", "pretends to be engaged to save the family farm",
         "must choose between two suitors"),
        ("a marriage collapses under years of silence and betrayal", "the lovers lose a child",
         "one of them slowly dies of a wasting illness", "a jealous husband turns violent",
         "grief and regret poison every conversation"),
        ("two lonely people find each other at last", "a proposal on the station platform moves everyone",
         "an old couple dances in the kitchen", "strangers become lifelong friends",
         "a whole village celebrates the wedding"),
    ),
    _Topic(
        "heist",
        ("heist thriller", "caper", "crime caper", "heist comedy"),
        ("in Monte Carlo", "in a Zurich bank vault", "at a diamond auction in Antwerp",
         "in a casino on the Las Vegas strip", "inside a heavily guarded museum"),
        ("a retired safecracker", "a con artist with a grudge", "a nervous getaway driver",
         "a disgraced insurance investigator", "a gifted forger"),
        ("assembles a crew for one last job", "plans to steal a famous painting",
         "tries to rob the bank that ruined her", "double-crosses a crime boss",
         "has to break into a vault nobody has ever opened"),
        ("the crew betray and murder one another", "a guard is shot dead during the robbery",
         "an innocent clerk is framed and ruined", "greed destroys every friendship",
         "the job ends in a bloody massacre"),
        ("the stolen money goes back to the people who were cheated", "a crew of misfits becomes a family",
         "an old thief gets a second chance", "the loyal friends share the prize",
         "a cheated widow finally gets justice"),
    ),
    _Topic(
        "space",
        ("science fiction film", "space opera", "space thriller", "sci-fi adventure"),
        ("aboard a failing research station", "on a frozen moon of Jupiter",
         "in a generation ship drifting between stars", "on a mining colony on Mars",
         "at the edge of a black hole"),
        ("a stranded astronaut", "a ship engineer", "a young navigator", "an android medic",
         "a weary captain"),
        ("must repair the reactor before the air runs out", "makes first contact with an alien signal",
         "leads a mutiny against a corrupt captain", "races to save the colony from a solar storm",
         "tries to bring the crew home"),
        ("the crew suffocates one by one in the dark", "a colony starves while the company looks away",
         "the hull breaches and bodies drift into space", "the alien invasion wipes out entire cities",
         "the survivors turn on each other with terrible cruelty"),
        ("the crew comes home to cheering crowds", "humans and aliens learn to trust each other",
         "a child is born aboard the ship", "the colony blooms into a garden",
         "an old captain sees the ocean of Earth once more"),
    ),
    _Topic(
        "family",
        ("family drama", "family comedy", "animated family film", "family adventure"),
        ("in a crowded farmhouse", "at a chaotic holiday reunion", "in a small mountain town",
         "on a summer road trip", "in a suburban house by the lake"),
        ("a single father", "a grandmother", "a ten-year-old girl", "a teenage brother",
         "an overworked nurse"),
        ("tries to keep the family bakery open", "brings the family together for one last holiday",
         "adopts a stray dog against all the rules", "looks after a sick parent",
         "searches for a lost grandfather"),
        ("a parent slowly dies of cancer", "the children are neglected and abused",
         "the family is evicted and split apart", "an alcoholic father wrecks every holiday",
         "a funeral reopens years of cruelty and resentment"),
        ("estranged siblings forgive each other", "the whole family sings around the piano",
         "a grandfather teaches a child to fish", "the neighbors save the bakery together",
         "a lost dog finds its way home"),
    ),
    _Topic(
        "horror",
        ("horror film", "haunted house movie", "supernatural horror", "slasher"),
        ("in an abandoned asylum", "in a cabin deep in the woods", "in a fog-bound fishing village",
         "in an old Victorian mansion", "at a summer camp"),
        ("a skeptical priest", "a young babysitter", "a paranormal investigator",
         "a grieving mother", "a college student"),
        ("uncovers a curse buried under the house", "is stalked by a masked killer",
         "tries to rescue a possessed child", "must survive one night alone",
         "hears voices from the cellar"),
        ("victims are butchered in gruesome detail", "a child is dragged screaming into the dark",
         "the killer tortures his victims for days", "the town drowns in blood and terror",
         "the dead rise and tear the living apart"),
        ("a mother and daughter reconcile after the haunting", "the ghost finally finds peace",
         "the friends protect each other to the end", "a lonely spirit is set free",
         "the village throws off an old fear"),
    ),
    _Topic(
        "sports",
        ("sports drama", "boxing film", "underdog sports movie", "sports comedy"),
        ("in a struggling minor league town", "at a boxing gym in Philadelphia",
         "on a high school football field in Texas", "at the winter Olympics",
         "in a run-down hockey arena"),
        ("an aging boxer", "a rookie pitcher", "a stubborn coach", "a teenage sprinter",
         "a washed-up quarterback"),
        ("fights for one last title shot", "trains a hopeless team for the championship",
         "comes back from a career-threatening injury", "has to win the final race",
         "tries to make the national team"),
        ("a fighter suffers brain damage in the ring", "a player dies of a heart attack on the field",
         "an abusive coach breaks his athletes", "an injury ends a career in agony",
         "drugs and debt wreck the whole team"),
        ("the underdogs win the championship", "the whole town cheers its team home",
         "an old coach finally gets his trophy", "rivals embrace after the final whistle",
         "a girl from nowhere wins the gold medal"),
    ),
    _Topic(
        "crime",
        ("detective thriller", "murder mystery", "crime drama", "police procedural"),
        ("in rain-soaked Chicago", "in a sleepy English village", "in nineteen-seventies Naples",
         "on the docks of Marseille", "in a snowbound Norwegian town"),
        ("a burned-out detective", "a rookie police officer", "an amateur sleuth",
         "a crime reporter", "a public defender"),
        ("hunts a serial killer", "investigates a murder at a country estate",
         "exposes a corrupt police chief", "tries to free an innocent man",
         "follows the trail of a missing girl"),
        ("the bodies of murdered girls are found in the river", "a corrupt cop beats a suspect to death",
         "the killer mutilates his victims", "a family is slaughtered in their beds",
         "the city rots under violence and corruption"),
        ("an innocent man walks free", "a missing girl comes home safe",
         "the honest cops clean up the city", "a grieving father finds peace",
         "the neighbors rally around the young detective"),
    ),
    _Topic(
        "disaster",
        ("disaster movie", "survival thriller", "disaster epic", "survival drama"),
        ("in a coastal city hit by a tsunami", "on a sinking cruise ship",
         "in a town buried by an earthquake", "on a mountain during an avalanche",
         "in a city choked by wildfire"),
        ("a seismologist", "a firefighter", "a helicopter pilot", "a stranded hiker",
         "a ship's cook"),
        ("tries to get her children to safety", "leads survivors out of the ruins",
         "warns a city that refuses to listen", "must cross the ruined city to find his wife",
         "keeps a group alive until rescue comes"),
        ("thousands drown as the city floods", "people are crushed under collapsing buildings",
         "the fire burns families alive in their homes", "survivors starve and freeze in the wreckage",
         "the death toll climbs with horrible speed"),
        ("strangers risk everything to save each other", "the rescuers pull a baby from the rubble",
         "the city rebuilds with courage and kindness", "a family is reunited on the rescue boat",
         "the whole town welcomes the survivors home"),
    ),
    _Topic(
        "coming_of_age",
        ("coming-of-age film", "teen drama", "high school comedy", "coming-of-age drama"),
        ("in a small Ohio town", "at a strict boarding school", "during one hot summer in the eighties",
         "in the punk scene of Manchester", "on a Greek island"),
        ("a shy teenager", "a gifted skateboarder", "a new student", "an aspiring musician",
         "a restless sixteen-year-old"),
        ("starts a band against her parents' wishes", "falls in love for the first time",
         "prepares for the final exams", "runs away to find his real father",
         "tries to survive the last year of school"),
        ("a bullied boy is driven to despair", "a teenager overdoses at a party",
         "the parents' divorce turns ugly and violent", "a best friend dies in a car crash",
         "cruelty and loneliness crush every kid in town"),
        ("the misfits win the talent show", "a shy girl finds her voice",
         "two best friends make peace before graduation", "a father and son finally understand each other",
         "the whole school dances at the end of the year"),
    ),
    _Topic(
        "western",
        ("western", "revisionist western", "frontier drama", "outlaw western"),
        ("in a dusty border town", "on a cattle drive across Montana", "in a mining camp in the Sierra",
         "along the Santa Fe trail", "on a homestead in Wyoming"),
        ("an aging gunslinger", "a frontier widow", "a bounty hunter", "a young deputy",
         "a travelling preacher"),
        ("hunts the gang that burned the ranch", "defends the town from a railroad baron",
         "escorts a prisoner to trial", "searches for a kidnapped daughter", "refuses to sell the land"),
        ("a whole family is gunned down at supper", "the gang hangs an innocent boy",
         "settlers starve through a merciless winter", "a massacre leaves the valley full of graves",
         "a drunk sheriff beats a prisoner to death"),
        ("the town raises a new church together", "an outlaw gives back the stolen gold",
         "two feuding families share a harvest feast", "a widow and her children keep their farm",
         "the rain finally comes to the dry valley"),
    ),
    _Topic(
        "spy",
        ("spy thriller", "espionage drama", "cold war thriller", "spy comedy"),
        ("in cold war Berlin", "in Istanbul", "inside the Kremlin", "in a Lisbon hotel",
         "on a night train to Vienna"),
        ("a double agent", "a retired code breaker", "a junior embassy clerk", "a defecting scientist",
         "a veteran handler"),
        ("must smuggle a defector across the border", "hunts a mole inside the agency",
         "steals a list of undercover agents", "tries to stop a nuclear deal",
         "falls for the enemy's best agent"),
        ("an informant is tortured and left to die", "agents are betrayed and shot one by one",
         "a bomb kills dozens in a crowded station", "a prisoner is broken in a secret jail",
         "paranoia destroys a loyal marriage"),
        ("an old spy finally comes home to his family", "enemy agents become friends",
         "a defector's daughter sees her father walk free", "a peace treaty is quietly saved",
         "a humble clerk becomes an unlikely hero"),
    ),
)
TOPIC_NAMES = tuple(topic.name for topic in TOPICS)

# ---------------------------------------------------------------------------
# Neutral slot fillers: titles, people, circumstances.

FIRST_NAMES = (
    "Ava", "Daniel", "Mira", "Jonas", "Helena", "Marcus", "Ingrid", "Tomas",
    "Priya", "Oscar", "Lena", "Rafael", "Nadia", "Victor", "Clara", "Samuel",
    "Yuki", "Henrik", "Amara", "Felix", "Rosa", "Elliot", "Sofia", "Gideon",
    "Leila", "Bruno", "Esther", "Malcolm", "Irene", "Kofi", "Greta", "Dmitri",
    "Hana", "Lucas", "Beatrix", "Omar", "Celeste", "Anton", "Maya", "Walter",
    "Ines", "Patrick", "Zara", "Hugo", "Noor", "Theo", "Agnes", "Mateo",
    "Freya", "Idris", "Camille", "Emil", "Lucia", "Ruben", "Astrid", "Jasper",
    "Fatima", "Leon", "Vera", "Caspar",
)
LAST_NAMES = (
    "Halloran", "Okafor", "Lindqvist", "Moreau", "Castellano", "Brandt",
    "Whitfield", "Nakamura", "Petrov", "Delacroix", "Ashworth", "Romano",
    "Kowalski", "Adeyemi", "Vance", "Sorensen", "Marchetti", "Holloway",
    "Ibarra", "Fairbanks", "Takeda", "Oduya", "Reyes", "Thornton", "Novak",
    "Quinlan", "Abernathy", "Carvalho", "Esposito", "Lindgren", "Mbeki",
    "Penrose", "Rasmussen", "Sutherland", "Varga", "Winslow", "Zielinski",
    "Beaumont", "Kinsella", "Osei", "Achterberg", "Bianchi", "Castillo",
    "Drummond", "Eriksen", "Fontaine", "Grimaldi", "Haddad", "Jovanovic",
    "Kaplan", "Lachance", "Mendoza", "Nakashima", "Oyelaran", "Pellegrini",
    "Rinaldi", "Sandoval", "Tanaka", "Underwood", "Whitaker",
)
TITLE_ADJECTIVES = (
    "Silent", "Crimson", "Hollow", "Distant", "Burning", "Frozen", "Hidden",
    "Scarlet", "Iron", "Golden", "Midnight", "Wild", "Lonely", "Secret",
    "Northern", "Fallen", "Endless", "Quiet", "Paper", "Glass", "Velvet",
    "Broken", "Sleeping", "Wandering", "Forgotten", "Amber",
    "Copper", "Restless", "Southern",
)
TITLE_NOUNS = (
    "Harbor", "Garden", "Frontier", "Signal", "Orchard", "Kingdom", "Echo",
    "Horizon", "River", "Lantern", "Summer", "Winter", "Tide", "Crown",
    "Mirror", "Compass", "Shadow", "Engine", "Anthem", "Reckoning", "Bridge",
    "Letter", "Station", "Fortress", "Storm", "Covenant", "Meridian",
    "Harvest", "Citadel", "Promise", "Lighthouse", "Carnival", "Voyage",
    "Empire", "Witness", "Orchestra", "Labyrinth", "Sparrow", "Monsoon",
    "Avalanche", "Oracle", "Requiem", "Threshold", "Canyon", "Ballad",
)
TITLE_PLACES = (
    "Avalon", "Cold Hill", "Ashford", "Blackwater", "Kingsbridge", "Ember Bay",
    "Saint Clair", "the North", "the Valley", "Red Rock", "Port Elena",
    "Dunmore", "the Steppe", "Hollow Creek", "Lake Orin",
)
TITLE_PATTERNS = (
    "The {adjective} {noun}",
    "{noun} of {place}",
    "The Last {noun}",
    "Beyond the {noun}",
    "{adjective} {noun}",
    "The {noun} at {place}",
)
OCCASIONS = (
    "at a late-night screening", "on a rainy Sunday afternoon", "with my sister",
    "at a film festival", "on a long flight", "in a nearly empty cinema",
    "with a group of friends", "on opening night", "with my father",
    "at the local art house", "at a drive-in", "at a packed multiplex",
    "on a school night", "with my grandmother",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
RUNTIMES = (
    "a little over two hours", "just under two hours", "about ninety minutes",
    "nearly three hours", "a tight hundred minutes",
)
SOURCES = (
    "a bestselling novel", "a true story", "a graphic novel", "a stage play",
    "a short story", "an old radio drama", "a newspaper article",
)
RELEASES = (
    "in cinemas last Friday", "at a festival in the spring", "on a streaming service this month",
    "in a handful of theaters", "over the holidays",
)
SIDE_ROLES = (
    "the mentor", "a corrupt official", "the best friend", "a mysterious stranger",
    "a younger sibling", "the local sheriff", "an old flame", "the landlady",
    "a retired judge", "the hero's rival", "a nosy neighbor",
)
TIME_SPANS = ("a single night", "one long summer", "three days", "several decades", "a single week")
NEUTRAL_SLOTS = {
    "occasion": OCCASIONS,
    "weekday": WEEKDAYS,
    "runtime": RUNTIMES,
    "source": SOURCES,
    "release": RELEASES,
    "side_role": SIDE_ROLES,
    "span": TIME_SPANS,
    "negated_adverb": NEGATED_ADVERBS,
}
# Template slot -> the _Topic field it draws from.
TOPIC_SLOTS = {"protagonist": "protagonists", "plot": "plots", "setting": "settings"}

INTRO_TEMPLATES = (
    "{title} is the new {genre} from director {director}.",
    "I saw {title}, {director}'s latest {genre}, {occasion}.",
    "{director} returns with {title}, {a_genre} starring {actor}.",
    "{title} is {a_genre} directed by {director} and starring {actor}.",
    "last {weekday} I finally watched {title}, {a_genre} by {director}.",
    "everyone has been talking about {title}, the {genre} from {director}.",
    "{title} marks the first time {director} has tried {a_genre}.",
)
PLOT_TEMPLATES = (
    "the story follows {protagonist} who {plot} {setting}.",
    "set {setting}, it follows {protagonist} who {plot}.",
    "{actor} plays {protagonist} who {plot}.",
    "{actor} stars as {protagonist} who {plot} {setting}.",
    "it is the story of {protagonist} who {plot}.",
    "{setting}, {protagonist} {plot}.",
)
FILLER_TEMPLATES = (
    "it runs {runtime}.",
    "the film is based on {source}.",
    "I watched it {occasion}.",
    "{actor2} also appears as {side_role}.",
    "it opened {release}.",
    "the screenplay is by {writer}.",
    "the story takes place over {span}.",
    "{actor} and {actor2} share most of the screen time.",
)

# ---------------------------------------------------------------------------
# Opinions and verdicts. Sentences are written in lower case where they start
# with a template word and capitalized when assembled.

OPINION_TEMPLATES = (
    "{aspect} {be} {adverb} {adjective}.",
    "{aspect} {be} {adjective}.",
    "I found {aspect} {adverb} {adjective}.",
    "{aspect} {feel} {adverb} {adjective}, {tail}.",
    "to my eye, {aspect} {be} {adverb} {adjective}.",
    "I think {aspect} {be} {adverb} {adjective}.",
    "in my view, {aspect} {be} {adjective}.",
    "{aspect} {be} {adverb} {adjective} throughout.",
)
POLAR_OPINION_TEMPLATES = {
    POSITIVE: (
        "the real strength here is {aspect}, which {be} {adverb} {adjective}.",
        "I was won over by {aspect}, which {be} {adjective}.",
        "{aspect} {be} the highlight: {adverb} {adjective} from start to finish.",
        "credit also goes to {aspect}, which {be} {adjective}.",
    ),
    NEGATIVE: (
        "the biggest problem is {aspect}, which {be} {adverb} {adjective}.",
        "I kept getting distracted by {aspect}, which {be} {adjective}.",
        "{aspect} {be} the weak spot: {adverb} {adjective} from start to finish.",
        "{aspect} {be} a letdown, {adverb} {adjective} where it matters most.",
    ),
}
TAILS = {
    POSITIVE: (
        "lifting every scene", "carrying the quieter stretches",
        "which keeps the whole thing alive", "and I would watch the film twice for that alone",
    ),
    NEGATIVE: (
        "dragging every scene down", "which undercuts the drama",
        "and my patience wore thin", "and the whole film suffers for it",
    ),
}
# The adjective in these has the polarity opposite to the opinion expressed.
NEGATED_OPINION_TEMPLATES = (
    "{aspect} {be} not {adjective}.",
    "{aspect} {be} not {negated_adverb} {adjective}.",
    "{aspect} {be} never {adjective}.",
    "{aspect} {be} hardly {adjective}.",
    "{aspect} {be} far from {adjective}.",
    "I would not call {aspect} {adjective}.",
    "there is nothing {adjective} about {aspect}.",
    "I did not find {aspect} {adjective}.",
    "{aspect} {be} never once {adjective}.",
)
MIXED_CONNECTORS = ("however, ", "on the other hand, ", "then again, ", "at the same time, ", "but ")

# Openers for verdicts that do not bring their own (mixed verdicts do).
VERDICT_LEAD_INS = ("overall, ", "in short, ", "all in all, ", "bottom line: ", "in the end, ")
# (affirmation, negation) pairs: the affirmation of one label, negated, is a
# verdict of the other label, so that verdict words alone do not decide it.
VERDICT_PAIRS = {
    POSITIVE: (
        ("I recommend it without hesitation.", "I would not recommend it."),
        ("it is worth every minute.", "it is not worth a minute of your time."),
        ("a must-see.", "hardly a must-see."),
        ("I loved every minute of it.", "I did not love a single minute of it."),
        ("it earns every bit of its praise.", "it never earns its praise."),
        ("it is a masterpiece.", "it is hardly a masterpiece."),
        ("I will happily watch it again.", "I will never watch it again."),
    ),
    NEGATIVE: (
        ("it is a waste of two hours.", "it is not a waste of time at all."),
        ("I regret buying a ticket.", "I do not regret buying a ticket."),
        ("skip it.", "do not skip it."),
        ("I was bored long before the end.", "I was never bored, not even for a minute."),
        ("it left me disappointed.", "it will not leave you disappointed."),
        ("it is a failure on every level.", "it is far from a failure."),
        ("I kept checking my watch.", "I never once checked my watch."),
    ),
}
PLAIN_ONLY_VERDICTS = {
    POSITIVE: (
        "highly recommended.", "go see it on the biggest screen you can find.",
        "do yourself a favor and catch it in a cinema.",
    ),
    NEGATIVE: (
        "save your money and stay home.", "avoid it.",
        "it is one of the worst films I have seen this year.",
    ),
}
PLAIN_VERDICTS = {
    label: tuple(affirmation for affirmation, _ in VERDICT_PAIRS[label]) + PLAIN_ONLY_VERDICTS[label]
    for label in (NEGATIVE, POSITIVE)
}
NEGATED_VERDICTS = {
    label: tuple(negation for _, negation in VERDICT_PAIRS[1 - label]) for label in (NEGATIVE, POSITIVE)
}
# (positive, negative) verdicts of mixed reviews, built from the same words so
# that only their order or a negation tells them apart.
MIXED_VERDICT_PAIRS = (
    ("still, the strengths outweigh the flaws.", "still, the flaws outweigh the strengths."),
    ("in the end, what works far outweighs what does not.",
     "in the end, what does not work far outweighs what works."),
    ("on balance, the good easily beats the bad.", "on balance, the bad easily beats the good."),
    ("despite the flaws, I enjoyed it.", "despite the strengths, I did not enjoy it."),
    ("the problems are real, but they never sink it.", "the virtues are real, but they never save it."),
    ("taken as a whole, I would recommend it.", "taken as a whole, I would not recommend it."),
)
MIXED_VERDICTS = {
    POSITIVE: tuple(positive for positive, _ in MIXED_VERDICT_PAIRS),
    NEGATIVE: tuple(negative for _, negative in MIXED_VERDICT_PAIRS),
}
RATINGS = {
    POSITIVE: ("eight out of ten.", "nine out of ten.", "ten out of ten.", "four stars.", "five stars."),
    NEGATIVE: ("two out of ten.", "three out of ten.", "four out of ten.", "one star.", "two stars."),
}
# Contrast reviews open with the expectation opposite to the label; the
# adjectives in the opener have the opposite polarity too.
CONTRAST_OPENERS = (
    "going in, I expected {a_adjective} and {adjective2} {genre}.",
    "critics have called it {adjective} and {adjective2}.",
    "the trailer made it look {adjective} and {adjective2}.",
    "friends told me it was {adjective}.",
)
# Label -> adjectives of the expectation its contrast reviews refute.
CONTRAST_ADJECTIVES = {POSITIVE: NEGATIVE_STRONG + NEGATIVE_MILD, NEGATIVE: POSITIVE_STRONG}
CONTRAST_TURNS = {
    POSITIVE: (
        "I was wrong.", "I am glad I ignored them.", "the film proved me wrong within ten minutes.",
        "that turned out to be completely wrong.",
    ),
    NEGATIVE: (
        "I wish that were true.", "that is not the film I saw.",
        "what I got was something else entirely.", "I cannot see why.",
    ),
}
# Sentences about the events on screen. Plain reviews use them in the tone of
# their label (grim events in negative reviews, bright ones in positive
# reviews), so across the corpus these words lean towards a label; the hard
# reviews tell their plot in the other tone, which is what makes them hard.
EVENT_TEMPLATES = (
    "we watch as {event}.",
    "the camera stays close when {event}.",
    "it shows, in {tone} detail, how {event}.",
    "the middle hour is {tone}: {event}.",
    "the film lingers on the moment {event}.",
    "it is {tone} and {tone2} to watch.",
)
TONE_ADJECTIVES = {POSITIVE: BRIGHT_ADJECTIVES, NEGATIVE: GRIM_ADJECTIVES}
# Tone -> the _Topic field its events come from.
TONE_EVENTS = {POSITIVE: "bright_events", NEGATIVE: "grim_events"}
# Label -> the kind whose plot is told in the opposite tone.
HARD_KINDS = {POSITIVE: KIND_GRIM_PLOT, NEGATIVE: KIND_BRIGHT_PLOT}
# Hard reviews end with one of their own verdicts or an ordinary one.
HARD_VERDICTS = {
    POSITIVE: PLAIN_VERDICTS[POSITIVE] + (
        "it is a hard film to sit through, and an essential one.",
        "nobody will enjoy it, but everybody should see it.",
        "I left shaken, and I think it is a masterpiece.",
        "devastating, and one of the best films of the year.",
        "painful to watch and impossible to forget; see it.",
    ),
    NEGATIVE: PLAIN_VERDICTS[NEGATIVE] + (
        "the story deserved a far better film.",
        "a beautiful story, and a bad film.",
        "sadly, the film itself is a mess.",
        "all that goodness is buried under lifeless filmmaking.",
        "it wants to warm your heart and only tries your patience.",
    ),
}

# Word pairs a light paraphrase may swap, in either direction; each pair keeps
# the polarity of the word it replaces.
SYNONYM_PAIRS = (
    ("film", "movie"), ("story", "tale"), ("director", "filmmaker"),
    ("superb", "excellent"), ("awful", "lousy"), ("dull", "boring"),
    ("watched", "saw"), ("latest", "newest"), ("starring", "featuring"),
    ("plays", "portrays"), ("truly", "genuinely"), ("cinema", "theater"),
    ("every", "each"), ("terrible", "horrible"), ("beautiful", "gorgeous"),
)
SYNONYMS = {a: b for a, b in SYNONYM_PAIRS} | {b: a for a, b in SYNONYM_PAIRS}


@dataclass(frozen=True)
class DemoReview:
    """One generated review; ``kind`` says how its sentiment is expressed."""

    text: str
    label: int
    topic: str
    kind: str


@dataclass(frozen=True)
class DemoCorpus:
    """Train and test reviews, and the (train index, test index) near-duplicates planted in test."""

    train: list[DemoReview]
    test: list[DemoReview]
    near_duplicates: list[tuple[int, int]]


@dataclass(frozen=True)
class _Film:
    """The facts one review talks about, drawn once per review."""

    topic: _Topic
    title: str
    genre: str
    director: str
    actor: str
    actor2: str
    writer: str


@dataclass(frozen=True)
class _Draft:
    """A review kept as sentences, so that a paraphrase can drop one."""

    sentences: tuple[str, ...]
    label: int
    topic: str
    kind: str

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    def review(self) -> DemoReview:
        return DemoReview(self.text, self.label, self.topic, self.kind)


def count_tokens(text: str) -> int:
    """Words plus punctuation marks: an upper bound on a word-level tokenizer's token count."""
    return len(_TOKEN_RE.findall(text))


@functools.lru_cache(maxsize=None)
def _template_fields(template: str) -> tuple[str, ...]:
    """The template's field names, once each, in order: a set's order would change the random
    draws from one process to the next (string hashing is salted per process)."""
    return tuple(dict.fromkeys(name for _, name, _, _ in string.Formatter().parse(template) if name))


def _count_words(text: str) -> int:
    return len(text.split())


def _capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class _Length:
    """Sentence, word and token counts of a review; they add up over its sentences."""

    sentences: int
    words: int
    tokens: int

    @classmethod
    def of(cls, sentences: list[str]) -> _Length:
        return cls(
            len(sentences),
            sum(_count_words(s) for s in sentences),
            sum(count_tokens(s) for s in sentences),
        )

    def __add__(self, other: _Length) -> _Length:
        return _Length(self.sentences + other.sentences, self.words + other.words, self.tokens + other.tokens)

    def fits(self) -> bool:
        return self.sentences <= MAX_SENTENCES and self.words <= MAX_WORDS and self.tokens <= MAX_TOKENS


class _Writer:
    """Writes reviews from the templates, drawing every choice from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    # -- slot fillers ------------------------------------------------------

    def _name(self) -> str:
        return f"{self._rng.choice(FIRST_NAMES)} {self._rng.choice(LAST_NAMES)}"

    def _title(self) -> str:
        return self._rng.choice(TITLE_PATTERNS).format(
            adjective=self._rng.choice(TITLE_ADJECTIVES),
            noun=self._rng.choice(TITLE_NOUNS),
            place=self._rng.choice(TITLE_PLACES),
        )

    def _film(self) -> _Film:
        topic = self._rng.choice(TOPICS)
        return _Film(
            topic=topic,
            title=self._title(),
            genre=self._rng.choice(topic.genres),
            director=self._name(),
            actor=self._name(),
            actor2=self._name(),
            writer=self._name(),
        )

    def _fill(self, template: str, film: _Film, **slots: str) -> str:
        """Format ``template`` with the film's facts and fresh neutral fillers, then capitalize.

        Only the slots the template uses are drawn, which keeps generation fast.
        """
        values = {
            "title": film.title,
            "genre": film.genre,
            "a_genre": _with_article(film.genre),
            "director": film.director,
            "actor": film.actor,
            "actor2": film.actor2,
            "writer": film.writer,
            **slots,
        }
        for name in _template_fields(template):
            if name in NEUTRAL_SLOTS:
                values[name] = self._rng.choice(NEUTRAL_SLOTS[name])
            elif name in TOPIC_SLOTS:
                values[name] = self._rng.choice(getattr(film.topic, TOPIC_SLOTS[name]))
        return _capitalize(template.format(**values))

    def _adjective(self, polarity: int, aspect: _Aspect) -> tuple[str, str]:
        """A graded adjective of ``polarity`` fitting ``aspect``, with a matching adverb."""
        strong = self._rng.random() < STRONG_PROBABILITY
        if self._rng.random() < ASPECT_ADJECTIVE_PROBABILITY:
            words = aspect.positive if polarity == POSITIVE else aspect.negative
        elif polarity == POSITIVE:
            words = POSITIVE_STRONG if strong else POSITIVE_MILD
        else:
            words = NEGATIVE_STRONG if strong else NEGATIVE_MILD
        adverb = self._rng.choice(STRONG_ADVERBS if strong else MILD_ADVERBS)
        return self._rng.choice(words), adverb

    # -- sentences ---------------------------------------------------------

    def _opinion(self, film: _Film, polarity: int, negated: bool, aspect: _Aspect,
                 connector: str = "") -> str:
        """One sentence judging ``aspect`` with ``polarity``, literally or by negating the opposite."""
        plural = self._rng.random() < len(aspect.plural) / (len(aspect.plural) + len(aspect.singular))
        phrase = self._rng.choice(aspect.plural if plural else aspect.singular)
        if negated:
            adjective, _ = self._adjective(1 - polarity, aspect)
            template = self._rng.choice(NEGATED_OPINION_TEMPLATES)
            adverb = ""
        else:
            adjective, adverb = self._adjective(polarity, aspect)
            template = self._rng.choice(OPINION_TEMPLATES + POLAR_OPINION_TEMPLATES[polarity])
        return self._fill(
            connector + template,
            film,
            aspect=phrase.format(actor=film.actor, director=film.director),
            be="are" if plural else "is",
            feel="feel" if plural else "feels",
            adverb=adverb,
            adjective=adjective,
            tail=self._rng.choice(TAILS[polarity]),
        )

    def _opinions(self, film: _Film, polarities: list[int], negations: list[bool],
                  connectors: Optional[list[str]] = None) -> list[str]:
        """Opinions on distinct aspects, one per polarity."""
        aspects = self._rng.sample(ASPECTS, len(polarities))
        connectors = connectors or [""] * len(polarities)
        return [self._opinion(film, *args) for args in zip(polarities, negations, aspects, connectors)]

    def _verdict(self, film: _Film, verdicts: tuple[str, ...], lead_in: bool = True) -> str:
        """One of ``verdicts``, sometimes after a lead-in such as "all in all"."""
        opener = ""
        if lead_in and self._rng.random() < LEAD_IN_PROBABILITY:
            opener = self._rng.choice(VERDICT_LEAD_INS)
        return self._fill(opener + self._rng.choice(verdicts), film)

    def _events(self, film: _Film, tone: int, count: int) -> list[str]:
        """``count`` sentences about distinct events of the film's topic, told in ``tone``."""
        events = self._rng.sample(getattr(film.topic, TONE_EVENTS[tone]), count)
        sentences = []
        for template, event in zip(self._rng.sample(EVENT_TEMPLATES, count), events):
            first, second = self._rng.sample(TONE_ADJECTIVES[tone], 2)
            sentences.append(self._fill(template, film, event=event, tone=first, tone2=second))
        return sentences

    def _plain_body(self, film: _Film, label: int) -> list[str]:
        count = self._rng.randint(2, 3)
        events = self._events(film, label, 1) if self._rng.random() < TONE_PROBABILITY else []
        return self._opinions(film, [label] * count, [False] * count) + events + [
            self._verdict(film, PLAIN_VERDICTS[label])
        ]

    def _negated_body(self, film: _Film, label: int) -> list[str]:
        count = self._rng.randint(2, 3)
        negations = [self._rng.random() < NEGATED_OPINION_PROBABILITY for _ in range(count)]
        negations[self._rng.randrange(count)] = True
        negated_verdict = self._rng.random() < NEGATED_VERDICT_PROBABILITY
        verdicts = NEGATED_VERDICTS[label] if negated_verdict else PLAIN_VERDICTS[label]
        return self._opinions(film, [label] * count, negations) + [self._verdict(film, verdicts)]

    def _mixed_body(self, film: _Film, label: int) -> list[str]:
        """Praise and criticism in two groups; only the verdict decides the label."""
        first = self._rng.choice((label, 1 - label))
        sizes = (self._rng.randint(1, 2), self._rng.randint(1, 2))
        polarities = [first] * sizes[0] + [1 - first] * sizes[1]
        connectors = [""] * len(polarities)
        connectors[sizes[0]] = self._rng.choice(MIXED_CONNECTORS)
        opinions = self._opinions(film, polarities, [False] * len(polarities), connectors)
        return opinions + [self._verdict(film, MIXED_VERDICTS[label], lead_in=False)]

    def _contrast_body(self, film: _Film, label: int) -> list[str]:
        """An expectation of the opposite polarity, refuted, then the reviewer's own view."""
        first, second = self._rng.sample(CONTRAST_ADJECTIVES[label], 2)
        opener = self._fill(
            self._rng.choice(CONTRAST_OPENERS),
            film,
            a_adjective=_with_article(first),
            adjective=first,
            adjective2=second,
        )
        turn = self._fill(self._rng.choice(CONTRAST_TURNS[label]), film)
        count = self._rng.randint(1, 2)
        return [opener, turn] + self._opinions(film, [label] * count, [False] * count) + [
            self._verdict(film, PLAIN_VERDICTS[label])
        ]

    def _hard_body(self, film: _Film, label: int) -> list[str]:
        """Plot events told in the tone opposite to the label, then the label's verdict."""
        sentences = self._events(film, 1 - label, self._rng.randint(2, 3))
        if self._rng.random() < EXTRA_OPINION_PROBABILITY:
            sentences += self._opinions(film, [label], [False])
        return sentences + [self._verdict(film, HARD_VERDICTS[label])]

    def _body(self, film: _Film, label: int, kind: str) -> list[str]:
        if kind == KIND_PLAIN:
            return self._plain_body(film, label)
        if kind == KIND_NEGATED:
            return self._negated_body(film, label)
        if kind == KIND_MIXED:
            return self._mixed_body(film, label)
        if kind == KIND_CONTRAST:
            return self._contrast_body(film, label)
        if kind == HARD_KINDS[label]:
            return self._hard_body(film, label)
        raise ValueError(f"unknown review kind {kind!r}")

    # -- whole reviews -----------------------------------------------------

    def review(self, label: int, kind: str) -> Optional[_Draft]:
        """A review of ``kind`` with ``label``, or None when the draw does not fit the length limits.

        Intro, body and verdict are mandatory; a plot summary, neutral
        remarks and a rating fill the review up to a drawn target length.
        """
        film = self._film()
        intro = self._fill(self._rng.choice(INTRO_TEMPLATES), film)
        body = self._body(film, label, kind)
        plot = [self._fill(self._rng.choice(PLOT_TEMPLATES), film)] \
            if self._rng.random() < PLOT_PROBABILITY else []
        rating = [self._fill(self._rng.choice(RATINGS[label]), film)] \
            if self._rng.random() < RATING_PROBABILITY else []
        filler_count = self._rng.randint(0, MAX_FILLERS)
        fillers = [self._fill(t, film) for t in self._rng.sample(FILLER_TEMPLATES, filler_count)]
        target = self._rng.randint(*TARGET_WORDS_RANGE)

        head, tail = [intro], body + rating
        length = _Length.of(head + tail)
        for optional in plot + fillers:
            if length.words >= target:
                break
            longer = length + _Length.of([optional])
            if longer.fits():
                head.append(optional)
                length = longer
        if not length.fits() or length.words < MIN_WORDS:
            return None
        sentences = head + tail
        return _Draft(tuple(sentences), label, film.topic.name, kind)

    def paraphrase(self, draft: _Draft) -> Optional[_Draft]:
        """A light paraphrase of ``draft``: a middle sentence dropped and/or a few words swapped."""
        sentences = list(draft.sentences)
        words = _count_words(draft.text)
        droppable = [
            i for i in range(1, len(sentences) - 1)
            if words - _count_words(sentences[i]) >= MIN_WORDS
        ] if len(sentences) > MIN_SENTENCES else []
        if droppable and self._rng.random() < NEAR_DUPLICATE_DROP_PROBABILITY:
            del sentences[self._rng.choice(droppable)]
        text = " ".join(sentences)
        matches = [m for m in _WORD_RE.finditer(text) if m.group().lower() in SYNONYMS]
        swaps = self._rng.sample(matches, min(len(matches), self._rng.randint(1, NEAR_DUPLICATE_MAX_SWAPS)))
        for match in sorted(swaps, key=lambda m: m.start(), reverse=True):
            word = match.group()
            synonym = SYNONYMS[word.lower()]
            if word[0].isupper():
                synonym = _capitalize(synonym)
            text = text[:match.start()] + synonym + text[match.end():]
        if text == draft.text:
            return None
        return _Draft((text,), draft.label, draft.topic, KIND_NEAR_DUPLICATE)


def _plan(size: int, positives: int, rng: random.Random) -> list[tuple[int, str]]:
    """(label, kind) for ``size`` reviews with exactly ``positives`` positive, in random order."""
    negatives = size - positives
    grim = min(round(size * GRIM_PLOT_FRACTION), positives)
    bright = min(round(size * BRIGHT_PLOT_FRACTION), negatives)
    kinds, weights = zip(*DRAWN_KIND_WEIGHTS)
    slots = [(POSITIVE, KIND_GRIM_PLOT)] * grim + [(NEGATIVE, KIND_BRIGHT_PLOT)] * bright
    labels = [POSITIVE] * (positives - grim) + [NEGATIVE] * (negatives - bright)
    slots += [(label, rng.choices(kinds, weights)[0]) for label in labels]
    rng.shuffle(slots)
    return slots


def _unique(make: Callable[[], Optional[_Draft]], seen: set[str]) -> _Draft:
    """Call ``make`` until it returns a draft whose text is new, and record that text."""
    for _ in range(MAX_ATTEMPTS):
        draft = make()
        if draft is not None and draft.text not in seen:
            seen.add(draft.text)
            return draft
    raise RuntimeError(f"could not generate a new review in {MAX_ATTEMPTS} attempts")


def _near_duplicate_sources(train: list[_Draft], count: int, rng: random.Random) -> list[int]:
    """Train indices of plain reviews to paraphrase, half of them positive, in random order."""
    pools = {
        label: [i for i, d in enumerate(train) if d.kind == KIND_PLAIN and d.label == label]
        for label in (POSITIVE, NEGATIVE)
    }
    wanted = {POSITIVE: (count + 1) // 2, NEGATIVE: count // 2}
    chosen = [i for label in (POSITIVE, NEGATIVE)
              for i in rng.sample(pools[label], min(wanted[label], len(pools[label])))]
    rng.shuffle(chosen)
    return chosen


def generate_corpus(num_train: int = 2000, num_test: int = 500, seed: int = 0) -> DemoCorpus:
    """Generate the demo corpus; the same arguments give the same corpus on every platform.

    Each split has ``size // 2`` positive reviews. About 1% of the test split
    are paraphrases of plain training reviews, listed in ``near_duplicates``.
    No text occurs twice in the corpus.
    """
    if num_train < 0 or num_test < 0:
        raise ValueError("split sizes must be non-negative")
    rng = random.Random(seed)
    writer = _Writer(rng)
    seen: set[str] = set()

    train = [_unique(functools.partial(writer.review, label, kind), seen)
             for label, kind in _plan(num_train, num_train // 2, rng)]

    sources = _near_duplicate_sources(train, round(num_test * NEAR_DUPLICATE_FRACTION), rng)
    duplicates = [_unique(functools.partial(writer.paraphrase, train[i]), seen) for i in sources]
    duplicate_positives = sum(d.label for d in duplicates)
    regular_size = num_test - len(duplicates)
    regular = [_unique(functools.partial(writer.review, label, kind), seen)
               for label, kind in _plan(regular_size, num_test // 2 - duplicate_positives, rng)]

    positions = sorted(rng.sample(range(num_test), len(duplicates)))
    placed = dict(zip(positions, duplicates))
    remaining = iter(regular)
    test = [placed[j] if j in placed else next(remaining) for j in range(num_test)]
    return DemoCorpus(
        train=[d.review() for d in train],
        test=[d.review() for d in test],
        near_duplicates=list(zip(sources, positions)),
    )
