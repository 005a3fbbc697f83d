"""kind -> the method that runs it. Adding a kind: one line here, one in `schemas.jobs.KINDS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from pydantic import BaseModel

from schemas.kinds import attention as attention_schema
from schemas.kinds import attention_patterns as attention_patterns_schema
from schemas.kinds import attribution as attribution_schema
from schemas.kinds import ffn_projection as ffn_projection_schema
from schemas.kinds import generate as generate_schema
from schemas.kinds import logit_lens as logit_lens_schema
from schemas.kinds import probe as probe_schema
from schemas.kinds import steering_fit as steering_fit_schema
from workers.methods import attribution, generate
from workers.methods import attention, attention_patterns, ffn_projection, logit_lens
from schemas.kinds import knowledge_edit as knowledge_edit_schema
from schemas.kinds import knowledge_neurons as knowledge_neurons_schema
from workers.methods import probe, steering_fit
from workers.methods import knowledge_edit, knowledge_neurons


class MethodSpec(NamedTuple):
    params: type[BaseModel]
    result: type[BaseModel]
    run: Callable  # run(lm, request, progress) -> result


REGISTRY: dict[str, MethodSpec] = {
    "attribution": MethodSpec(attribution_schema.AttributionParams, attribution_schema.AttributionResult, attribution.run),
    "generate": MethodSpec(generate_schema.GenerateParams, generate_schema.GenerateResult, generate.run),
    "probe": MethodSpec(probe_schema.ProbeParams, probe_schema.ProbeResult, probe.run),
    "steering_fit": MethodSpec(steering_fit_schema.SteeringFitParams, steering_fit_schema.SteeringFitResult, steering_fit.run),
    "attention": MethodSpec(attention_schema.AttentionParams, attention_schema.AttentionResult, attention.run),
    "logit_lens": MethodSpec(logit_lens_schema.LogitLensParams, logit_lens_schema.LogitLensResult, logit_lens.run),
    "ffn_projection": MethodSpec(ffn_projection_schema.FfnProjectionParams, ffn_projection_schema.FfnProjectionResult,
                                 ffn_projection.run),
    "attention_patterns": MethodSpec(attention_patterns_schema.AttentionPatternsParams,
                                     attention_patterns_schema.AttentionPatternsResult, attention_patterns.run),
    "knowledge_neurons": MethodSpec(knowledge_neurons_schema.KnowledgeNeuronsParams,
                                    knowledge_neurons_schema.KnowledgeNeuronsResult, knowledge_neurons.run),
    "knowledge_edit": MethodSpec(knowledge_edit_schema.KnowledgeEditParams, knowledge_edit_schema.KnowledgeEditResult,
                                 knowledge_edit.run),
}
