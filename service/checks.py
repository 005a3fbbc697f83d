"""Submit-time checks that need more than the request: the model's published facts, the prompt's
token count and the caller's stored artifacts. What the API can know it refuses now (422 naming the
field), not on the worker after a 202; the worker checks the same again before it runs.
"""

from __future__ import annotations

from common.artifacts import ArtifactStore, mismatch
from schemas.common import FieldError, TextInput
from schemas.facts import Facts
from schemas.interventions import Interventions
from schemas.jobs import JobBase
from schemas.limits import Limits
from service.queue import JobQueue
from service.tokens import TokenCounter


def _in_body(errors: list[FieldError]) -> list[FieldError]:
    return [e.model_copy(update={"loc": ["body", *e.loc]}) for e in errors]


def model_errors(body: JobBase, queue: JobQueue, tokens: TokenCounter, limits: Limits) -> list[FieldError]:
    """Indices and params against the model's facts and the prompt's length (`JobBase.over_facts`;
    cross-field checks that need no facts run even before any worker has started), then, for kinds
    whose result size follows from the prompt and the model (`over_result_limit`), the size estimate
    with the selection that fits. Facts come from a live worker's heartbeat, the token count from the
    tokenizer workers publish; what is not known yet is left to the worker."""
    published = queue.model_facts(body.model)
    text = body.input
    n_tokens = tokens.count(body.model, text) if published and isinstance(text, TextInput) else None
    errors = body.over_facts(Facts.of(published, n_tokens))
    if not errors and published and n_tokens is not None:
        errors = list(body.params.over_result_limit(n_tokens, published, limits))
    return _in_body(errors)


def artifact_refs(body: JobBase) -> list[tuple[str, str, list[str | int]]]:
    """The artifacts a job names: (kind, id, where in the body)."""
    params = body.params
    if not isinstance(params, Interventions):
        return []
    refs: list[tuple[str, str, list[str | int]]] = []
    if params.steering is not None:
        refs.append(("steering-profiles", params.steering.profile_id, ["params", "steering", "profile_id"]))
    refs += [("edits", e, ["params", "edits", i]) for i, e in enumerate(params.edits or [])]
    if params.anchors is not None:
        refs.append(("anchors", params.anchors.anchors_id, ["params", "anchors", "anchors_id"]))
    return refs


def artifact_errors(body: JobBase, queue: JobQueue, owner: str) -> list[FieldError]:
    """Steering profiles and edit sets a job names must exist, be the caller's, and be for its model
    (the worker reads them again when the job runs: one deleted meanwhile still fails the job)."""
    refs = artifact_refs(body)
    if not refs:
        return []
    views = ArtifactStore(queue.redis, owner).find([(kind, artifact_id) for kind, artifact_id, _ in refs])
    errors = [FieldError(loc=loc, msg=msg, type="not_found" if view is None else "wrong_model")
              for (kind, artifact_id, loc), view in zip(refs, views)
              if (msg := mismatch(kind, artifact_id, view, body.model)) is not None]
    return _in_body(errors)
