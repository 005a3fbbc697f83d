"""`syntactic_attention` (Clark et al. 2019 attention read as a parse; SAS of Chen et al. 2023).

The planted test sets layer 0's attention (a forward hook on the attention module replaces the maps
it returns, the ones the method reads) so that head 0 attends from every word to its gold parent and
head 1 from every parent to its children, with the mass of a word spread unevenly over its subword
tokens (the tiny BPE tokenizer splits most words): head 0 must score UAS 1 in the parent direction and
head 1 UAS 1 in the child direction, and every score of every head, direction and relation must equal
an independent recomputation written from Clark et al.'s released code (loops, NumPy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from schemas.jobs import parse_job
from schemas.kinds.syntactic_attention import SyntacticAttentionInput, parse_conllu
from schemas.limits import Limits
from workers.context import Context
from workers.internals.hooks import hook_count, hooks
from workers.methods import syntactic_attention
from workers.syntax.words import align

SENTENCES = [
    {"words": ["The", "quick", "fox", "jumps", "over", "the", "lazy", "dog"], "heads": [3, 3, 4, 0, 8, 8, 8, 4],
     "relations": ["det", "amod", "nsubj", "root", "case", "det", "amod", "obl"]},
    {"words": ["Mary", "gave", "John", "a", "drink"], "heads": [2, 0, 2, 5, 2],
     "relations": ["nsubj", "root", "iobj", "det", "obj"]},
    {"words": ["The", "capital", "of", "France", "is", "Paris"], "heads": [2, 6, 4, 2, 6, 0],
     "relations": ["det", "nsubj", "case", "nmod", "cop", "root"]},
    {"words": ["Two", "plus", "two", "is", "four"], "heads": [5, 3, 1, 5, 0],
     "relations": ["nsubj", "cc", "conj", "cop", "root"]},
]


def job(lm, sentences=SENTENCES, **params):
    return parse_job({"kind": "syntactic_attention", "model": lm.id, "input": {"sentences": sentences},
                      "params": params})


def planted_maps(lm, sentence, n_heads, seed):
    """(1, H, t, t) token attention: head 0 word -> its parent, head 1 parent -> its children, the rest
    random rows; a word's mass split unevenly over the other word's tokens, plus a little noise."""
    rng = np.random.default_rng(seed)
    al = align(lm, sentence["words"], [])
    t = len(al.ids)
    tokens_of = {w: [k for k, x in enumerate(al.word_of) if x == w] for w in range(len(sentence["words"]))}
    parent = [h - 1 for h in sentence["heads"]]
    maps = rng.dirichlet(np.ones(t), size=(n_heads, t))  # (H, t, t) random rows

    def row_to(words):
        row = np.full(t, 1e-4)
        for w in words:
            share = rng.dirichlet(np.ones(len(tokens_of[w])))  # uneven over the word's subwords
            row[tokens_of[w]] += share / len(words)
        return row / row.sum()

    for w, p in enumerate(parent):
        children = [c for c, q in enumerate(parent) if q == w]
        for k in tokens_of[w]:
            maps[0, k] = row_to([p] if p >= 0 else [w])
            maps[1, k] = row_to(children or [w])
    return al, torch.tensor(maps[None], dtype=torch.float32)


def clark_word_attention(tok_attn, word_of, n):
    """Clark et al.'s conversion, by loops: to a word = sum over its tokens; from a word = mean."""
    out = np.zeros((n, n))
    for i in range(n):
        rows = [a for a, w in enumerate(word_of) if w == i]
        for j in range(n):
            cols = [b for b, w in enumerate(word_of) if w == j]
            out[i, j] = np.mean([sum(tok_attn[a, b] for b in cols) for a in rows])
    return out


def clark_predict(word_attn, mode):
    attn = {"parent": word_attn, "child": word_attn.T, "both": word_attn + word_attn.T}[mode].copy()
    np.fill_diagonal(attn, 0)
    return [int(np.argmax(r)) if r.max() > 0 else -1 for r in attn]


@pytest.fixture
def planted(tiny_llama):
    lm = tiny_llama
    n_heads = lm.facts()["n_heads"]
    plan = [planted_maps(lm, s, n_heads, seed) for seed, s in enumerate(SENTENCES)]
    queue = iter(plan)

    def replace(module, args, output):
        _, maps = next(queue)
        assert output[1].shape == maps.shape
        return output[0], maps.to(output[1].dtype)

    with hooks(forward=[(lm.layers[0].get_submodule(lm.arch.attn), replace)]):
        res = syntactic_attention.run(lm, job(lm, layers=[0], top_k=4), Context())
    assert hook_count(lm.model) == 0
    return lm, plan, res


def test_planted_heads_parse_perfectly(planted):
    _, _, res = planted
    scored = sum(h != 0 for s in SENTENCES for h in s["heads"])
    assert res.n_words == scored and res.n_sentences == 4 and res.layers == [0]
    assert res.uas_by_direction["parent"][0][0] == 1.0
    assert res.uas_by_direction["child"][0][1] == 1.0
    assert res.sas == 1.0 and res.best.score == 1.0 and (res.best.layer, res.best.head) == (0, 0)
    assert res.best.direction == "parent"
    assert {(h.head, h.direction) for h in res.top_heads[:2]} == {(0, "parent"), (1, "child")}
    nsubj = next(r for r in res.relations if r.relation == "nsubj")
    assert nsubj.count == 4 and nsubj.top[0].score == 1.0


def test_every_score_equals_an_independent_recomputation(planted):
    lm, plan, res = planted
    n_heads = lm.facts()["n_heads"]
    correct = {d: np.zeros(n_heads) for d in ("parent", "child", "both")}
    rel_correct, rel_count = {}, {}
    for s, (al, maps) in zip(SENTENCES, plan):
        gold = [h - 1 for h in s["heads"]]
        for h in range(n_heads):
            w = clark_word_attention(maps[0, h].double().numpy(), al.word_of, len(s["words"]))
            for d, counts in correct.items():
                pred = clark_predict(w, d)
                for i, (p, g, r) in enumerate(zip(pred, gold, s["relations"])):
                    if g < 0:
                        continue
                    counts[h] += p == g
                    rel_correct.setdefault(r, {}).setdefault((h, d), 0)
                    rel_correct[r][(h, d)] += p == g
        for g, r in zip(gold, s["relations"]):
            if g >= 0:
                rel_count[r] = rel_count.get(r, 0) + 1
    for d, counts in correct.items():
        np.testing.assert_allclose(res.uas_by_direction[d][0], counts / res.n_words, atol=1e-6)
    best = np.maximum.reduce(list(correct.values())) / res.n_words
    np.testing.assert_allclose(res.uas[0], best, atol=1e-6)
    assert res.sas == pytest.approx(best.max(), abs=1e-6)
    for rel in res.relations:
        assert rel.count == rel_count[rel.relation]
        expected = max(rel_correct[rel.relation].values()) / rel.count
        assert rel.top[0].score == pytest.approx(expected, abs=1e-6)
        for hs in rel.top:
            assert hs.score == pytest.approx(rel_correct[rel.relation][(hs.head, hs.direction)] / rel.count, abs=1e-6)


def test_conllu_input_gives_the_same_result(tiny_llama):
    conllu = "\n".join(
        f"# sent_id = {k}\n" + "\n".join(f"{i + 1}\t{w}\t_\t_\t_\t_\t{h}\t{r}\t_\t_"
                                          for i, (w, h, r) in enumerate(zip(s["words"], s["heads"], s["relations"])))
        + "\n" for k, s in enumerate(SENTENCES))
    assert [x.model_dump() for x in parse_conllu(conllu)] == SENTENCES
    a = syntactic_attention.run(tiny_llama, job(tiny_llama), Context())
    b = syntactic_attention.run(tiny_llama, parse_job({"kind": "syntactic_attention", "model": tiny_llama.id,
                                                       "input": {"conllu": conllu}}), Context())
    assert a.model_dump(exclude={"provenance"}) == b.model_dump(exclude={"provenance"})


def test_words_align_to_their_tokens(tiny_llama, tiny_bert):
    words = SENTENCES[0]["words"]
    for lm in (tiny_llama, tiny_bert):
        al = align(lm, words, [])
        assert {w for w in al.word_of if w is not None} == set(range(len(words)))
        in_order = [w for w in al.word_of if w is not None]
        assert in_order == sorted(in_order)  # tokens of a word are contiguous, words in order
        for w, word in enumerate(words):  # a word's tokens decode back to the word
            text = lm.tokenizer.decode([i for i, x in zip(al.ids, al.word_of) if x == w]).replace(" ", "")
            assert text.replace("##", "").lower() == word.lower()
        specials = [x for i, x in zip(al.ids, al.word_of) if i in lm.tokenizer.all_special_ids]
        assert specials and all(x is None for x in specials)


def test_the_offset_baseline_is_clarks():
    # every parent one word to the right except the root: offset +1 scores 1
    s = [{"words": ["a", "b", "c", "d"], "heads": [2, 3, 4, 0]}]
    from tests.tiny import tiny_llama

    lm = tiny_llama(layers=1)
    res = syntactic_attention.run(lm, job(lm, s), Context())
    assert res.baseline.offset == 1 and res.baseline.score == 1.0 and res.relations == []


@pytest.mark.parametrize("sentence, message", [
    ({"words": ["a", "b"], "heads": [1, 0]}, "its own head"),
    ({"words": ["a", "b"], "heads": [3, 0]}, "past the sentence"),
    ({"words": ["a", "b", "c"], "heads": [2, 0]}, "same length"),
    ({"words": ["a", "b"], "heads": [0, 0]}, "every word is a root"),
    ({"words": ["a b", "c"], "heads": [2, 0]}, "pattern"),
    ({"words": ["a", "b", "c"], "heads": [2, 1, 0]}, "cycle"),
])
def test_bad_trees_are_refused_at_validation(sentence, message):
    with pytest.raises(ValidationError, match=message):
        SyntacticAttentionInput(sentences=[sentence])


def test_bad_conllu_names_the_line():
    with pytest.raises(ValidationError, match="line 2"):
        SyntacticAttentionInput(conllu="1\ta\t_\t_\t_\t_\t0\troot\t_\t_\n2\tb\t_\t_\t_\t_\t1\n")
    with pytest.raises(ValidationError, match="exactly one"):
        SyntacticAttentionInput()


def test_a_sentence_over_the_token_limit_is_named():
    inp = SyntacticAttentionInput(sentences=[{"words": ["w"] * 20, "heads": [0] + [1] * 19}])
    (err,) = inp.over_limits(Limits(max_prompt_tokens=16))
    assert err.loc == ["input", "sentences", 0] and err.ctx["limit"] == "max_prompt_tokens"


def test_the_loss_is_the_models_own_and_scalars_name_sas_and_loss(tiny_llama, tiny_bert):
    res = syntactic_attention.run(tiny_llama, job(tiny_llama), Context())
    total = count = 0.0
    for s in SENTENCES:
        ids = torch.tensor([align(tiny_llama, s["words"], []).ids])
        with torch.no_grad():
            loss = tiny_llama.model(input_ids=ids, labels=ids).loss  # HF's own shifted mean
        total += float(loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    assert res.loss == pytest.approx(total / count, rel=1e-5)
    scalars = res.scalars()
    assert scalars["sas"] == res.sas and scalars["loss"] == res.loss
    assert scalars["sas:nsubj"] == next(r.top[0].score for r in res.relations if r.relation == "nsubj")
    assert syntactic_attention.run(tiny_bert, job(tiny_bert), Context()).loss is None  # an encoder has no LM loss


def test_the_grammar_gives_trees_with_agreement_and_one_token_per_word():
    from bench.train_checkpoints import build_tokenizer
    from schemas.kinds.syntactic_attention import DependencySentence
    from workers.datasets.grammar import INTRANSITIVE, NOUNS, TRANSITIVE, sentences

    tok = build_tokenizer()
    attractors = 0
    for s in sentences(300, seed=3):
        DependencySentence(**s.dict())  # a valid tree (acyclic, one word per head)
        assert s.heads.count(0) == 1 and s.heads[s.verb] == 0 and s.words[-1] == "."
        subject = next(i for i, (h, r) in enumerate(zip(s.heads, s.relations)) if h == s.verb + 1 and r == "nsubj")
        form = 0 if s.subject_number == "sg" else 1
        assert s.words[subject] in {pair[form] for pair in NOUNS}  # the head noun has the subject's number
        assert s.words[s.verb] in {pair[form] for pair in (*TRANSITIVE, *INTRANSITIVE)}  # and so has the verb
        attractors += any(w == pair[1 - form] for w in s.words[subject + 1:s.verb] for pair in NOUNS)
        ids = tok(" ".join(s.words))["input_ids"]
        assert len(ids) == len(s.words) + 1 and tok.unk_token_id not in ids  # <s> + one token per word
        assert parse_conllu(s.conllu())[0].heads == s.heads
    assert 30 < attractors < 200  # long-range agreement across an attractor is common, not universal
