"""A workload's production volume: how much traffic it stands for, to project a month's cost from a probe run.

Ground: the probe reads it as part of a workload file, ``tokenpulse trends -w`` reads it on its own (the
sinks do not import the producers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokenpulse.errors import TokenpulseError
from tokenpulse.yamlfile import read_yaml_mapping

PerDay = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class VolumeError(TokenpulseError):
    """A production volume that cannot be used; the message names the file, the field and the fix."""


class ProductionVolume(BaseModel):
    """``requests_per_day`` or ``tokens_per_day`` (prompt + completion) in production, not both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_day: PerDay | None = None
    tokens_per_day: PerDay | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ProductionVolume:
        if (self.requests_per_day is None) == (self.tokens_per_day is None):
            raise ValueError("give requests_per_day or tokens_per_day, not both and not neither")
        return self


def volume_of_workload_file(path: Path) -> tuple[str | None, ProductionVolume | None]:
    """The workload's ``name`` and its ``production`` volume (``None`` when the file declares none)."""
    document = read_yaml_mapping(path, "workload file", VolumeError, "name, endpoints, prompts, schedule")
    name = document.get("name")
    raw = document.get("production")
    if raw is None:
        return (name if isinstance(name, str) else None), None
    try:
        volume = ProductionVolume.model_validate(raw)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(["production", *(str(p) for p in problem["loc"])])
        raise VolumeError(
            f"{path}: field '{where}': {problem['msg']}; fix: e.g. production: {{requests_per_day: 50000}}"
        ) from None
    return (name if isinstance(name, str) else None), volume
