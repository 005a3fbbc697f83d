"""IOI prompts (Wang et al. 2022): templates filled with names, places and objects that are single
tokens of the model's own tokenizer, so a template fixes the prompt's length and name positions.

The 15 templates follow the paper's (its BABA set; ABBA swaps the first two names). Word lists are
ours; each word is kept only if it is one token with its leading space. `abc` corruption replaces
every name by one of three unrelated names, the template and the other words kept (the paper's
ABC distribution).
"""

from __future__ import annotations

import random

from schemas.datasets import IoiDataset, IoiPair, NamePositions
from workers.errors import BadInput
from workers.models.loading import LM

# [A]: the indirect object, [B]: the subject (named twice). BABA order: "[B] and [A] ... [B] ... to".
TEMPLATES = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)
NAMES = ("Mary", "John", "Tom", "James", "Anne", "Paul", "Mark", "Sarah", "David", "Lisa", "Peter", "Laura",
         "Michael", "Emma", "Daniel", "Kate", "Robert", "Alice", "Steven", "Rachel", "George", "Linda", "Kevin",
         "Helen", "Brian", "Susan", "Jason", "Nancy", "Eric", "Karen", "Adam", "Julia", "Simon", "Grace",
         "Henry", "Amy", "Frank", "Emily", "Jack", "Anna", "Matthew", "Jessica", "Andrew", "Sophie", "Richard",
         "Claire", "Thomas", "Lucy", "William", "Jane")
PLACES = ("store", "garden", "restaurant", "school", "hospital", "station", "office", "house", "park", "market",
          "beach", "library", "church", "museum")
OBJECTS = ("ring", "kiss", "bone", "drink", "snack", "book", "ball", "gift", "letter", "flower", "computer",
           "necklace", "cake", "phone")


def single_tokens(lm: LM, words: tuple[str, ...]) -> list[str]:
    """The words that are one token with a leading space."""
    return [w for w in words if len(lm.tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]


def _fill(template: str, first: str, second: str, s2: str, place: str, obj: str) -> str:
    """The template with its first two names, the repeated (subject) mention, place and object."""
    text = template.replace("[B] and [A]", f"{first} and {second}", 1)
    return text.replace("[B]", s2).replace("[PLACE]", place).replace("[OBJECT]", obj)


def _positions(lm: LM, ids: list[int], io: str, s: str) -> NamePositions | None:
    io_id, s_id = (lm.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in (io, s))
    io_at = [i for i, t in enumerate(ids) if t == io_id]
    s_at = [i for i, t in enumerate(ids) if t == s_id]
    if len(io_at) != 1 or len(s_at) != 2:
        return None  # a name merged with its neighbour: not this sample
    return NamePositions(io=io_at[0], s1=s_at[0], s2=s_at[1], end=len(ids) - 1)


def ioi_pairs(lm: LM, spec: IoiDataset) -> list[IoiPair]:
    """`spec.n` pairs, reproducible from `spec.seed`: clean prompt, corrupted prompt, answers, positions."""
    names, places, objects = (single_tokens(lm, w) for w in (NAMES, PLACES, OBJECTS))
    if len(names) < 5 or not places or not objects:
        raise BadInput(f"model {lm.id}'s tokenizer has too few single-token names, places or objects for IOI")
    rng = random.Random(spec.seed)
    pairs: list[IoiPair] = []
    attempts = 0
    while len(pairs) < spec.n:
        attempts += 1
        if attempts > 20 * spec.n:
            raise BadInput(f"could not build {spec.n} IOI prompts with single-token names for model {lm.id}")
        k = rng.randrange(len(TEMPLATES))
        order = spec.templates if spec.templates != "mixed" else ("BABA" if len(pairs) % 2 == 0 else "ABBA")
        io, s, a, b, c = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        first, second = (s, io) if order == "BABA" else (io, s)
        clean = _fill(TEMPLATES[k], first, second, s, place, obj)
        corrupted = {
            "abc": lambda: _fill(TEMPLATES[k], a, b, c, place, obj),
            "flip_io_s": lambda: _fill(TEMPLATES[k], second, first, io, place, obj),
            "s2_io": lambda: _fill(TEMPLATES[k], first, second, io, place, obj),
        }[spec.corruption]()
        clean_ids = lm.encode(clean).ids
        positions = _positions(lm, clean_ids, io, s)
        if positions is None or len(lm.encode(corrupted).ids) != len(clean_ids):
            continue
        pairs.append(IoiPair(clean_prompt=clean, corrupted_prompt=corrupted, answer=" " + io, wrong_answer=" " + s,
                             template=k, positions=positions))
    return pairs
