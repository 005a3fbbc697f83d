"""IOI prompts on SmolLM2's own tokenizer: reproducible from the seed, labelled positions that hold
the names, clean and corrupted of equal length, and each corruption doing what it says."""

import pytest

from schemas.datasets import IoiDataset
from workers.datasets.ioi import TEMPLATES, ioi_pairs


@pytest.mark.parametrize("corruption", ["abc", "flip_io_s", "s2_io"])
def test_ioi_pairs_are_reproducible_and_labelled(smollm2, corruption):
    spec = IoiDataset(n=24, seed=7, templates="mixed", corruption=corruption)
    pairs = ioi_pairs(smollm2, spec)
    assert [p.model_dump() for p in pairs] == [p.model_dump() for p in ioi_pairs(smollm2, spec)]
    assert [p.model_dump() for p in pairs] != [p.model_dump() for p in ioi_pairs(smollm2, spec.model_copy(
        update={"seed": 8}))]
    orders = set()
    for p in pairs:
        clean = smollm2.token_strings(smollm2.encode(p.clean_prompt).ids)
        corrupt = smollm2.token_strings(smollm2.encode(p.corrupted_prompt).ids)
        pos = p.positions
        assert len(clean) == len(corrupt) and pos.end == len(clean) - 1 and 0 <= p.template < len(TEMPLATES)
        assert clean[pos.io] == p.answer and clean[pos.s1] == clean[pos.s2] == p.wrong_answer
        orders.add("ABBA" if pos.io < pos.s1 else "BABA")
        if corruption == "abc":  # three unrelated names, nothing else changed
            assert p.answer not in corrupt and p.wrong_answer not in corrupt
            assert len({corrupt[pos.io], corrupt[pos.s1], corrupt[pos.s2]}) == 3
            assert [t for i, t in enumerate(corrupt) if i not in (pos.io, pos.s1, pos.s2)] == [
                t for i, t in enumerate(clean) if i not in (pos.io, pos.s1, pos.s2)]
        elif corruption == "s2_io":
            assert corrupt[pos.s2] == p.answer and corrupt[pos.s1] == p.wrong_answer
        else:
            assert corrupt[pos.io] == p.wrong_answer and corrupt[pos.s2] == p.answer
    assert orders == {"ABBA", "BABA"}
