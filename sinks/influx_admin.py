"""``tokenpulse influx init``: bucket retention, the long-retention rollup bucket and the downsampling task
(hourly ``llm_window_1h`` points rolled up from ``llm_request``, so hopping window specs are not counted twice).

Idempotent: existing buckets get their retention updated, an existing task of the same name gets its Flux
replaced, so running it again (or from ``stack up``) is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
from influxdb_client.domain.task_create_request import TaskCreateRequest

from tokenpulse.durations import parse_duration_ns
from tokenpulse.errors import TokenpulseError
from tokenpulse.sinks.flux import flux_literal, render

TASK_PREFIX = "tokenpulse-downsample-llm-window"


def create_bucket(client: Any, org: str, name: str) -> str:
    """Create bucket ``name`` in ``org`` (infinite retention) and return its name."""
    client.buckets_api().create_bucket(bucket_name=name, org=org)
    return name


def task_name(bucket: str) -> str:
    """One downsampling task per raw bucket, so deployments sharing an org do not collide."""
    return f"{TASK_PREFIX}-{bucket}"


class InfluxInitError(TokenpulseError):
    """InfluxDB could not be prepared; the message names the object and the fix."""


@dataclass(frozen=True)
class InitResult:
    bucket: str
    bucket_retention_s: int
    rollup_bucket: str
    rollup_retention_s: int
    task_id: str
    task_created: bool


def downsample_flux(bucket: str, rollup_bucket: str, org: str, every: str = "1h") -> str:
    """The task's Flux: ``option task`` plus ``sinks/queries/downsample_llm_window.flux``."""
    parse_duration_ns(every)
    header = f"option task = {{name: {flux_literal(task_name(bucket))}, every: {every}}}\n\n"
    return render("downsample_llm_window", {"bucket": bucket, "rollup_bucket": rollup_bucket, "org": org}, header)


def _expire(seconds: int) -> Any:
    return BucketRetentionRules(type="expire", every_seconds=seconds)  # type: ignore[no-untyped-call]


def _retention_s(text: str) -> int:
    if text in ("0", "inf", "infinite"):
        return 0
    try:
        return parse_duration_ns(text) // 1_000_000_000
    except ValueError as exc:
        raise InfluxInitError(f"retention: {exc} (or 'inf')") from None


def init_influx(
    client: Any,
    org: str,
    bucket: str,
    *,
    rollup_bucket: str | None = None,
    retention: str = "35d",
    rollup_retention: str = "400d",
) -> InitResult:
    """Set ``bucket``'s retention, create/update the rollup bucket and the hourly downsampling task."""
    orgs = client.organizations_api().find_organizations(org=org)
    if not orgs:
        raise InfluxInitError(f"organization {org!r} not found; set TOKENPULSE_INFLUX_ORG")
    org_id = orgs[0].id
    rollup = rollup_bucket or f"{bucket}_rollup"
    buckets_api = client.buckets_api()
    retentions = {bucket: _retention_s(retention), rollup: _retention_s(rollup_retention)}
    for name, seconds in retentions.items():
        rules = [_expire(seconds)] if seconds else []
        found = buckets_api.find_bucket_by_name(name)
        if found is None:
            buckets_api.create_bucket(bucket_name=name, org=org_id, retention_rules=rules)
        else:
            found.retention_rules = rules or [_expire(0)]
            buckets_api.update_bucket(found)
    flux = downsample_flux(bucket, rollup, org)
    tasks_api = client.tasks_api()
    name = task_name(bucket)
    existing = [t for t in tasks_api.find_tasks(name=name, org_id=org_id) if t.name == name]
    if existing:
        task = existing[0]
        task.flux = flux
        task.status = "active"
        task = tasks_api.update_task(task)
        created = False
    else:
        task = tasks_api.create_task(
            task_create_request=TaskCreateRequest(  # type: ignore[no-untyped-call]
                flux=flux, org_id=org_id, status="active", description=name
            )
        )
        created = True
    return InitResult(bucket, retentions[bucket], rollup, retentions[rollup], str(task.id), created)
