"""The figures of docs/internals.md on minilm-l6: Kobayashi et al. 2020's central comparison (per
layer, the share of attention that goes to special tokens ([CLS], [SEP]), punctuation and other
tokens, by weight and by norm (heads averaged), and by the summed norm ‖Σ_h α f‖), and the
attention-pattern classes of its 72 heads over the same sentences.

    python -m bench.token_class_minilm     # prints the Markdown table
"""

from __future__ import annotations

from common.registry import load_registry
from schemas.jobs import parse_job
from workers.context import Context
from workers.methods import attention, attention_patterns
from workers.models.loading import load_model

SENTENCES = [
    "The cat sat on the mat, and the dog slept by the door.",
    "In 1905, Einstein published four papers; each changed physics.",
    "She opened the window. Cold air filled the room!",
    "Paris is the capital of France, and Rome is the capital of Italy.",
    "After the meeting, the team went home, tired but happy.",
    "Why did the train stop? Nobody on board knew.",
    "The museum, which opened in 1880, holds paintings, coins and maps.",
    "He said that the results were clear: the drug worked.",
    "Rain fell all night; by morning, the river had risen two metres.",
    "If you heat ice, it melts, and if you heat water, it boils.",
    "The old library was quiet, dusty and full of forgotten books.",
    "Birds sing at dawn, but owls hunt at night.",
]
CLASSES = ("special", "punctuation", "other")


def measure(lm) -> dict[int, dict[str, list[float]]]:
    rows: dict[int, dict[str, list[float]]] = {}
    for s in SENTENCES:
        req = parse_job({"kind": "attention", "model": "minilm-l6", "input": {"prompt": s},
                         "params": {"aggregate": "token_class"}})
        for layer in attention.run(lm, req, Context()).token_class:
            row = rows.setdefault(layer.layer, {})
            for c in CLASSES:
                row.setdefault(f"weight_{c}", []).append(getattr(layer.weight, c))
                row.setdefault(f"norm_{c}", []).append(sum(getattr(h.norm, c) for h in layer.heads) / len(layer.heads))
                row.setdefault(f"summed_{c}", []).append(getattr(layer.summed_norm, c))
    return rows


def table(rows) -> str:
    out = ["| layer | special: weight | special: norm | special: summed norm | punctuation: weight | "
           "punctuation: norm | other: weight | other: norm |", "|---|---|---|---|---|---|---|---|"]
    for layer, row in sorted(rows.items()):
        m = {k: sum(v) / len(v) for k, v in row.items()}
        out.append(f"| {layer} | {m['weight_special']:.0%} | {m['norm_special']:.0%} | {m['summed_special']:.0%} | "
                   f"{m['weight_punctuation']:.0%} | {m['norm_punctuation']:.0%} | {m['weight_other']:.0%} | "
                   f"{m['norm_other']:.0%} |")
    return "\n".join(out)


def patterns(lm) -> str:
    req = parse_job({"kind": "attention_patterns", "model": "minilm-l6", "input": {"prompts": SENTENCES}})
    res = attention_patterns.run(lm, req, Context())
    shares = ", ".join(f"{c} {v:.0%}" for c, v in res.distribution.items())
    grid = "\n".join(f"| {i} | " + " | ".join(p.replace("vertical+diagonal", "v+d")[:6] for p in row) + " |"
                     for i, row in zip(res.layers, res.grid))
    header = "| layer | " + " | ".join(f"h{h}" for h in res.heads) + " |\n|---|" + "---|" * len(res.heads)
    return f"Maps ({len(SENTENCES)} sentences × 72 heads): {shares}.\n\n{header}\n{grid}"


if __name__ == "__main__":
    model = load_model(load_registry()["minilm-l6"])
    print(f"{len(SENTENCES)} sentences, shares averaged over queries, heads and sentences:\n")
    print(table(measure(model)))
    print()
    print(patterns(model))
