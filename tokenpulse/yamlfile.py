"""Reading the YAML files users write (settings, workloads, rules) with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tokenpulse.errors import TokenpulseError


def read_yaml_mapping(path: Path, what: str, error: type[TokenpulseError], expected: str = "") -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path``; anything else raises ``error`` naming the file.

    ``what`` names the file's role in messages ("workload file"); ``expected`` says what the mapping holds.
    """
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise error(f"{what} {path} must be a mapping" + (f" with {expected}" if expected else ""))
    return document
