"""Generated datasets a patching or circuit job can name instead of listing its pairs.

`ioi`: the indirect-object identification prompts of Wang et al. 2022 ("Interpretability in the
Wild"): "When Mary and John went to the store, John gave a drink to" → " Mary". The names,
places and objects are single tokens of the model's own tokenizer, so every prompt of a template
has the same length and its name positions are fixed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.common import Strict


class IoiDataset(Strict):
    name: Literal["ioi"] = "ioi"
    n: Annotated[int, Field(ge=1, le=512)] = 64
    seed: int = 0
    templates: Literal["BABA", "ABBA", "mixed"] = Field(
        "mixed", description="BABA: the subject is named first ('When John and Mary ..., John gave ... to'); "
        "ABBA: the indirect object first; mixed: half each")
    corruption: Literal["abc", "flip_io_s", "s2_io"] = Field(
        "abc", description="abc: every name replaced by an unrelated name (the template kept); flip_io_s: IO and S "
        "swapped; s2_io: the second subject mention replaced by the IO name")


class NamePositions(Strict):
    """Token positions in a prompt: the indirect object, both subject mentions, and the last token."""

    io: int
    s1: int
    s2: int
    end: int


class IoiPair(Strict):
    clean_prompt: str
    corrupted_prompt: str
    answer: str = Field(description="the indirect object, e.g. ' Mary'")
    wrong_answer: str = Field(description="the subject, e.g. ' John'")
    template: int = Field(0, description="index of the template the prompt was filled from; pairs of one "
                          "template share their length and positions (mean ablation averages within a template)")
    positions: NamePositions
