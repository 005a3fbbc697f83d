"""kind -> the method that runs it. Adding a kind: one line here, one in `schemas.jobs.KINDS`.

The params and result types come from the kind's schema (`schemas.jobs.KINDS`); a method module
contributes `run(lm, request, progress) -> result`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

from pydantic import BaseModel

from schemas.jobs import KINDS
from workers.methods import (
    activation_patching,
    attention,
    attention_patterns,
    attribution,
    circuit,
    ffn_projection,
    generate,
    head_redundancy,
    icl_anchors,
    knowledge_edit,
    knowledge_neurons,
    logit_lens,
    probe,
    steering_fit,
    syntactic_attention,
)


class MethodSpec(NamedTuple):
    params: type[BaseModel]
    result: type[BaseModel]
    run: Callable  # run(lm, request, progress) -> result


METHODS: dict[str, ModuleType] = {
    "attribution": attribution,
    "generate": generate,
    "attention": attention,
    "logit_lens": logit_lens,
    "ffn_projection": ffn_projection,
    "attention_patterns": attention_patterns,
    "probe": probe,
    "steering_fit": steering_fit,
    "knowledge_neurons": knowledge_neurons,
    "knowledge_edit": knowledge_edit,
    "activation_patching": activation_patching,
    "circuit": circuit,
    "head_redundancy": head_redundancy,
    "syntactic_attention": syntactic_attention,
    "icl_anchors": icl_anchors,
}

REGISTRY: dict[str, MethodSpec] = {
    kind: MethodSpec(KINDS[kind].params, KINDS[kind].result, module.run) for kind, module in METHODS.items()
}
