"""What training has Piper say: the wake phrase in variants, near misses that
must not wake (its parts, a word swapped, a sound changed) and ordinary speech,
planned up front with a prosody each."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..audio.format import MODEL_SAMPLE_RATE
from ..errors import UsageError
from .synthesis import PLAIN, Line, Speaker, random_prosody


# Effort per --minutes unit, sized to take about a minute on a 2-core x86 PC.
PHRASE_TAKES = 120  # Piper syntheses of the phrase
NEAR_MISS_TAKES = 80
SPEECH_TAKES = 150  # ordinary speech, about 2.5 s each


# A classifier window spans 1.96 s; slow takes must still fit with some lead-in.
MIN_PHRASE_SECONDS = 0.25
MAX_PHRASE_SECONDS = 1.4


SENTENCES = (
    "The weather will be cloudy in the morning with some rain later in the day.",
    "Could you pass me the salt and the pepper, please?",
    "I think we should leave a bit earlier tomorrow to avoid the traffic.",
    "She bought three apples, a loaf of bread and some cheese at the market.",
    "The meeting has been moved to Thursday afternoon at half past two.",
    "Turn left at the next corner and then keep going straight for a mile.",
    "My brother is learning to play the guitar, and he practices every night.",
    "Dinner is almost ready, so wash your hands and set the table.",
    "The children were playing football in the park until it got dark.",
    "Scientists discovered a new species of frog in the rain forest.",
    "Have you seen my keys? I left them on the kitchen counter this morning.",
    "The train to the city departs from platform four in ten minutes.",
    "We watched a documentary about the history of ancient Rome last night.",
    "Remember to water the plants while I am away on holiday.",
    "The stock market closed slightly higher after a quiet day of trading.",
    "This recipe needs two cups of flour, one egg and a pinch of sugar.",
    "It is going to be a long week, but we will get through it together.",
    "The museum is open every day except Monday from nine until five.",
    "Please call me back when you get this message, it is about the party.",
    "The team scored in the final minute and the crowd went wild.",
    "I would like a cup of coffee with milk and no sugar, thank you.",
    "Our neighbors are painting their fence a bright shade of yellow.",
    "The library will be closed for renovations during the whole of August.",
    "Let me know if you need any help carrying the boxes upstairs.",
    "He told a funny story about his first day at work and everyone laughed.",
    "The doctor said I should drink more water and get some exercise.",
    "Traffic is heavy on the highway because of an accident near the bridge.",
    "Who wants to go for a walk by the river after lunch?",
    "The new phone has a bigger screen and a much better camera.",
    "Good evening and welcome to the news at six.",
    "Tell me what you think about the plan before we decide anything.",
    "Yesterday it snowed so much that the schools were closed.",
    "Hello there, how are you doing today?",
    "Okay, so that is settled then, see you next week.",
    "Yes, no, maybe, I am not sure what to say anymore.",
    "Thank you very much for coming, it was lovely to see you.",
)


# Never used in training: speech a model has not heard, for judging it
# (scripts/bench_wakeword.py, the tests).
UNSEEN_SENTENCES = (
    "I need to buy some new shoes before the wedding next month.",
    "Can you believe how expensive vegetables have become this year?",
    "The cat jumped onto the table and knocked over a glass of water.",
    "We should call the plumber about the leaking pipe in the bathroom.",
    "After the concert we went out for pizza with our friends.",
    "My grandmother makes the best apple pie in the whole town.",
    "Please remember to lock the door when you leave the house.",
    "The airplane landed safely despite the strong winds.",
    "Did you remember to feed the dog this morning?",
    "The professor explained the theory with a simple example.",
    "The library closes early on Sundays during the summer.",
    "Our train was delayed by almost an hour this morning.",
)


# Random strings of common words give the negative speech phonetic variety that a
# fixed list of sentences cannot (any voice reads them, in its own language's way).
WORDS = """
about across add again ago air almost along also among animal answer appear area around art at baby
bad ball base bear beauty before behind below better big bit blood board body book both box bread
bright brother build business but call can care case catch cell chair change check choose city clean
climb close cloud cold come company cool corn cost count course cow crowd cup cut dark dead dear
deep design detail die dinner do dog door down dream drink drop during early east eat effect eight
else enemy enjoy enter evening ever exact except expect eye fact fall famous farm father feel field
figure film find finger fire fish floor fly food for forest form four fresh from fruit fun garden
gather gentle gift give glass gold got grass green group guess gun half hand happy hat he hear heat
help here hill his hit hole hope hot house huge hundred hurry if in include inside iron it join jump
keep kid kind kitchen know lake language last laugh lay learn leave leg letter lie lift like list
little long lost loud low machine major man map market match may mean meat member middle mile
million minute modern money moon morning mother mouth much must nation near need never news nice
nine none north note notice number ocean off office oil once only order our over page pair park
party past people person picture place plant please pocket poor possible power prepare pretty print
produce pull put quick quite radio raise read real receive red repeat rest return ride ring river
rock room rope round rule safe salt sand say science sea seat see seem send serve seven shape sharp
sheep shine shoe short shoulder show sign simple sing sister six skin sleep small smile so soil some
song sound space special spell spring stand start station steel stick stone store straight street
student such sugar sun sure swim tail talk teach tell test thank the them there they thin think this
though thousand through tie tiny to together tomorrow too total toward track train tree trouble true
turn two until upon use valley very village voice walk want wash water way wear week well what when
which white whole wide wild win window wire with wonder word world wrong year yes you
""".split()


# Words that often come next to or instead of a wake word's words.
COMMON_WORDS = ("there", "you", "guys", "man", "yes", "okay", "hello", "stop", "see", "then", "the", "a", "listen", "wait")


# Near misses change one consonant to a clearly different one (place of
# articulation, not just voicing: "dessa" for "tessa" is too close to call).
SIMILAR_CONSONANTS = {
    "p": "tk", "b": "dɡ", "t": "kp", "d": "ɡb", "k": "tp", "ɡ": "db",
    "f": "sʃ", "v": "zð", "s": "fʃ", "z": "vð", "ʃ": "sf", "θ": "sf", "ð": "zv",
    "m": "nŋ", "n": "mŋ", "ŋ": "nm", "l": "ɹw", "ɹ": "lw", "w": "lɹ", "j": "lw",
}


# ... or one vowel to a clearly different one.
SIMILAR_VOWELS = {
    "ɛ": "ɪæʌ", "æ": "ɛɑʌ", "ɪ": "ɛiʊ", "i": "ɪeu", "ʌ": "ɑæɛ", "ɑ": "ʌæɔ", "ɔ": "ɑoʊ",
    "ʊ": "uɪɔ", "u": "ʊoi", "e": "aoi", "o": "eau", "a": "eoæ", "ɚ": "ɑɔ", "ɜ": "ɛʌ",
}


def tidy_phrase(phrase: str) -> str:
    """Whitespace collapsed; an empty phrase is refused before anything is loaded."""
    phrase = " ".join(phrase.split())
    if not phrase:
        raise UsageError("the wake phrase is empty")
    return phrase


def check_phrase(phrase: str, speakers: Sequence[Speaker]) -> None:
    """A UsageError saying why, unless every voice can say the phrase in a
    wake-word-sized breath."""
    for speaker in speakers:
        phonemes = speaker.phonemes(phrase)
        if not "".join(phonemes).strip():
            raise UsageError(f"Piper cannot speak {phrase!r} with voice {speaker.name}: no pronounceable words")
        unknown = sorted({p for p in phonemes if p not in speaker.voice.config.phoneme_id_map})
        if unknown:
            raise UsageError(f"Piper cannot speak {phrase!r} with voice {speaker.name}: unknown phonemes {' '.join(unknown)}")
        seconds = len(speaker.say(phonemes, PLAIN)) / MODEL_SAMPLE_RATE
        if seconds < MIN_PHRASE_SECONDS:
            raise UsageError(f"wake phrase {phrase!r} is too short ({seconds:.2f} s spoken): use two or more syllables")
        if seconds > MAX_PHRASE_SECONDS:
            raise UsageError(
                f"wake phrase {phrase!r} is too long ({seconds:.1f} s spoken by {speaker.name}); "
                f"it must fit in {MAX_PHRASE_SECONDS} s (2 to 5 syllables work best)"
            )


def phrase_variants(phrase: str) -> list[str]:
    """Punctuation changes Piper's intonation: said plainly, as a call, as a question."""
    words = phrase.split()
    called = f"{words[0]}, {' '.join(words[1:])}" if len(words) > 1 else phrase
    return [phrase, f"{phrase}!", f"{called}.", f"{phrase}?"]


def near_misses(phrase: str, speaker: Speaker, rng: np.random.Generator, count: int) -> list[list[str]]:
    """Phoneme sequences close to the phrase that must not wake: its parts ("hey",
    "tessa"), a word swapped ("hey there"), its words in another order, and one or
    two sounds changed ("hey tesla", "hey tossa")."""
    words = phrase.split()
    phonemes = speaker.phonemes(phrase)
    if len(words) == 1:
        half = max(2, len(phonemes) // 2)
        parts = [phonemes[:half], phonemes[-half:]]
    else:
        texts = [" ".join(words[:i]) for i in range(1, len(words))] + [" ".join(words[i:]) for i in range(1, len(words))]
        texts += [" ".join([*words[:i], str(rng.choice(COMMON_WORDS)), *words[i + 1 :]]) for i in range(len(words)) for _ in range(3)]
        texts.append(" ".join(reversed(words)))
        parts = [speaker.phonemes(text) for text in texts]
    similar = {**SIMILAR_CONSONANTS, **SIMILAR_VOWELS}
    # A diphthong's second half ("ey" → "ei") changes too little to count as a miss.
    changeable = [i for i, p in enumerate(phonemes) if p in similar and not (i and phonemes[i - 1] in SIMILAR_VOWELS)]
    misses = []
    for _ in range(count):
        if not changeable or rng.random() < 0.4:
            misses.append(list(parts[rng.integers(len(parts))]))
            continue
        changed = list(phonemes)
        for index in rng.choice(changeable, size=min(len(changeable), 1 + int(rng.random() < 0.3)), replace=False):
            changed[index] = str(rng.choice(list(similar[changed[index]])))
        misses.append(changed)
    return misses


def ordinary_text(rng: np.random.Generator) -> str:
    """A sentence from the list or, more often, a string of 3 to 8 random words
    (short: Piper's memory grows with the length of what it says)."""
    if rng.random() < 0.3:
        return SENTENCES[rng.integers(len(SENTENCES))]
    return " ".join(rng.choice(WORDS, rng.integers(3, 9)))


def plan_lines(phrase: str, speakers: Sequence[Speaker], minutes: float, rng: np.random.Generator) -> list[list[Line]]:
    """Phrase takes, near misses and ordinary speech, speakers taking turns, each
    line with its own random prosody."""
    counts = [max(4, round(count * minutes)) for count in (PHRASE_TAKES, NEAR_MISS_TAKES, SPEECH_TAKES)]
    variants = [[speaker.phonemes(text) for text in phrase_variants(phrase)] for speaker in speakers]
    misses = [near_misses(phrase, speaker, rng, counts[1] // len(speakers) + 1) for speaker in speakers]
    texts: list[Callable[[int, int], list[str]]] = [
        lambda s, i: variants[s][i % len(variants[s])],
        lambda s, i: misses[s][i // len(speakers)],
        lambda s, i: speakers[s].phonemes(ordinary_text(rng)),
    ]
    return [
        [Line(i % len(speakers), text(i % len(speakers), i), random_prosody(rng)) for i in range(count)]
        for count, text in zip(counts, texts)
    ]
