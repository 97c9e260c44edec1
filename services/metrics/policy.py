"""The indicator policy: SLA targets, scoring weights and alert rules, from settings.

indicators.md makes all three configurable and asks every answer to name the policy
it reflects. The version is the operator's label plus a digest of the content, so a
changed target can never hide behind an unchanged label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from services.metrics.catalog import Indicator, catalog
from services.metrics.clocks import ALWAYS, calendar_content
from services.metrics.domain import DEFAULT_RULES, DEFAULT_SLA, AlertRule, SlaTargets
from services.metrics.schemas import (
    AlertRuleOut,
    CalendarOut,
    PeakHoursOut,
    PolicyOut,
    SlaTargetsOut,
)
from services.metrics.settings import MetricsSettings
from shared.domain.pairwise import PairwiseResult
from shared.domain.peak_hours import DEFAULT_PEAK_HOURS, PeakHours
from shared.domain.scoring import ScoringPolicy

_Key = TypeVar("_Key", bound=str)


@dataclass(frozen=True)
class IndicatorPolicy:
    """Everything a number depends on besides the events."""

    sla: SlaTargets = DEFAULT_SLA
    scoring: ScoringPolicy = field(default_factory=ScoringPolicy)
    alert_rules: tuple[AlertRule, ...] = DEFAULT_RULES
    label: str = "indicators.md"
    # The judgements the weights came from; None when they were given directly.
    pairwise: PairwiseResult | None = None
    # When the `period=peak|offpeak` slice's peak is.
    peak_hours: PeakHours = DEFAULT_PEAK_HOURS

    @cached_property
    def catalog(self) -> dict[str, Indicator]:
        """Every indicator's SQL under these SLA targets."""
        return catalog(self.sla)

    @cached_property
    def version(self) -> str:
        """`label@digest`: the digest changes with any target, weight or rule."""
        content: dict[str, Any] = {
            "sla": {
                "accept": _floats(self.sla.accept),
                "arrive": _floats(self.sla.arrive),
                "eta_kept_s": float(self.sla.eta_kept_s),
            },
            "weights": _floats(self.scoring.weights),
            "dimension_weights": _floats(self.scoring.dimension_weights),
            "level_scores": [float(s) for s in self.scoring.level_scores],
            "min_samples": self.scoring.min_samples,
            "alert_rules": [_rule_content(rule) for rule in self.alert_rules],
        }
        # Only when not the defaults (24x7, no pause), so the default digest stays.
        if calendars := self.sla.business_calendars():
            content["sla"]["calendars"] = {
                urgency: calendar_content(calendar)
                for urgency, calendar in calendars.items()
            }
        if self.sla.pause_while_quoted:
            content["sla"]["pause_while_quoted"] = True
        if self.pairwise is not None:
            # Only when present, so directly given weights keep their digest; a
            # changed judgement changes the version even if the weights round alike.
            content["pairwise"] = self.pairwise.matrix
        if self.peak_hours != DEFAULT_PEAK_HOURS:
            # Likewise only when changed: the default keeps the digests it had.
            content["peak_hours"] = _peak_content(self.peak_hours)
        digest = hashlib.sha256(
            json.dumps(content, sort_keys=True, default=str).encode()
        ).hexdigest()
        return f"{self.label}@{digest[:12]}"


def _floats(numbers: Mapping[_Key, float]) -> dict[str, float]:
    # 15 and 15.0 are the same target and must give the same digest.
    return {str(key): float(value) for key, value in numbers.items()}


def _peak_content(peak: PeakHours) -> dict[str, Any]:
    return {
        "time_zone": peak.time_zone,
        "weekdays": peak.range_texts(),
        "weekend_days": peak.day_names(),
    }


def _rule_content(rule: AlertRule) -> dict[str, Any]:
    content = asdict(rule)
    if rule.compare_period is None:
        del content["compare_period"]  # a plain rule keeps the digest it had
    content["window"] = rule.window.total_seconds()
    content["threshold"] = float(rule.threshold)
    return content


def policy_from(settings: MetricsSettings) -> IndicatorPolicy:
    """The policy the settings describe (validated by MetricsSettings)."""
    pairwise = settings.pairwise()
    weights = settings.score_weights if pairwise is None else pairwise.weights
    return IndicatorPolicy(
        sla=SlaTargets(
            accept={str(k): v for k, v in settings.sla_accept_minutes.items()},
            arrive={str(k): v for k, v in settings.sla_arrive_minutes.items()},
            eta_kept_s=settings.eta_kept_tolerance_s,
            calendars={
                str(urgency): calendar.calendar()
                for urgency, calendar in settings.sla_calendars.items()
            },
            pause_while_quoted=settings.sla_pause_while_quoted,
        ),
        scoring=ScoringPolicy(
            weights=weights,
            dimension_weights=settings.dimension_weights,
            min_samples=settings.score_min_samples,
        ),
        alert_rules=tuple(
            AlertRule(
                rule.name,
                rule.indicator,
                rule.statistic,
                rule.scope,
                rule.window,
                above=rule.above,
                threshold=rule.threshold,
                min_samples=rule.min_samples,
                compare_period=rule.compare_period,
            )
            for rule in settings.alert_rules
        ),
        label=settings.indicator_policy_label,
        pairwise=pairwise,
        peak_hours=settings.peak_hours.peak_hours(),
    )


def policy_out(policy: IndicatorPolicy) -> PolicyOut:
    """What GET /v1/policy shows of a policy."""
    pairwise = policy.pairwise
    return PolicyOut(
        policy_version=policy.version,
        sla=SlaTargetsOut(
            accept_minutes=_floats(policy.sla.accept),
            arrive_minutes=_floats(policy.sla.arrive),
            eta_kept_tolerance_s=policy.sla.eta_kept_s,
        ),
        weights=_floats(policy.scoring.weights),
        dimension_weights=_floats(policy.scoring.dimension_weights),
        score_min_samples=policy.scoring.min_samples,
        pairwise_matrix=None
        if pairwise is None
        else [list(row) for row in pairwise.matrix],
        lambda_max=None if pairwise is None else pairwise.lambda_max,
        consistency_index=None if pairwise is None else pairwise.consistency_index,
        consistency_ratio=None if pairwise is None else pairwise.consistency_ratio,
        alert_rules=[AlertRuleOut(**asdict(rule)) for rule in policy.alert_rules],
        sla_calendars={
            str(urgency): CalendarOut(
                **calendar_content(policy.sla.calendars.get(urgency, ALWAYS))
            )
            for urgency in sorted({*policy.sla.accept, *policy.sla.arrive})
        },
        sla_pause_while_quoted=policy.sla.pause_while_quoted,
        peak_hours=PeakHoursOut(**_peak_content(policy.peak_hours)),
    )
