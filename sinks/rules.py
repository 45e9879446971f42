"""Regression rules and their evaluation: pure logic, no I/O, driven by event time (``window_end``).

Rules come from YAML (``load_rules``), validated by pydantic. Four kinds:

* ``threshold``: a metric beyond a bound (``above``/``below``) for ``for_windows`` consecutive windows;
* ``regression``: a metric worse than its baseline (the median of the same metric over the trailing
  ``baseline_period``, from stream state) by at least ``worse_by_pct``, with at least ``min_samples``
  requests on both sides;
* ``error_rate``: ``error_rate`` above a bound, with at least ``min_samples`` requests in the window;
* ``cost``: a regression rule on ``cost_per_1k_tokens``.

Every rule has a severity, ``for_windows`` to fire, ``clear_windows`` and a hysteresis band to resolve,
and a cooldown after resolving, so one incident gives exactly one firing and one resolved alert. A
``no_data`` policy says what happens to a key that stops reporting. Re-emitted or late windows (a
``window_end`` not after the last one seen for the key) are ignored, so replays never alert twice.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokenpulse.durations import parse_duration_ns
from tokenpulse.errors import TokenpulseError
from tokenpulse.schemas import Alert, Severity, WindowStats
from tokenpulse.yamlfile import read_yaml_mapping

Metric = Literal[
    "ttft_p50_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "ttft_max_ms",
    "ttfa_p50_ms",
    "ttfa_p95_ms",
    "ttfa_p99_ms",
    "ttfa_max_ms",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "e2e_p99_ms",
    "e2e_max_ms",
    "tpot_p50_ms",
    "tpot_p95_ms",
    "tpot_p99_ms",
    "tpot_max_ms",
    "error_rate",
    "decode_tps_p50",
    "cost_per_1k_tokens",
    "projected_30d_cost_usd",
    "cache_hit_ratio",
    "reasoning_share",
]
_LOWER_IS_WORSE = frozenset({"decode_tps_p50", "cache_hit_ratio"})


class RulesError(TokenpulseError):
    """A rules file that cannot be used; the message names the rule, the field and the fix."""


def metric_value(stats: WindowStats, metric: str) -> float | None:
    """The value of ``metric`` in one window, or ``None`` when the window has no such data."""
    family, _, rest = metric.partition("_")
    if family in ("ttft", "ttfa", "e2e", "tpot") and rest.endswith("_ms"):
        quantiles = getattr(stats, f"{family}_ms")
        return None if quantiles is None else float(getattr(quantiles, rest.removesuffix("_ms")))
    value = getattr(stats, metric)
    return None if value is None else float(value)


class Match(BaseModel):
    """Glob patterns on the key of a window; ``*`` matches everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    provider: str = "*"
    model: str = "*"
    workload: str = "*"
    window: str = "*"
    region: str = "*"

    def matches(self, stats: WindowStats) -> bool:
        return self.matches_key(stats.provider, stats.model, stats.workload, stats.window, stats.region or "")

    def matches_key(self, provider: str, model: str, workload: str, window: str, region: str = "") -> bool:
        return (
            fnmatchcase(provider, self.provider)
            and fnmatchcase(model, self.model)
            and fnmatchcase(workload, self.workload)
            and fnmatchcase(window, self.window)
            and fnmatchcase(region, self.region)
        )


class NoDataPolicy(BaseModel):
    """What to do when a key has sent no window for ``after``: ``keep`` the state, ``resolve`` a firing
    alert, or raise an ``alert`` of its own (metric ``no_data``), resolved when data returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    after: str = "10m"
    action: Literal["keep", "resolve", "alert"] = "keep"

    @field_validator("after")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_ns(value)
        return value


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
    severity: Severity = "warning"
    match: Match = Match()
    for_windows: Annotated[int, Field(ge=1, le=1000)] = 1
    clear_windows: Annotated[int, Field(ge=1, le=1000)] = 1
    hysteresis_pct: Annotated[float, Field(ge=0, lt=100)] = 10.0
    cooldown: str = "0s"
    min_samples: Annotated[int, Field(ge=0)] = 1
    no_data: NoDataPolicy = NoDataPolicy()

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        parse_duration_ns(value)
        return value

    @property
    def cooldown_ns(self) -> int:
        return parse_duration_ns(self.cooldown)


class ThresholdRule(_RuleBase):
    """``metric`` above ``above`` (or below ``below``) for ``for_windows`` consecutive windows."""

    kind: Literal["threshold"] = "threshold"
    metric: Metric
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self


class ErrorRateRule(_RuleBase):
    """``error_rate`` above ``above`` (a fraction, 0.05 = 5 %) in windows with >= ``min_samples`` requests."""

    kind: Literal["error_rate"]
    above: Annotated[float, Field(ge=0, le=1)]
    min_samples: Annotated[int, Field(ge=1)] = 20


class RegressionRule(_RuleBase):
    """``metric`` worse than the median of its trailing ``baseline_period`` by >= ``worse_by_pct`` %."""

    kind: Literal["regression"]
    metric: Metric
    worse_by_pct: Annotated[float, Field(gt=0)]
    baseline_period: str = "24h"
    min_samples: Annotated[int, Field(ge=1)] = 30
    min_baseline_windows: Annotated[int, Field(ge=1)] = 3

    @field_validator("baseline_period")
    @classmethod
    def _period(cls, value: str) -> str:
        parse_duration_ns(value)
        return value


class CostRule(_RuleBase):
    """``cost_per_1k_tokens`` up by >= ``worse_by_pct`` % against its trailing median."""

    kind: Literal["cost"]
    worse_by_pct: Annotated[float, Field(gt=0)]
    baseline_period: str = "24h"
    min_samples: Annotated[int, Field(ge=1)] = 30
    min_baseline_windows: Annotated[int, Field(ge=1)] = 3

    @property
    def metric(self) -> str:
        return "cost_per_1k_tokens"

    @field_validator("baseline_period")
    @classmethod
    def _period(cls, value: str) -> str:
        parse_duration_ns(value)
        return value


Rule = Annotated[ThresholdRule | ErrorRateRule | RegressionRule | CostRule, Field(discriminator="kind")]


class RuleSet(BaseModel):
    """The contents of a rules YAML file: ``rules: [...]`` with unique names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice; names must be unique")
            seen.add(rule.name)
        return self


def parse_rules(document: Any, source: str = "rules") -> RuleSet:
    """Validate an already-parsed YAML document; errors name the rule and field."""
    if isinstance(document, list):
        document = {"rules": document}
    if not isinstance(document, dict):
        raise RulesError(f"{source}: expected a mapping with a 'rules:' list")
    try:
        return RuleSet.model_validate(document)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False)[:5]:
            loc = list(error["loc"])
            where = ".".join(str(p) for p in loc)
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
                rules = document.get("rules") or []
                raw = rules[loc[1]] if loc[1] < len(rules) else {}
                name = raw.get("name", f"#{loc[1] + 1}") if isinstance(raw, dict) else f"#{loc[1] + 1}"
                where = f"rule {name!r}: " + ".".join(str(p) for p in loc[2:])
            problems.append(f"{where}: {error['msg']}")
        raise RulesError(f"{source}: " + "; ".join(problems)) from None


def load_rules(path: Path) -> RuleSet:
    """Read and validate a rules YAML file."""
    return parse_rules(read_yaml_mapping(path, "rules file", RulesError, "a 'rules' list"), str(path))


@dataclass
class _KeyState:
    """Everything a rule remembers about one key; ``to_dict``/``from_dict`` persist it across restarts.

    The regression baseline is not persisted: it would make every state record up to a day of windows
    long, and a restarted engine seeds it from ``llm_window`` in InfluxDB (``seed_samples``) instead."""

    last_window_end: int = -1
    breach_streak: int = 0
    ok_streak: int = 0
    firing: bool = False
    alert_id: str = ""
    fired_value: float | None = None
    last_resolved_end: int | None = None
    no_data_firing: bool = False
    no_data_alert_id: str = ""
    baseline: deque[tuple[int, float, int]] = field(default_factory=deque)
    firing_alert: Alert | None = None  # the firing Alert as published, re-sent to Alertmanager while firing
    no_data_alert: Alert | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_window_end": self.last_window_end,
            "breach_streak": self.breach_streak,
            "ok_streak": self.ok_streak,
            "firing": self.firing,
            "alert_id": self.alert_id,
            "fired_value": self.fired_value,
            "last_resolved_end": self.last_resolved_end,
            "no_data_firing": self.no_data_firing,
            "no_data_alert_id": self.no_data_alert_id,
            "firing_alert": None if self.firing_alert is None else self.firing_alert.model_dump(mode="json"),
            "no_data_alert": None if self.no_data_alert is None else self.no_data_alert.model_dump(mode="json"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _KeyState:
        firing_alert, no_data_alert = data.get("firing_alert"), data.get("no_data_alert")
        return cls(
            last_window_end=int(data["last_window_end"]),
            breach_streak=int(data["breach_streak"]),
            ok_streak=int(data["ok_streak"]),
            firing=bool(data["firing"]),
            alert_id=str(data["alert_id"]),
            fired_value=None if data.get("fired_value") is None else float(data["fired_value"]),
            last_resolved_end=None if data.get("last_resolved_end") is None else int(data["last_resolved_end"]),
            no_data_firing=bool(data.get("no_data_firing", False)),
            no_data_alert_id=str(data.get("no_data_alert_id", "")),
            firing_alert=None if firing_alert is None else Alert.model_validate(firing_alert),
            no_data_alert=None if no_data_alert is None else Alert.model_validate(no_data_alert),
        )


@dataclass(frozen=True)
class _Verdict:
    value: float
    breach: bool
    clear: bool
    threshold: float
    baseline: float | None


StateKey = tuple[str, str, str, str, str, str]
"""``(rule, provider, model, workload, region, window)``; ``region`` is ``""`` for windows without one."""


def state_key_text(key: StateKey) -> str:
    """The key as on the alerts and alert-state topics: ``rule/provider/model/workload/region/window``."""
    return "/".join(key)


def _alert_id(key: StateKey, started_ns: int, kind: str = "") -> str:
    digest = hashlib.sha256("|".join((*key, str(started_ns), kind)).encode()).hexdigest()
    return digest[:24]


class RuleEngine:
    """Evaluates rules over a stream of ``WindowStats``; ``observe`` returns the alerts to publish."""

    def __init__(self, rules: RuleSet | Sequence[Rule]) -> None:
        self.rules: list[Rule] = list(rules.rules if isinstance(rules, RuleSet) else rules)
        self._states: dict[StateKey, _KeyState] = {}
        self._dirty: set[StateKey] = set()

    def firing(self) -> list[StateKey]:
        """Keys ``(rule, provider, model, workload, region, window)`` whose alert is currently firing."""
        return [key for key, state in self._states.items() if state.firing]

    def firing_alerts(self) -> list[Alert]:
        """The ``firing`` Alert of every incident still firing (no-data alerts included), as published."""
        alerts = [state.firing_alert for state in self._states.values() if state.firing_alert is not None]
        return alerts + [state.no_data_alert for state in self._states.values() if state.no_data_alert is not None]

    def take_changed_states(self) -> dict[StateKey, dict[str, Any]]:
        """The persisted form of every key state changed since the last call (then forgotten as changed)."""
        changed = {key: self._states[key].to_dict() for key in self._dirty if key in self._states}
        self._dirty.clear()
        return changed

    def restore_state(self, key: StateKey, data: dict[str, Any]) -> None:
        """Put back one key's state as ``take_changed_states`` gave it (at start-up, before any window)."""
        self._states[key] = _KeyState.from_dict(data)

    def observe(self, stats: WindowStats) -> list[Alert]:
        alerts: list[Alert] = []
        for rule in self.rules:
            if not rule.match.matches(stats):
                continue
            key = (rule.name, stats.provider, stats.model, stats.workload, stats.region or "", stats.window)
            state = self._states.setdefault(key, _KeyState())
            if stats.window_end <= state.last_window_end:
                continue  # re-emitted or late window: already judged
            state.last_window_end = stats.window_end
            self._dirty.add(key)
            if state.no_data_firing:
                state.no_data_firing = False
                state.no_data_alert = None
                alerts.append(self._no_data_alert(rule, key, state, "resolved", stats.window_end))
            alerts.extend(self._step(rule, key, state, stats))
        return alerts

    def check_idle(self, now_ns: int) -> list[Alert]:
        """Apply each rule's ``no_data`` policy to keys that have been silent for its ``after``."""
        alerts: list[Alert] = []
        rules = {rule.name: rule for rule in self.rules}
        for key, state in self._states.items():
            rule = rules.get(key[0])
            if rule is None or rule.no_data.action == "keep" or state.last_window_end < 0:
                continue
            if now_ns - state.last_window_end < parse_duration_ns(rule.no_data.after):
                continue
            if rule.no_data.action == "resolve" and state.firing:
                self._dirty.add(key)
                alerts.append(self._resolve(rule, key, state, now_ns, None, "no data for " + rule.no_data.after))
            elif rule.no_data.action == "alert" and not state.no_data_firing:
                self._dirty.add(key)
                state.no_data_firing = True
                state.no_data_alert_id = _alert_id(key, now_ns, "no_data")
                state.no_data_alert = self._no_data_alert(rule, key, state, "firing", now_ns)
                alerts.append(state.no_data_alert)
        return alerts

    def _step(self, rule: Rule, key: StateKey, state: _KeyState, stats: WindowStats) -> list[Alert]:
        verdict = self._judge(rule, state, stats)
        if verdict is None:
            return []
        if verdict.breach:
            state.breach_streak += 1
            state.ok_streak = 0
        elif verdict.clear:
            state.ok_streak += 1
            state.breach_streak = 0
        elif state.firing:
            state.ok_streak = 0
        else:
            state.breach_streak = 0
        end = stats.window_end
        if not state.firing and state.breach_streak >= rule.for_windows:
            cooling = state.last_resolved_end is not None and end - state.last_resolved_end < rule.cooldown_ns
            if not cooling:
                state.firing = True
                state.alert_id = _alert_id(key, end)
                state.fired_value = verdict.value
                state.ok_streak = 0
                alert = self._alert(rule, key, state, "firing", end, verdict, _describe(rule, verdict, "firing"))
                state.firing_alert = alert
                return [alert]
        elif state.firing and state.ok_streak >= rule.clear_windows:
            return [self._resolve(rule, key, state, end, verdict, _describe(rule, verdict, "resolved"))]
        return []

    def _judge(self, rule: Rule, state: _KeyState, stats: WindowStats) -> _Verdict | None:
        metric = "error_rate" if isinstance(rule, ErrorRateRule) else rule.metric
        value = metric_value(stats, metric)
        if value is None or stats.count < rule.min_samples:
            return None
        band = 1.0 - rule.hysteresis_pct / 100.0
        if isinstance(rule, ThresholdRule | ErrorRateRule):
            if isinstance(rule, ThresholdRule) and rule.below is not None:
                bound = rule.below
                return _Verdict(value, value < bound, value >= bound / band if band else False, bound, None)
            bound = float(rule.above if rule.above is not None else 0.0)
            return _Verdict(value, value > bound, value <= bound * band, bound, None)
        return self._judge_regression(rule, state, stats, metric, value, band)

    def _judge_regression(
        self,
        rule: RegressionRule | CostRule,
        state: _KeyState,
        stats: WindowStats,
        metric: str,
        value: float,
        band: float,
    ) -> _Verdict | None:
        period_ns = parse_duration_ns(rule.baseline_period)
        history = state.baseline
        while history and history[0][0] < stats.window_end - period_ns:
            history.popleft()
        enough = len(history) >= rule.min_baseline_windows and sum(c for _, _, c in history) >= rule.min_samples
        verdict: _Verdict | None = None
        if enough:
            baseline = statistics.median(v for _, v, _ in history)
            factor = 1.0 + rule.worse_by_pct / 100.0
            clear_factor = 1.0 + rule.worse_by_pct * band / 100.0
            if metric in _LOWER_IS_WORSE:
                bound = baseline / factor
                verdict = _Verdict(value, value <= bound, value > baseline / clear_factor, bound, baseline)
            else:
                bound = baseline * factor
                verdict = _Verdict(value, value >= bound, value < baseline * clear_factor, bound, baseline)
        # The baseline learns only from healthy windows, so a long incident does not become the new normal.
        fresh = not history or stats.window_end > history[-1][0]  # not already seeded
        if fresh and not state.firing and (verdict is None or not verdict.breach):
            history.append((stats.window_end, value, stats.count))
        return verdict

    def _resolve(
        self, rule: Rule, key: StateKey, state: _KeyState, end: int, verdict: _Verdict | None, message: str
    ) -> Alert:
        state.firing = False
        state.firing_alert = None
        state.breach_streak = 0
        state.ok_streak = 0
        state.last_resolved_end = end
        return self._alert(rule, key, state, "resolved", end, verdict, message)

    def _alert(
        self,
        rule: Rule,
        key: StateKey,
        state: _KeyState,
        alert_state: Literal["firing", "resolved"],
        end: int,
        verdict: _Verdict | None,
        message: str,
    ) -> Alert:
        metric = "error_rate" if isinstance(rule, ErrorRateRule) else rule.metric
        threshold = verdict.threshold if verdict is not None else float(getattr(rule, "above", None) or 0.0)
        return Alert(
            alert_id=state.alert_id,
            rule=rule.name,
            severity=rule.severity,
            state=alert_state,
            provider=key[1],
            model=key[2],
            workload=key[3],
            region=key[4] or None,
            window=key[5],
            metric=metric,
            value=None if verdict is None else verdict.value,
            baseline=None if verdict is None else verdict.baseline,
            threshold=threshold,
            window_end=end,
            message=f"{key[1]}/{key[2]} [{_where(key)}]: {message}",
        )

    def _no_data_alert(
        self, rule: Rule, key: StateKey, state: _KeyState, alert_state: Literal["firing", "resolved"], end: int
    ) -> Alert:
        after_s = parse_duration_ns(rule.no_data.after) / 1e9
        verb = "has sent no window for" if alert_state == "firing" else "reports again after silence of over"
        return Alert(
            alert_id=state.no_data_alert_id,
            rule=rule.name,
            severity=rule.severity,
            state=alert_state,
            provider=key[1],
            model=key[2],
            workload=key[3],
            region=key[4] or None,
            window=key[5],
            metric="no_data",
            value=None,
            baseline=None,
            threshold=after_s,
            window_end=end,
            message=f"{key[1]}/{key[2]} [{_where(key)}] {verb} {rule.no_data.after}",
        )

    def baseline_period_ns(self) -> int | None:
        """The longest ``baseline_period`` of the regression and cost rules; ``None`` if there are none."""
        periods = [parse_duration_ns(r.baseline_period) for r in self.rules if isinstance(r, RegressionRule | CostRule)]
        return max(periods) if periods else None

    def seed(self, history: Iterable[WindowStats]) -> int:
        """Warm regression baselines from past windows without alerting; see ``seed_samples``."""
        samples = []
        for stats in history:
            metrics = {}
            for rule in self.rules:
                if isinstance(rule, RegressionRule | CostRule):
                    value = metric_value(stats, rule.metric)
                    if value is not None:
                        metrics[rule.metric] = value
            samples.append(
                BaselineSample(
                    stats.provider,
                    stats.model,
                    stats.workload,
                    stats.window,
                    stats.window_end,
                    stats.count,
                    metrics,
                    stats.region or "",
                )
            )
        return self.seed_samples(samples)

    def seed_samples(self, samples: Iterable[BaselineSample]) -> int:
        """Warm the baselines of regression and cost rules from past windows (e.g. ``llm_window`` read back
        from InfluxDB after a restart), oldest first, without alerting; returns how many values were taken.

        Seeding touches the baselines only, not which windows count as already judged: a window that is
        re-read from Kafka afterwards is still evaluated, and its value is not added to a baseline twice.
        Unlike live windows, seeded ones are taken whether or not they breached (their firing state was
        not kept); the median of a 24 h baseline shrugs off a short incident.
        """
        taken = 0
        for sample in sorted(samples, key=lambda s: s.window_end):
            for rule in self.rules:
                if not isinstance(rule, RegressionRule | CostRule) or not rule.match.matches_key(
                    sample.provider, sample.model, sample.workload, sample.window, sample.region
                ):
                    continue
                value = sample.metrics.get(rule.metric)
                if value is None:
                    continue
                key = (rule.name, sample.provider, sample.model, sample.workload, sample.region, sample.window)
                history = self._states.setdefault(key, _KeyState()).baseline
                if not history or sample.window_end > history[-1][0]:
                    history.append((sample.window_end, value, sample.count))
                    taken += 1
        return taken


@dataclass(frozen=True)
class BaselineSample:
    """One past window of one key: its end, request count and the metric values that were kept."""

    provider: str
    model: str
    workload: str
    window: str
    window_end: int
    count: int
    metrics: dict[str, float]
    region: str = ""


def _where(key: StateKey) -> str:
    return ", ".join(part for part in (key[3], key[4], key[5]) if part)


def _describe(rule: Rule, verdict: _Verdict, state: str) -> str:
    metric = "error_rate" if isinstance(rule, ErrorRateRule) else rule.metric
    if verdict.baseline is not None:
        change = (verdict.value / verdict.baseline - 1.0) * 100.0 if verdict.baseline else float("inf")
        text = f"{metric} {verdict.value:.4g} vs baseline {verdict.baseline:.4g} ({change:+.1f}%)"
    else:
        text = f"{metric} {verdict.value:.4g} (bound {verdict.threshold:.4g})"
    if state == "firing":
        return f"{rule.name} firing ({rule.severity}): {text} for {rule.for_windows} window(s)"
    return f"{rule.name} resolved: {text} for {rule.clear_windows} window(s)"
