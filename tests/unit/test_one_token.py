"""An answer a logit difference compares must be one token: `activation_patching` and `circuit` refuse
a longer one through the same check (`workers.internals.inputs.encode_one_token`), at the field, listing the
tokens it became and saying why one is needed."""

from __future__ import annotations

import pytest

from schemas.jobs import JOB_MODELS
from workers.context import Context
from workers.errors import BadInput
from workers.methods import activation_patching, circuit

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When John and Mary went to the store, Mary gave a drink to"
LONG = " Maryland"  # not a word of the tiny tokenizer's corpus: several tokens


def _refusal(run, lm, kind, input) -> BadInput:
    job = JOB_MODELS[kind](kind=kind, model=lm.id, input=input)
    with pytest.raises(BadInput) as caught:
        run(lm, job, Context())
    return caught.value


def test_both_kinds_refuse_a_multi_token_answer_alike(tiny_llama):
    assert len(tiny_llama.tokenizer(LONG, add_special_tokens=False)["input_ids"]) > 1
    patching = _refusal(activation_patching.run, tiny_llama, "activation_patching", {
        "clean_prompt": CLEAN, "corrupted_prompt": CORRUPT, "answer": LONG, "wrong_answer": " John"})
    ioi = _refusal(circuit.run, tiny_llama, "circuit", {"pairs": [
        {"clean_prompt": CLEAN, "corrupted_prompt": CORRUPT, "answer": LONG, "wrong_answer": " John",
         "positions": {"io": 2, "s1": 5, "s2": 15, "end": 21}}] * 2})
    for err, why in ((patching, "patching compares single next tokens"), (ioi, "IOI compares single-token names")):
        (field,) = err.errors
        assert field.type == "not_one_token" and field.loc[-1] == "answer", field
        assert "tokens ([" in field.msg and field.msg.endswith(why), field.msg
