"""One example request per job kind, on the bundled models: the OpenAPI document's request examples
(`POST /v1/jobs`), the explorer's pre-filled forms (`/ui`, read from the OpenAPI document) and the
docs use these. Each validates as a `JobRequest` (tests/unit/test_examples.py) and is small enough
to finish in seconds to a minute on a CPU.
"""

from __future__ import annotations

from typing import Any

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"
_TF = [  # true/false statements for probe and steering_fit
    ("The capital of France is Paris.", True), ("The capital of France is Rome.", False),
    ("Water boils at 100 degrees Celsius at sea level.", True),
    ("Water boils at 10 degrees Celsius at sea level.", False),
    ("The Earth orbits the Sun.", True), ("The Sun orbits the Earth.", False),
    ("Two plus two is four.", True), ("Two plus two is five.", False),
    ("Cats are mammals.", True), ("Cats are reptiles.", False),
]

EXAMPLES: dict[str, dict[str, Any]] = {
    "attribution": {
        "kind": "attribution", "model": "smollm2-135m",
        "input": {"prompt": IOI_PROMPT, "target": " Mary"},
        "params": {"method": "integrated_gradients", "n_steps": 32},
    },
    "generate": {
        "kind": "generate", "model": "smollm2-135m",
        "input": {"prompt": "The capital of France is"},
        "params": {"max_new_tokens": 12},
    },
    "attention": {
        "kind": "attention", "model": "smollm2-135m",
        "input": {"prompt": IOI_PROMPT},
        "params": {"measures": ["weights", "norms"], "layers": [0, 1, 2, 3]},
    },
    "logit_lens": {
        "kind": "logit_lens", "model": "smollm2-135m",
        "input": {"prompt": IOI_PROMPT, "target": " Mary"},
        "params": {"top_k": 3},
    },
    "ffn_projection": {
        "kind": "ffn_projection", "model": "smollm2-135m",
        "input": {"prompt": "The capital of France is"},
        "params": {"layers": [20, 25, 29], "top_values": 5, "top_tokens": 5},
    },
    "attention_patterns": {
        "kind": "attention_patterns", "model": "minilm-l6",
        "input": {"prompts": ["The cat sat on the mat.", "A dog chased the ball in the park."]},
        "params": {},
    },
    "probe": {
        "kind": "probe", "model": "smollm2-135m",
        "input": {"examples": [{"text": t, "label": label} for t, label in _TF]},
        "params": {"site": "attn_head", "folds": 2, "layers": [0, 10, 20, 29]},
    },
    "steering_fit": {
        "kind": "steering_fit", "model": "smollm2-135m",
        "input": {"examples": [{"prompt": "Q: Is this true? A:", "completion": " " + t, "label": label}
                               for t, label in _TF]},
        "params": {"folds": 2, "n_heads": 8},
    },
    "knowledge_neurons": {
        "kind": "knowledge_neurons", "model": "smollm2-135m",
        "input": {"prompts": ["The capital of France is", "France's capital city is"], "answer": " Paris"},
        "params": {"n_steps": 8, "layers": [26, 27, 28, 29], "builtin_controls": False},
    },
    "knowledge_edit": {
        "kind": "knowledge_edit", "model": "smollm2-135m",
        "input": {"prompts": ["The capital of France is", "France's capital city is"], "answer": " Paris",
                  "control_prompts": ["The capital of Germany is"]},
        "params": {"operation": "suppress", "n_steps": 8, "layers": [26, 27, 28, 29]},
    },
    "activation_patching": {
        "kind": "activation_patching", "model": "smollm2-135m",
        "input": {"clean_prompt": IOI_PROMPT,
                  "corrupted_prompt": "When Mary and John went to the store, Mary gave a drink to",
                  "answer": " Mary", "wrong_answer": " John"},
        "params": {"component": "residual", "layers": [0, 5, 10, 15, 20, 25, 29]},
    },
    "circuit": {
        "kind": "circuit", "model": "smollm2-135m",
        "input": {"dataset": {"name": "ioi", "n": 8, "seed": 0, "templates": "BABA"}},
        "params": {"max_heads_per_class": 3},
    },
    "head_redundancy": {
        "kind": "head_redundancy", "model": "smollm2-135m",
        "input": {"texts": ["The cat sat on the mat.", "A dog chased the ball in the park.",
                            "The capital of France is Paris.", "Water boils at 100 degrees Celsius."]},
        "params": {"layers": [0, 1, 28, 29], "threshold": 0.3, "tolerance": 0.01},
    },
    "syntactic_attention": {
        "kind": "syntactic_attention", "model": "smollm2-135m",
        "input": {"sentences": [
            {"words": ["The", "girl", "near", "the", "boys", "sings"], "heads": [2, 6, 5, 5, 2, 0],
             "relations": ["det", "nsubj", "case", "det", "nmod", "root"]},
            {"words": ["The", "teachers", "who", "the", "student", "likes", "write", "books"],
             "heads": [2, 7, 6, 5, 6, 2, 0, 7],
             "relations": ["det", "nsubj", "obj", "det", "nsubj", "acl:relcl", "root", "obj"]},
        ]},
        "params": {"top_k": 3},
    },
    "icl_anchors": {
        "kind": "icl_anchors", "model": "smollm2-135m",
        "input": {
            "label_words": {"positive": "positive", "negative": "negative"},
            "template": "Review: {text}\nSentiment: {label}\n",
            "demonstrations": [{"text": "A delightful, moving film.", "label": "positive"},
                               {"text": "Dull and far too long.", "label": "negative"},
                               {"text": "The cast is wonderful.", "label": "positive"},
                               {"text": "A mess from start to finish.", "label": "negative"}],
            "queries": [{"text": "I loved every minute.", "label": "positive"},
                        {"text": "Boring, I left early.", "label": "negative"},
                        {"text": "Sharp, funny and warm.", "label": "positive"},
                        {"text": "The plot makes no sense.", "label": "negative"}],
            "fit_examples": [{"text": "A joy to watch.", "label": "positive"},
                             {"text": "Painfully bad acting.", "label": "negative"}],
        },
        "params": {"flow_queries": 1, "epochs": 3},
    },
}


def openapi_examples() -> dict[str, dict[str, Any]]:
    """`openapi_examples` for FastAPI's `Body`: {kind: {"summary", "value"}} (OpenAPI 3.1 `examples`)."""
    return {kind: {"summary": f"{kind} on {body['model']}", "value": body} for kind, body in EXAMPLES.items()}
