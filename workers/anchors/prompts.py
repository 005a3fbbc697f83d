"""ICL prompts with their label-word positions (Wang et al. 2023, §2: demonstrations, label words,
the target position).

A prompt is the demonstrations written with `template` ("Review: {text}\\nSentiment: {label}\\n"),
concatenated as written, then the query written with the same template cut at `{label}`: the model
fills the label slot. Whitespace the template puts before `{label}` is moved into the label word
(" positive"), as byte-level BPE tokenizers read it, so the prompt ends on the slot's last token
(":"), the target position. Each demonstration's label-word position is the token holding the first
character of its label word (the reference code's `class_poss`: the label word's first token).
The model's answer is the label whose word's first token has the highest logit at the target
(the reference's `LMForwardAPI._cal_probs`).

A ready prompt marks its demonstrations' label words `[[word]]`; its last token is the target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.common import FieldError
from schemas.kinds.icl_anchors import IclAnchorsInput, LabeledText, Query
from schemas.limits import Limits, over
from workers.errors import BadInput
from workers.models.loading import LM

MARK = re.compile(r"\[\[(.+?)\]\]")


@dataclass
class Prompt:
    ids: list[int]
    label_positions: list[int]  # demonstrations' label-word positions, ascending
    label_classes: list[int]  # the class index of each
    gold: int | None  # class index of the query's label, when given

    @property
    def target(self) -> int:
        return len(self.ids) - 1


@dataclass
class Task:
    labels: list[str]  # class order: the keys of `label_words`
    words: list[str]  # the label words as the model reads them after the slot (" positive")
    label_ids: list[int]  # first token of each word: the logits the answer is read from
    warnings: list[str]


def split_template(template: str) -> tuple[str, str, str]:
    """(head up to the label slot, its trailing whitespace, tail after the slot)."""
    head, _, tail = template.partition("{label}")
    stripped = head.rstrip()
    return stripped, head[len(stripped):], tail


def task_of(lm: LM, inp: IclAnchorsInput) -> Task:
    labels = list(inp.label_words)
    ws = split_template(inp.template)[1] if inp.prompt is None else _space_before_marks(inp.prompt)
    words = [ws + inp.label_words[k] for k in labels]
    label_ids = []
    for label, word in zip(labels, words):
        ids = lm.tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise BadInput(f"label word {word!r} of {label!r} has no tokens")
        label_ids.append(int(ids[0]))
    if len(set(label_ids)) < len(label_ids):
        shown = {label: lm.token_strings([i])[0] for label, i in zip(labels, label_ids)}
        raise BadInput(f"label words must start with different tokens; first tokens: {shown}",
                       [_err(["input", "label_words"], "the label words' first tokens coincide")])
    return Task(labels, words, label_ids, [])


def _space_before_marks(prompt: str) -> str:
    m = MARK.search(prompt)
    if m is None:
        return ""
    before = prompt[:m.start()]
    return before[len(before.rstrip()):]


def _err(loc: list[str | int], msg: str) -> FieldError:
    return FieldError(loc=loc, msg=msg, type="invalid_input")


def _encode(lm: LM, text: str, word_starts: list[int], loc: list[str | int], limits: Limits) -> tuple[list[int], list[int]]:
    """Token ids of `text` and the token holding each character offset in `word_starts`."""
    try:
        enc = lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except NotImplementedError:  # slow tokenizers have no offsets
        raise BadInput(f"model {lm.id}'s tokenizer gives no character offsets") from None
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    if len(ids) > limits.max_prompt_tokens:
        err = over(loc, len(ids), "max_prompt_tokens", limits.max_prompt_tokens)
        raise BadInput(err.msg, [err])
    positions = []
    for start in word_starts:
        pos = next((i for i, (a, b) in enumerate(offsets) if b > start and b > a), None)
        if pos is None:
            raise BadInput(f"no token holds the label word at character {start}", [_err(loc, "label word not found")])
        positions.append(pos)
    return ids, positions


def demonstration_text(inp: IclAnchorsInput, demos: list[LabeledText]) -> tuple[str, list[tuple[int, str]]]:
    """The demonstrations as written, and (character offset of the word, label) per demonstration."""
    head, ws, tail = split_template(inp.template)
    text, marks = "", []
    for d in demos:
        written = head.replace("{text}", d.text) + ws
        marks.append((len(text) + len(written), d.label))
        text += written + inp.label_words[d.label] + tail.replace("{text}", d.text)
    return text, marks


def query_prompt(lm: LM, inp: IclAnchorsInput, task: Task, demos: list[LabeledText], query: Query,
                 loc: list[str | int], limits: Limits) -> Prompt:
    head = split_template(inp.template)[0]
    prefix, marks = demonstration_text(inp, demos)
    text = (inp.instruction or "") + prefix + head.replace("{text}", query.text)
    shift = len(inp.instruction or "")
    ids, positions = _encode(lm, text, [shift + s for s, _ in marks], loc, limits)
    classes = [task.labels.index(label) for _, label in marks]
    _check_label_tokens(lm, task, ids, positions, classes)
    gold = task.labels.index(query.label) if query.label is not None else None
    return Prompt(ids, positions, classes, gold)


def marked_prompt(lm: LM, inp: IclAnchorsInput, task: Task, limits: Limits) -> Prompt:
    """The ready `prompt`: `[[word]]` marks removed, their words' positions kept."""
    assert inp.prompt is not None
    by_word = {w: k for k, w in inp.label_words.items()}
    text, starts, classes, last = "", [], [], 0
    for m in MARK.finditer(inp.prompt):
        word = m.group(1)
        if word not in by_word:
            raise BadInput(f"marked word {word!r} is not one of the label words {sorted(by_word)}",
                           [_err(["input", "prompt"], f"[[{word}]] is not a label word")])
        text += inp.prompt[last:m.start()]
        starts.append(len(text))
        classes.append(task.labels.index(by_word[word]))
        text += word
        last = m.end()
    text += inp.prompt[last:]
    text = text.rstrip()
    ids, positions = _encode(lm, text, starts, ["input", "prompt"], limits)
    if positions and positions[-1] >= len(ids) - 1:
        raise BadInput("the prompt must end after its last marked label word (the target is its last token)",
                       [_err(["input", "prompt"], "no query after the last label word")])
    _check_label_tokens(lm, task, ids, positions, classes)
    gold = task.labels.index(inp.prompt_label) if inp.prompt_label is not None else None
    return Prompt(ids, positions, classes, gold)


def _check_label_tokens(lm: LM, task: Task, ids: list[int], positions: list[int], classes: list[int]) -> None:
    for p, c in zip(positions, classes):
        if ids[p] != task.label_ids[c]:
            note = (f"the label word {task.words[c]!r} reads as {lm.token_strings([ids[p]])[0]!r} in the "
                    f"demonstrations and as {lm.token_strings([task.label_ids[c]])[0]!r} where the model answers")
            if note not in task.warnings:
                task.warnings.append(note)
