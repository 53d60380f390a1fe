"""Captions for a plan of actions, several phrasings per action and per count, and HumanML3D caption lines.

A caption is `<subject> <action 1>[, then <action 2>[, then <action 3>]]`, every action phrased by a template
drawn at random. The `#tok/POS` part of a HumanML3D caption line comes from a small word list and a few rules
(lemma and universal POS tag per word), not from a trained tagger.
"""

from __future__ import annotations

import re

import numpy as np

from .actions import Action

_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
_TIMES = {
    1: ["once", "one time", "1 time", "a single time"],
    2: ["twice", "two times", "2 times"],
    3: ["three times", "3 times", "thrice"],
}
_SUBJECTS = [
    ("a person", "their"),
    ("the person", "their"),
    ("someone", "their"),
    ("a man", "his"),
    ("a woman", "her"),
    ("the man", "his"),
    ("the woman", "her"),
    ("a boy", "his"),
    ("a girl", "her"),
    ("an actor", "their"),
    ("a figure", "their"),
]
_JOINS = [
    ", then ",
    " and then ",
    " then ",
    ", and then ",
    ". Then the person ",
    ", after which the person ",
    ", and next ",
    " and later ",
    ", and once done ",
    "; then ",
    ", subsequently ",
]

# Templates; {times} "twice", {n} "two"/"2", {steps} "two steps", {side} "left", {dir} "left", {pos} "his".
_TEMPLATES: dict[tuple[str, str | None], list[str]] = {
    ("walk", "forward"): [
        "walks forward {steps}",
        "takes {steps} forward",
        "walks {steps} forward",
        "steps forward {steps}",
        "moves forward {steps}",
        "marches forward {steps}",
        "walks ahead for {steps}",
        "goes forward {steps}",
    ],
    ("walk", "backward"): [
        "walks backward {steps}",
        "takes {steps} backward",
        "steps back {steps}",
        "walks backwards {steps}",
        "moves backwards {steps}",
        "retreats {steps} backward",
        "walks in reverse for {steps}",
    ],
    ("run", "forward"): [
        "runs forward",
        "jogs forward",
        "runs ahead",
        "runs a short distance forward",
        "starts running forward and stops",
        "dashes forward",
        "jogs ahead",
        "runs straight ahead",
    ],
    ("side_step", None): [
        "side steps to the {dir} {times}",
        "steps sideways to the {dir} {times}",
        "shuffles to the {dir} {times}",
        "takes {sidesteps} to the {dir}",
        "moves sideways to the {dir} {times}",
        "sidesteps {dir} {times}",
        "steps out to the {dir} side {times}",
    ],
    ("jump", "in_place"): [
        "jumps {times}",
        "jumps in place {times}",
        "hops on the spot {times}",
        "jumps up and down {times}",
        "does {jumps} in place",
        "jumps into the air {times}",
        "hops up {times}",
        "jumps on the spot {times}",
        "leaps up {times}",
        "does {jumps} on the spot",
    ],
    ("jump", "forward"): [
        "jumps forward {times}",
        "leaps forward {times}",
        "hops forward {times}",
        "does {jumps} forward",
        "jumps ahead {times}",
        "does {jumps} ahead",
        "hops ahead {times}",
    ],
    ("turn", 90): [
        "turns {dir}",
        "turns to the {dir}",
        "turns 90 degrees to the {dir}",
        "makes a quarter turn to the {dir}",
        "rotates {dir} by ninety degrees",
        "twists to face the {dir}",
        "turns towards the {dir}",
        "rotates to the {dir}",
        "changes direction to the {dir}",
    ],
    ("turn", 180): [
        "turns around to the {dir}",
        "turns 180 degrees to the {dir}",
        "makes a half turn to the {dir}",
        "turns all the way around to the {dir}",
        "turns around over the {dir} shoulder",
        "rotates halfway around to the {dir}",
        "turns back around to the {dir}",
    ],
    ("wave", None): [
        "waves with the {side} hand {times}",
        "waves {pos} {side} hand {times}",
        "raises the {side} hand and waves {times}",
        "waves {times} with {pos} {side} hand",
        "lifts {pos} {side} arm and waves {times}",
        "waves at someone with the {side} hand {times}",
        "gives a wave with {pos} {side} hand {times}",
        "waves hi with {pos} {side} hand {times}",
        "uses the {side} hand to wave {times}",
    ],
    ("squat", None): [
        "squats {times}",
        "does {squats}",
        "squats down {times}",
        "bends the knees and squats {times}",
        "performs {squats}",
        "squats low {times}",
        "goes down into a squat {times}",
        "drops into a squat {times}",
        "bends down into a squat {times}",
        "completes {squats}",
    ],
    ("kick", None): [
        "kicks with the {side} leg {times}",
        "kicks {times} with {pos} {side} foot",
        "does {kicks} with the {side} leg",
        "kicks {pos} {side} foot forward {times}",
        "performs {kicks} with the {side} foot",
        "kicks out with the {side} leg {times}",
    ],
    ("raise_arms", None): [
        "raises both arms",
        "lifts both arms above the head",
        "puts both hands up in the air",
        "raises both hands over the head",
        "lifts both arms up high",
    ],
    ("stand", None): ["stands still", "stands in place", "stays still", "remains standing", "stands without moving"],
}


def _times(count: int, rng) -> str:
    options = _TIMES.get(count, [f"{_NUMBER_WORDS[count]} times", f"{count} times"])
    return str(rng.choice(options))


def _counted(count: int, singular: str, plural: str, rng) -> str:
    """'a step', 'one step', '1 step', 'three steps', '3 steps'."""
    if count == 1:
        return str(rng.choice([f"a {singular}", f"one {singular}", f"1 {singular}", f"a single {singular}"]))
    return f"{rng.choice([_NUMBER_WORDS[count], str(count)])} {plural}"


def describe_action(action: Action, possessive: str, rng: np.random.Generator) -> str:
    """One phrasing of one action (a verb phrase in the third person)."""
    key = (action.name, action.angle if action.name == "turn" else action.direction)
    if key not in _TEMPLATES:
        key = (action.name, None)
    template = str(rng.choice(_TEMPLATES[key]))
    count = action.count or 1
    fields = {
        "times": _times(count, rng),
        "steps": _counted(count, "step", "steps", rng),
        "sidesteps": _counted(count, "side step", "side steps", rng),
        "jumps": _counted(count, "jump", "jumps", rng),
        "squats": _counted(count, "squat", "squats", rng),
        "kicks": _counted(count, "kick", "kicks", rng),
        "side": action.side or "",
        "dir": action.direction or "",
        "pos": possessive,
    }
    return template.format(**fields)


def make_captions(actions: list[Action], rng: np.random.Generator, num_captions: int = 3) -> list[str]:
    """`num_captions` different captions for a clip's plan (fewer only if the phrasings run out)."""
    captions: list[str] = []
    for _ in range(20 * num_captions):
        subject, possessive = _SUBJECTS[int(rng.integers(len(_SUBJECTS)))]
        text = subject + " " + describe_action(actions[0], possessive, rng)
        for action in actions[1:]:
            text += str(rng.choice(_JOINS)) + describe_action(action, possessive, rng)
        if text not in captions:
            captions.append(text)
        if len(captions) == num_captions:
            break
    return captions


# -- HumanML3D caption lines ------------------------------------------------------------------------------------

_VERBS = {
    "walks": "walk",
    "takes": "take",
    "steps": "step",
    "moves": "move",
    "runs": "run",
    "jogs": "jog",
    "starts": "start",
    "running": "run",
    "stops": "stop",
    "shuffles": "shuffle",
    "jumps": "jump",
    "hops": "hop",
    "does": "do",
    "leaps": "leap",
    "turns": "turn",
    "makes": "make",
    "rotates": "rotate",
    "waves": "wave",
    "raises": "raise",
    "lifts": "lift",
    "squats": "squat",
    "bends": "bend",
    "performs": "perform",
    "kicks": "kick",
    "puts": "put",
    "stands": "stand",
    "stays": "stay",
    "remains": "remain",
    "standing": "stand",
    "moving": "move",
    "marches": "march",
    "goes": "go",
    "retreats": "retreat",
    "dashes": "dash",
    "sidesteps": "sidestep",
    "twists": "twist",
    "changes": "change",
    "gives": "give",
    "uses": "use",
    "drops": "drop",
    "completes": "complete",
}
_NOUN_LEMMAS = {
    "steps": "step",
    "times": "time",
    "jumps": "jump",
    "squats": "squat",
    "kicks": "kick",
    "arms": "arm",
    "hands": "hand",
    "knees": "knee",
    "degrees": "degree",
    "sideways": "sideways",
}
_TAGS = {
    "DET": {"a", "the", "his", "her", "their", "both", "all"},
    "PRON": {"someone"},
    "ADV": {
        "forward",
        "backward",
        "backwards",
        "back",
        "ahead",
        "then",
        "still",
        "sideways",
        "once",
        "twice",
        "thrice",
        "around",
        "up",
        "down",
        "high",
        "away",
    },
    "ADP": {"to", "with", "in", "on", "by", "over", "above", "without"},
    "ADJ": {"left", "right", "single", "short", "quarter", "half", "side"},
    "CCONJ": {"and"},
    "NUM": set(_NUMBER_WORDS.values()) | {"ninety"},
}
_COUNT_WORDS = set(_NUMBER_WORDS.values()) | {"a", "single", "side", "ninety"}


def tag_caption(caption: str) -> str:
    """'lemma/POS' tokens of a caption, space separated, from a word list (heuristic, not a trained tagger)."""
    words = re.findall(r"[a-z]+|\d+", caption.lower())
    tokens = []
    for i, word in enumerate(words):
        after_count = i > 0 and (words[i - 1] in _COUNT_WORDS or words[i - 1].isdigit())
        if word.isdigit():
            lemma, tag = word, "NUM"
        elif word in _VERBS and not after_count:
            lemma, tag = _VERBS[word], "VERB"
        elif word in _NOUN_LEMMAS:
            lemma, tag = _NOUN_LEMMAS[word], "NOUN"
        else:
            lemma = word
            tag = next((name for name, vocabulary in _TAGS.items() if word in vocabulary), "NOUN")
        tokens.append(f"{lemma}/{tag}")
    return " ".join(tokens)


def caption_line(caption: str) -> str:
    """A HumanML3D `texts/*.txt` line: the caption, its tokens, and start/end 0.0 (the caption covers the clip)."""
    return f"{caption}#{tag_caption(caption)}#0.0#0.0"
