"""The model registry a process serves: the bundled models plus those configured in
`LANTERN_MODELS_FILE` (a JSON list of `ModelSpec`) or `LANTERN_MODELS` (the same JSON inline)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from common.settings import ProcessSettings
from schemas.models import BUNDLED, ModelSpec


def load_registry() -> dict[str, ModelSpec]:
    settings = ProcessSettings()
    specs = {m.id: m for m in BUNDLED}
    adapter = TypeAdapter(list[ModelSpec])
    if settings.models_file:
        specs.update({m.id: m for m in adapter.validate_python(json.loads(Path(settings.models_file).read_text()))})
    if settings.models:
        specs.update({m.id: m for m in adapter.validate_json(settings.models)})
    return specs
