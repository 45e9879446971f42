"""JSON Schema export of every event model (``tokenpulse schema export DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from tokenpulse.schemas.events import Alert, RequestTiming, WindowStats

MODELS: dict[str, type[BaseModel]] = {"request-timing": RequestTiming, "window-stats": WindowStats, "alert": Alert}


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.v<version>.schema.json`` for each event model; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MODELS.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        path = directory / f"{name}.v1.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
