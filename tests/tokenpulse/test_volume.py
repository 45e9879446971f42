"""A workload's production volume: validated in the workload, read on its own by ``trends -w``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenpulse.producers.errors import WorkloadError
from tokenpulse.producers.workload import load_workload
from tokenpulse.volume import VolumeError, volume_of_workload_file

EXAMPLES = Path(__file__).parents[2] / "examples" / "workloads"


def test_the_example_declares_its_volume_and_both_readers_agree() -> None:
    name, volume = volume_of_workload_file(EXAMPLES / "reasoning-models.yaml")
    workload = load_workload(EXAMPLES / "reasoning-models.yaml")
    assert (name, volume) == (workload.name, workload.production)
    assert volume is not None and volume.requests_per_day == 50_000


def test_a_file_without_production_has_no_volume() -> None:
    assert volume_of_workload_file(EXAMPLES / "simulator.yaml")[1] is None


@pytest.mark.parametrize(
    "production",
    ["{requests_per_day: 10, tokens_per_day: 10}", "{requests_per_day: -1}", "{per_day: 3}", "{}"],
)
def test_a_bad_volume_names_the_field(tmp_path: Path, production: str) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: w\nrequests: 1\nprompts: {inline: [hi]}\n"
        "endpoints: [{name: e, kind: openai, base_url: 'http://h/v1', model: m}]\n"
        f"production: {production}\n"
    )
    with pytest.raises(VolumeError, match="production"):
        volume_of_workload_file(path)
    with pytest.raises(WorkloadError, match="production"):
        load_workload(path)
