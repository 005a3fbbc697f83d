"""Per-job interventions other kinds can carry in their params: ITI steering (`steering`) and
knowledge edits (`edits`). Applied by hooks for that job only; the shared weights never change.

`Interventions` is the params mixin (GenerateParams, AttributionParams, LogitLensParams inherit it).
"""

from __future__ import annotations

from schemas.common import Strict


class Interventions(Strict):
    pass
