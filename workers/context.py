"""What every method gets besides the model and its job: `run(lm, job, ctx) -> result`.

`ctx.progress` reports progress and enforces cancel and deadline (workers/progress.py), `ctx.limits`
are the settings' limits, `ctx.artifacts` the job owner's artifact store (steering profiles, edit
sets), and `ctx.provenance(lm, job)` stamps the result. workers/tasks.py builds one per job; a direct
call (a test, a benchmark) passes `Context()`: no reporting, no deadline, default limits, no store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib.metadata import version

from common.artifacts import ArtifactStore
from schemas.common import JobBase, Provenance
from schemas.limits import Limits
from workers.models.checkpoints import step_of
from workers.models.loading import LM
from workers.progress import Progress, no_progress

VERSIONS = {p: version(p) for p in ("torch", "transformers", "lantern")}


@dataclass(frozen=True)
class Context:
    progress: Progress = no_progress
    limits: Limits = field(default_factory=Limits)
    store: ArtifactStore | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def artifacts(self) -> ArtifactStore:
        if self.store is None:
            raise RuntimeError("this context has no artifact store: pass Context(store=ArtifactStore(...))")
        return self.store

    def provenance(self, lm: LM, job: JobBase) -> Provenance:
        """Where the result came from: the model, its revision (and the training step, when `lm` is one of
        its checkpoints) and placement, the kind, the params as run, the library versions, and the
        seconds since this context was made."""
        params = job.params.model_dump(mode="json")
        return Provenance(model=lm.id, revision=lm.spec.revision, checkpoint=step_of(lm),
                          dtype=str(lm.dtype).removeprefix("torch."), device=str(lm.device), kind=job.kind,
                          method=params.get("method"), params=params, versions=VERSIONS,
                          elapsed_s=round(time.perf_counter() - self.started, 4))
