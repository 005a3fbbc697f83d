"""The dissection kinds on the bundled models: SmolLM2 (LLaMA, 9 query heads over 3 KV heads) and
MiniLM (BERT), against the same independent computations as the unit tests, plus what only a real
model shows: the logit lens finds the fact, special tokens draw weight but little norm, and 512
tokens of summed norms stay small."""

from __future__ import annotations

import json
import re

import pytest
import torch

from schemas.jobs import parse_job
from schemas.limits import Limits
from tests.unit.test_attention import check_against_reference, check_rebuild
from tests.unit.test_ffn_projection import check_sub_updates
from workers.context import Context
from workers.errors import BadInput
from workers.methods import attention, attention_patterns, logit_lens
from workers.methods.attention import attention_maps

pytestmark = pytest.mark.slow

TEXT = "When Mary and John went to the store, John gave a drink to Mary. Then they left!"
SENTENCES = ["The cat sat on the mat, and the dog slept by the door.",
             "In 1905, Einstein published four papers; each changed physics.",
             "She opened the window. Cold air filled the room!"]


@pytest.fixture(scope="module", params=["smollm2", "minilm"])
def bundled(request):
    return request.getfixturevalue(request.param)


def job(kind: str, inp: dict, params: dict | None = None):
    return parse_job({"kind": kind, "model": "m", "input": inp, "params": params or {}})


def test_attention_measures_equal_the_reference(bundled):
    check_against_reference(bundled, TEXT)
    check_rebuild(bundled, TEXT)


def test_ffn_sub_updates_rebuild_the_mlp_output(bundled):
    check_sub_updates(bundled)


def test_logit_lens_last_layer_is_the_logits_and_finds_the_fact(smollm2):
    prompt = "The capital of France is"
    res = logit_lens.run(smollm2, job("logit_lens", {"prompt": prompt, "target": " Paris"}, {"positions": [-1]}),
                         Context())
    with torch.no_grad():
        logits = smollm2.model(input_ids=torch.tensor([smollm2.encode(prompt).ids])).logits[0, -1]
    probs = torch.softmax(logits, -1)
    last = res.layers[-1]
    assert last.top_ids[0] == probs.topk(5).indices.tolist()
    torch.testing.assert_close(torch.tensor(last.top_probs[0]), probs.topk(5).values, atol=1e-5, rtol=1e-4)
    ranks = [layer.target_rank[0] for layer in res.layers]
    assert ranks[-1] == 0 and last.top_tokens[0][0] == " Paris" and min(ranks[:10]) > 100


def test_special_tokens_draw_weight_but_little_norm_on_minilm(minilm):
    """Kobayashi et al. 2020, §4.2: [CLS] and [SEP] get much attention by weight, far less by norm."""
    by_weight, by_norm = [], []
    for s in SENTENCES:
        res = attention.run(minilm, job("attention", {"prompt": s}, {"aggregate": "token_class"}), Context())
        for layer in res.token_class[1:5]:
            by_weight.append(layer.weight.special)
            by_norm.append(sum(h.norm.special for h in layer.heads) / len(layer.heads))
    assert sum(by_weight) / len(by_weight) > 0.4 and sum(by_norm) / len(by_norm) < 0.25


def test_512_tokens_of_summed_norms_on_smollm2(smollm2):
    ids = (smollm2.encode("The history of the city is long and full of events. " * 60).ids)[:512]
    prompt = smollm2.tokenizer.decode(ids)
    n = len(smollm2.encode(prompt).ids)
    assert 500 <= n <= 512
    req = job("attention", {"prompt": prompt}, {"measures": ["summed_norms"]})
    with pytest.raises(BadInput) as e:  # 30 layers of 512×512: about 110 MB of JSON
        attention.run(smollm2, req, Context())
    fits = e.value.errors[0].ctx["fits"]["layers"]
    assert e.value.status == 422 and 1 <= len(fits) < 30
    try:
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS
        measured = True
    except OSError:  # a sandbox without it: shapes only
        measured = False
    base = _rss_kb()
    maps = attention_maps(smollm2, smollm2.encode(prompt).ids, list(range(30)), [], ("summed_norms",))
    peak_mb = (_peak_rss_kb() - base) / 1024
    assert all(m["summed_norms"].shape == (n, n) for m in maps.values())
    assert not measured or peak_mb < 1024, peak_mb  # the (heads, n, n, d) tensor alone is 5.4 GB a layer
    res = attention.run(smollm2, job("attention", {"prompt": prompt}, {"measures": ["summed_norms"], "layers": fits}),
                        Context())
    assert len(json.dumps(res.model_dump(mode="json"))) <= Limits().max_result_bytes


def _rss_kb() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _peak_rss_kb() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))


def test_attention_patterns_on_bundled_models(bundled):
    res = attention_patterns.run(bundled, job("attention_patterns", {"prompts": SENTENCES}), Context())
    assert sum(res.distribution.values()) == pytest.approx(1.0)
    assert res.distribution["vertical"] > 0.2  # [CLS]/[SEP] or first-token stripes are common in both
