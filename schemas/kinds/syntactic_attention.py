"""`syntactic_attention`: how well each attention head, read as a dependency parse, recovers gold
dependency heads (Clark et al. 2019, "What Does BERT Look At? An Analysis of BERT's Attention", §4),
and the model's syntactic attention structure (SAS) score, the best head's unlabeled attachment score
(Chen et al. 2023, "Sudden Drops in the Loss: Syntax Acquisition, Phase Transitions, and Simplicity Bias
in MLMs", §2). The method, and where it differs from the papers, is in docs/checkpoints.md.

Input: sentences with gold heads, as CoNLL-U text or as words + heads (+ relations). Heads follow
CoNLL-U: 1-based index of the parent word, 0 for the root. The CoNLL-U reader lives here (it is wire
format) so a malformed document is a 422 at submit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, JobInput, JobParams, Result, Strict
from schemas.facts import Facts, index_errors
from schemas.limits import Limits, over
from schemas.sizes import Indices

MAX_WORDS = 128  # per sentence
MAX_SENTENCES = 256
MAX_CONLLU_CHARS = 262_144
Word = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]
Relation = Annotated[str, Field(min_length=1, max_length=32)]
Direction = Literal["parent", "child", "both"]
DIRECTIONS: tuple[Direction, ...] = ("parent", "child", "both")


class DependencySentence(Strict):
    """One sentence: `heads[i]` is the 1-based index of word i's parent (0: the root)."""

    words: Annotated[list[Word], Field(min_length=2, max_length=MAX_WORDS)]
    heads: Annotated[list[Annotated[int, Field(ge=0, le=MAX_WORDS)]], Field(min_length=2, max_length=MAX_WORDS)]
    relations: Annotated[list[Relation], Field(min_length=2, max_length=MAX_WORDS)] | None = Field(
        None, description="dependency relation of each word to its parent (e.g. UD `nsubj`); absent: UAS only")

    @model_validator(mode="after")
    def _a_tree_over_the_words(self) -> DependencySentence:
        n = len(self.words)
        if len(self.heads) != n or (self.relations is not None and len(self.relations) != n):
            raise ValueError("`words`, `heads` and `relations` must have the same length")
        for i, h in enumerate(self.heads, start=1):
            if h > n:
                raise ValueError(f"word {i} has head {h}, past the sentence's {n} words")
            if h == i:
                raise ValueError(f"word {i} is its own head")
        if all(h == 0 for h in self.heads):
            raise ValueError("every word is a root: no dependency to score")
        for i in range(1, n + 1):  # a tree: every word's chain of heads reaches the root
            seen, w = set(), i
            while w != 0:
                if w in seen:
                    raise ValueError(f"word {i}'s heads form a cycle: not a tree")
                seen.add(w)
                w = self.heads[w - 1]
        return self


def parse_conllu(text: str) -> list[DependencySentence]:
    """CoNLL-U text -> sentences (ID, FORM, HEAD, DEPREL of the basic tree). Comment lines, multiword
    token ranges (`1-2`) and empty nodes (`1.1`) are skipped, as UD's own evaluation does; a
    missing HEAD (`_`) is an error. Raises ValueError naming the line."""
    sentences: list[DependencySentence] = []
    rows: list[tuple[str, int, str]] = []

    def close(line_no: int) -> None:
        if rows:
            try:
                sentences.append(DependencySentence(words=[r[0] for r in rows], heads=[r[1] for r in rows],
                                                    relations=[r[2] for r in rows]))
            except ValueError as e:
                raise ValueError(f"the sentence ending at line {line_no}: {e}") from None
            rows.clear()

    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            close(line_no)
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise ValueError(f"line {line_no}: {len(cols)} tab-separated fields, CoNLL-U has 10")
        if "-" in cols[0] or "." in cols[0]:
            continue
        if not cols[0].isdigit() or int(cols[0]) != len(rows) + 1:
            raise ValueError(f"line {line_no}: word ID {cols[0]!r}, expected {len(rows) + 1}")
        if not cols[6].isdigit():
            raise ValueError(f"line {line_no}: HEAD {cols[6]!r} is not a word index")
        rows.append((cols[1], int(cols[6]), cols[7] if cols[7] != "_" else "dep"))
    close(len(text.splitlines()))
    return sentences


class SyntacticAttentionInput(JobInput):
    """Exactly one of `conllu` (CoNLL-U text) or `sentences` (words + heads [+ relations])."""

    conllu: Annotated[str, Field(min_length=1, max_length=MAX_CONLLU_CHARS)] | None = None
    sentences: Annotated[list[DependencySentence], Field(min_length=1, max_length=MAX_SENTENCES)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SyntacticAttentionInput:
        if (self.conllu is None) == (self.sentences is None):
            raise ValueError("give exactly one of `conllu` or `sentences`")
        if self.conllu is not None:
            parsed = parse_conllu(self.conllu)
            if not parsed:
                raise ValueError("`conllu` holds no sentence")
            if len(parsed) > MAX_SENTENCES:
                raise ValueError(f"`conllu` holds {len(parsed)} sentences, over {MAX_SENTENCES}")
        return self

    def parsed(self) -> list[DependencySentence]:
        return self.sentences if self.sentences is not None else parse_conllu(self.conllu or "")

    def over_limits(self, limits: Limits) -> Iterator[FieldError]:
        # every word is at least one token: a sentence of more words than max_prompt_tokens cannot fit
        for i, s in enumerate(self.parsed()):
            if len(s.words) > limits.max_prompt_tokens:
                loc: list[str | int] = ["input", "conllu"] if self.conllu is not None else ["input", "sentences", i]
                yield over(loc, len(s.words), "max_prompt_tokens", limits.max_prompt_tokens)


class SyntacticAttentionParams(JobParams):
    layers: Indices | None = None
    heads: Indices | None = None
    top_k: Annotated[int, Field(ge=1, le=32)] = Field(3, description="heads listed per relation and overall")

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        return index_errors(facts, (self.layers, "layers", "n_layers"), (self.heads, "heads", "n_heads"))


class HeadScore(Strict):
    layer: int
    head: int
    direction: Direction = Field(description="parent: a word's most-attended word; child: the word that attends "
                                             "most to it; both: the larger of α_ij + α_ji")
    score: float = Field(description="share of the words whose predicted parent is the gold one")


class OffsetBaseline(Strict):
    """Clark et al.'s fixed-offset baseline: every word's parent predicted at offset `offset`."""

    offset: int
    score: float


class RelationScores(Strict):
    relation: str
    count: int = Field(description="words with this relation to their parent")
    top: list[HeadScore] = Field(description="the best heads for this relation (any direction), best first")
    baseline: OffsetBaseline


class SyntacticAttentionResult(Result):
    n_sentences: int
    n_words: int = Field(description="scored words: every word but the roots")
    n_tokens: int = Field(description="tokens over all sentences, special tokens included")
    layers: list[int]
    heads: list[int]
    sas: float = Field(description="SAS score: the best head's UAS (Chen et al. 2023)")
    best: HeadScore
    uas: list[list[float]] = Field(description="[layer][head] UAS, the best of the three directions")
    uas_by_direction: dict[str, list[list[float]]] = Field(description="direction -> [layer][head] UAS")
    top_heads: list[HeadScore] = Field(description="the top_k heads by UAS, best first")
    relations: list[RelationScores] = Field(description="per relation (most frequent first); empty without labels")
    baseline: OffsetBaseline = Field(description="the best fixed-offset baseline over all scored words")
    loss: float | None = Field(None, description="causal LMs: mean next-token cross-entropy (nats) over the "
                                                 "sentences' tokens after the first; None for encoders")

    def scalars(self) -> dict[str, float]:
        """For a sweep across checkpoints (Chen et al.'s curves): SAS, the loss, and per relation the
        best head's accuracy (`sas:<relation>`)."""
        out = {"sas": self.sas, **({"loss": self.loss} if self.loss is not None else {})}
        out.update({f"sas:{r.relation}": r.top[0].score for r in self.relations})
        return out


class SyntacticAttentionJob(JobBase):
    kind: Literal["syntactic_attention"]
    input: SyntacticAttentionInput
    params: SyntacticAttentionParams = Field(default_factory=SyntacticAttentionParams)
