"""Knowledge neurons on SmolLM2-135M: locate time and the located-vs-random figures.

- locate time: one fact with 3 paraphrases, all 30 layers, 20 IG steps (Gauss-Legendre), ours
  (`workers.ffn`: every layer in one batched pass over single-token rows that share the prompt's
  KV cache) against the same integral computed one layer at a time as the reference code does
  (github.com/Hunter-DDM/knowledge-neurons, `1_analyze_mlm.py`: per layer, a batch of `n_steps`
  copies of the whole prompt with that layer's activation scaled, forward + backward), and the
  largest difference between the two score tensors;
- figures (docs/knowledge.md): for each fact, the answer's probability with the located neurons
  suppressed, with as many random neurons of the same layers suppressed, and on control facts
  (the other facts' first prompts), as mean relative changes; and the `update` edit's scores.

`python -m bench.run knowledge` writes the section; both runs use fp32 on the same device.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

FACTS = [
    (" Paris", ["The capital of France is", "France's capital city is", "The capital city of France is"]),
    (" Au", ["The chemical symbol for gold is", "Gold's chemical symbol is", "In chemistry, the symbol for gold is"]),
    (" Jupiter", ["The largest planet in the solar system is", "The biggest planet in our solar system is",
                  "The solar system's largest planet is"]),
    (" oxygen", ["Water is made of hydrogen and", "Water molecules consist of hydrogen and",
                 "H2O is made of two atoms of hydrogen and one atom of"]),
    (" Tokyo", ["The capital of Japan is", "Japan's capital city is", "The capital city of Japan is"]),
]


def load():
    from schemas.models import load_registry
    from workers.models.loading import load_model

    spec = load_registry()["smollm2-135m"].model_copy(update={"dtype": "float32"})
    return load_model(spec)


def reference_layer_ig(lm, ids: list[int], answer: int, layer: int, n_steps: int) -> torch.Tensor:
    """One layer's IG as the reference computes it: n_steps full-prompt copies, scaled at that layer."""
    from workers.ffn import clean_activations, ffn_out_modules
    from workers.hooks import hooks
    from workers.quadrature import quadrature

    m, _ = clean_activations(lm, ids[:-1], ids[-1])
    alphas, weights = quadrature("gausslegendre", n_steps)
    a = torch.tensor(alphas, device=lm.device)[:, None]
    points = (a * m[layer][None]).detach().requires_grad_(True)  # (S, inter)

    def put(module, args):
        x = args[0].clone()
        x[:, -1] = points
        return (x,)

    with hooks(pre=[(ffn_out_modules(lm)[layer], put)]):
        logits = lm.model(input_ids=torch.tensor([ids] * n_steps, device=lm.device), logits_to_keep=1).logits
    prob = logits[:, -1].float().softmax(-1)[:, answer]
    (g,) = torch.autograd.grad(prob, points, grad_outputs=torch.tensor(weights, device=lm.device))
    return m[layer].float() * g.float().sum(0)


def _sync(lm):
    if lm.device.type == "cuda":
        torch.cuda.synchronize()


def timing(lm, repeats: int = int(os.environ.get("KN_BENCH_REPEATS", "1")),
           ref_layers: int = int(os.environ.get("KN_BENCH_REF_LAYERS", "6"))) -> tuple[str, float]:
    """`ref_layers` < 30: the reference is timed on that many evenly spaced layers and scaled to 30
    (its cost per layer is one full-prompt batch; the spread of layers averages the backward depth)."""
    from workers.ffn import fact_attributions
    from workers.methods.knowledge_neurons import encode_answer

    answer, prompts = FACTS[0]
    a = encode_answer(lm, answer)
    ids = [lm.encode(p).ids for p in prompts]
    n_layers = len(lm.layers)
    picked = sorted({round(i * (n_layers - 1) / max(1, ref_layers - 1)) for i in range(ref_layers)})
    scale = n_layers / len(picked)
    ours_t, ref_t, diff = [], [], 0.0
    for _ in range(repeats):
        _sync(lm)
        t = time.perf_counter()
        ours = [fact_attributions(lm, x, a, 20, "gausslegendre") for x in ids]
        _sync(lm)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = [torch.stack([reference_layer_ig(lm, x, a[0], layer, 20) for layer in picked]) for x in ids]
        _sync(lm)
        ref_t.append(scale * (time.perf_counter() - t))
        diff = max(float((o[picked] - r).abs().max() / r.abs().max()) for o, r in zip(ours, ref))
    o, r = statistics.median(ours_t), statistics.median(ref_t)
    note = f" (timed on layers {picked}, × {scale:.0f})" if len(picked) < n_layers else ""
    rows = [f"| all layers in one batched pass, shared KV cache (ours) | {o:.2f} |",
            f"| one layer at a time, whole prompt per step (reference code){note} | {r:.2f} |"]
    table = ("| locate: 3 paraphrases × 30 layers × 20 steps | seconds |\n| --- | --- |\n" + "\n".join(rows)
             + f"\n\nSpeed-up {r / o:.1f}×; largest score difference {diff:.1e} of the max score.")
    return table, r / o


def figures(lm) -> str:
    from schemas.kinds.knowledge_edit import KnowledgeEditInput, KnowledgeEditParams
    from schemas.kinds.knowledge_neurons import KnowledgeNeuronsInput, KnowledgeNeuronsParams
    from workers.methods import knowledge_edit, knowledge_neurons
    from workers.progress import no_progress

    class Request:
        def __init__(self, input, params):
            self.input, self.params = input, params

    class MemoryStore:  # the benchmark keeps no artifacts
        def put(self, kind, model, data):
            from types import SimpleNamespace
            return SimpleNamespace(id="ed_" + "0" * 32)

    lines = ["| fact | p(answer) | located neurons (layers) | located suppressed | random suppressed | "
             "controls suppressed | enhanced |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, (answer, prompts) in enumerate(FACTS):
        controls = [p[0] for j, (_, p) in enumerate(FACTS) if j != k]
        res = knowledge_neurons.run(lm, Request(KnowledgeNeuronsInput(prompts=prompts, answer=answer,
                                                                      control_prompts=controls),
                                                KnowledgeNeuronsParams()), no_progress)
        s = res.summary
        layers = sorted({n.layer for n in res.neurons})
        p = statistics.mean(e.prob for e in res.prompts)
        lines.append(f"| {prompts[0]} →{answer} | {p:.2f} | {len(res.neurons)} ({', '.join(map(str, layers))}) | "
                     f"{s['suppressed']:+.0%} | {s.get('random_suppressed', 0):+.0%} | "
                     f"{s.get('control_suppressed', 0):+.0%} | {s['enhanced']:+.0%} |")
    # update France -> Rome with the located neurons, held-out paraphrase, unrelated controls
    answer, prompts = FACTS[0]
    edit = knowledge_edit.run(lm, Request(
        KnowledgeEditInput(prompts=prompts[:2], paraphrases=prompts[2:], answer=answer, new_answer=" Rome",
                           control_prompts=[p[0] for _, p in FACTS[1:4]]),
        KnowledgeEditParams(operation="update")), no_progress, store=MemoryStore())
    upd = (f"\n\n`knowledge_edit` update France → Rome (λ = 0.5, {len(edit.neurons)} neurons located on 2 prompts): "
           f"reliability {edit.reliability.score:.2f} (p(Rome) {edit.reliability.new_prob_before:.3f} → "
           f"{edit.reliability.new_prob_after:.2f}), generalization {edit.generalization.score:.2f}, "
           f"locality {edit.locality.score:.2f} (tolerance 0.05; "
           + ", ".join(f"{r.top1_before.strip()} {r.prob_before:.2f}→{r.prob_after:.2f}" for r in edit.locality.prompts)
           + ").")
    return "\n".join(lines) + upd


def run() -> str:
    lm = load()
    table, _ = timing(lm)
    return ("## Knowledge neurons (SmolLM2-135M, fp32)\n\n" + table + "\n\nLocated vs random neurons "
            "(3 paraphrases per fact, all layers, 20 steps, threshold 0.2, adaptive sharing; mean relative "
            "change of the answer's probability):\n\n" + figures(lm) + "\n")


if __name__ == "__main__":
    print(run())
