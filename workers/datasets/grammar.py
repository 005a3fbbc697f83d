"""A small probabilistic grammar of English-like sentences with long-range subject–verb agreement,
each sentence generated with its gold dependency tree (UD-style relations), for training tiny models
from scratch and scoring their attention as a parse (the `syntactic_attention` kind, docs/checkpoints.md).

    S   -> NP[n] VP[n] "."                         the main verb agrees with the subject's head noun
    NP  -> Det[n] (Adj) N[n] (PP | RC[n])          PP and RC only below depth 2
    PP  -> P NP                                    "the dog near the cats": the attractor has its own number
    RC  -> "that" VP[n]                            subject relative: the embedded verb agrees with N
         | "that" NP[m] Vt[m]                      object relative: it agrees with the embedded subject
    VP  -> Vi[n] | Vt[n] NP

Heads: det, amod -> noun; case (P) -> its noun; nmod (the PP's noun) -> the noun it modifies;
acl:relcl (the relative's verb) -> the noun it modifies; "that" -> the relative's verb (nsubj in a
subject relative, obj in an object relative); nsubj, obj -> their verb; punct -> the root verb.
An attractor (a noun of the other number between the subject and its verb) is what makes agreement
long-range: the verb's number is set by the head noun, not by the nearest noun.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DETS = {"sg": ("the", "a", "this"), "pl": ("the", "some", "these")}
NOUNS = (("dog", "dogs"), ("cat", "cats"), ("girl", "girls"), ("boy", "boys"), ("teacher", "teachers"),
         ("farmer", "farmers"), ("bird", "birds"), ("doctor", "doctors"), ("king", "kings"), ("pilot", "pilots"))
TRANSITIVE = (("sees", "see"), ("likes", "like"), ("chases", "chase"), ("helps", "help"), ("finds", "find"),
              ("follows", "follow"), ("calls", "call"), ("knows", "know"))
INTRANSITIVE = (("sleeps", "sleep"), ("runs", "run"), ("sings", "sing"), ("laughs", "laugh"), ("waits", "wait"))
ADJECTIVES = ("small", "old", "happy", "red", "quiet")
PREPOSITIONS = ("near", "behind", "with", "beside")
NUMBERS = ("sg", "pl")
P = {"adj": 0.25, "pp": 0.3, "rc": 0.25, "transitive": 0.55, "object_relative": 0.4}


def vocabulary() -> list[str]:
    """Every word the grammar can produce, in a fixed order."""
    words = [*dict.fromkeys([*DETS["sg"], *DETS["pl"]])]
    words += [w for pair in NOUNS for w in pair] + [w for pair in TRANSITIVE for w in pair]
    words += [w for pair in INTRANSITIVE for w in pair] + [*ADJECTIVES, *PREPOSITIONS, "that", "."]
    return words


@dataclass
class Sentence:
    words: list[str] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)  # 1-based parent, 0: root (CoNLL-U)
    relations: list[str] = field(default_factory=list)
    verb: int = -1  # 0-based index of the main verb
    subject_number: str = "sg"

    def add(self, word: str, relation: str) -> int:
        self.words.append(word)
        self.heads.append(0)
        self.relations.append(relation)
        return len(self.words) - 1

    def attach(self, child: int, parent: int) -> None:
        self.heads[child] = parent + 1

    def conllu(self) -> str:
        return "\n".join(f"{i + 1}\t{w}\t_\t_\t_\t_\t{h}\t{r}\t_\t_"
                         for i, (w, h, r) in enumerate(zip(self.words, self.heads, self.relations))) + "\n"

    def dict(self) -> dict:
        return {"words": self.words, "heads": self.heads, "relations": self.relations}


class Grammar:
    def __init__(self, seed: int = 0, max_depth: int = 2):
        self.rng = random.Random(seed)
        self.max_depth = max_depth

    def sentence(self) -> Sentence:
        s = Sentence()
        number = self.rng.choice(NUMBERS)
        s.subject_number = number
        subject = self._np(s, number, "nsubj", depth=0)
        verb = self._vp(s, number, depth=0)
        s.attach(subject, verb)
        s.heads[verb] = 0
        s.relations[verb] = "root"
        s.verb = verb
        s.attach(s.add(".", "punct"), verb)
        return s

    def _np(self, s: Sentence, number: str, relation: str, depth: int) -> int:
        """Adds an NP; returns its head noun's index (its own head set by the caller)."""
        n = NUMBERS.index(number)
        det = s.add(self.rng.choice(DETS[number]), "det")
        adj = s.add(self.rng.choice(ADJECTIVES), "amod") if self.rng.random() < P["adj"] else None
        noun = s.add(self.rng.choice(NOUNS)[n], relation)
        s.attach(det, noun)
        if adj is not None:
            s.attach(adj, noun)
        if depth < self.max_depth:
            r = self.rng.random()
            if r < P["pp"]:
                prep = s.add(self.rng.choice(PREPOSITIONS), "case")
                inner = self._np(s, self.rng.choice(NUMBERS), "nmod", depth + 1)
                s.attach(prep, inner)
                s.attach(inner, noun)
            elif r < P["pp"] + P["rc"]:
                that = s.add("that", "nsubj")
                if self.rng.random() < P["object_relative"]:
                    s.relations[that] = "obj"
                    inner_number = self.rng.choice(NUMBERS)
                    inner = self._np(s, inner_number, "nsubj", depth + 1)
                    verb = s.add(self.rng.choice(TRANSITIVE)[NUMBERS.index(inner_number)], "acl:relcl")
                    s.attach(inner, verb)
                else:
                    verb = self._vp(s, number, depth + 1, relation="acl:relcl")
                s.attach(that, verb)
                s.attach(verb, noun)
        return noun

    def _vp(self, s: Sentence, number: str, depth: int, relation: str = "root") -> int:
        n = NUMBERS.index(number)
        if self.rng.random() < P["transitive"]:
            verb = s.add(self.rng.choice(TRANSITIVE)[n], relation)
            obj = self._np(s, self.rng.choice(NUMBERS), "obj", depth + 1)
            s.attach(obj, verb)
        else:
            verb = s.add(self.rng.choice(INTRANSITIVE)[n], relation)
        return verb


def other_form(word: str) -> str:
    """A verb's form of the other number (sees <-> see)."""
    for pair in (*TRANSITIVE, *INTRANSITIVE):
        if word in pair:
            return pair[1 - pair.index(word)]
    raise KeyError(word)


def sentences(n: int, seed: int = 0) -> list[Sentence]:
    g = Grammar(seed)
    return [g.sentence() for _ in range(n)]
