"""Per-job interventions other kinds can carry in their params: ITI steering (`steering`) and
knowledge edits (`edits`). Applied by hooks for that job only; the shared weights never change.

`Interventions` is the params mixin (GenerateParams, AttributionParams, LogitLensParams inherit it).
"""

from __future__ import annotations

from schemas.common import Strict
from schemas.kinds.steering_fit import SteeringRef


class Interventions(Strict):
    steering: SteeringRef | None = None
