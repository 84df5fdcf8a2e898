"""CloudWatch's alarm rules as pure functions: how a metric alarm reads its evaluation range (M out
of N, missing data, "avoiding premature transitions"), when its warm-up ends, and how a composite
alarm's ``AlarmRule`` is parsed and evaluated (CloudWatch user guide, "Configuring how CloudWatch
alarms treat missing data", "Alarm warm-up periods" and "Creating a composite alarm"). The evaluator
(:mod:`.alarms`) applies them on its clock."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from regionha.errors import ConfigurationError

OK, ALARM, INSUFFICIENT_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
EXTRA_RANGE_PERIODS = 2

COMPARISON_OPERATORS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}
_TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")


# --- the evaluation rule ----------------------------------------------------------------------


@dataclass(frozen=True)
class RangeEvaluation:
    state: str
    used: tuple[int, ...]  # indices of the range's periods that were evaluated (real or filled)
    filled: tuple[int, ...]  # the missing periods among them, filled by TreatMissingData
    breaching: int  # how many evaluated datapoints counted as breaching


def evaluate_range(
    range_: Sequence[bool | None],
    evaluation_periods: int,
    datapoints_to_alarm: int,
    treat_missing_data: str,
    current_state: str,
) -> RangeEvaluation:
    """The state for an evaluation range, oldest period first: True breaching, False not, None missing."""
    n, m = evaluation_periods, datapoints_to_alarm
    if treat_missing_data not in _TREATMENTS:
        raise ConfigurationError(f"TreatMissingData must be one of {_TREATMENTS}, got {treat_missing_data!r}")
    if not 1 <= m <= n:
        raise ConfigurationError(f"DatapointsToAlarm {m} must be between 1 and EvaluationPeriods {n}")
    real = [i for i, p in enumerate(range_) if p is not None]
    if len(real) >= n:
        used = tuple(real[-n:])
        b = sum(1 for i in used if range_[i])
        return RangeEvaluation(ALARM if b >= m else OK, used, (), b)
    if not real:
        used = tuple(range(len(range_))[-n:])
        state = {
            "missing": INSUFFICIENT_DATA,
            "ignore": current_state,
            "breaching": ALARM,
            "notBreaching": OK,
        }[treat_missing_data]
        return RangeEvaluation(state, used, used, n if treat_missing_data == "breaching" else 0)
    missing = [i for i, p in enumerate(range_) if p is None]
    filled = tuple(missing[len(missing) - (n - len(real)) :])
    used = tuple(sorted(real + list(filled)))
    b_real = sum(1 for i in real if range_[i])
    if treat_missing_data in ("breaching", "notBreaching"):
        b = b_real + (len(filled) if treat_missing_data == "breaching" else 0)
        return RangeEvaluation(ALARM if b >= m else OK, used, filled, b)
    if b_real >= m:
        return RangeEvaluation(ALARM, used, filled, b_real)
    oldest_breaching_age = max((len(range_) - i for i in real if range_[i]), default=0)
    contradicted = any(not range_[i] for i in real)
    if not contradicted and oldest_breaching_age >= m:
        # The guide's "premature alarm" rule: only missing data after an old enough breach.
        return RangeEvaluation(ALARM if treat_missing_data == "missing" else current_state, used, filled, b_real)
    if not contradicted:
        # Only breaching data, too recent to alarm on: the guide says the alarm "does not go
        # immediately into ALARM"; nothing says OK either, so the state waits for more data.
        return RangeEvaluation(current_state, used, filled, b_real)
    return RangeEvaluation(OK, used, filled, b_real)


# --- warm-up ----------------------------------------------------------------------------------

WARM_UP_MINUTES = (1, 2880)
IN_WARM_UP = "IN_WARM_UP"  # DescribeAlarms' EvaluationState during warm-up (user guide)


@dataclass(frozen=True)
class WarmUp:
    """PutMetricAlarm's ``WarmUpConfiguration`` (user guide, "Alarm warm-up periods")."""

    minutes: int
    only_after_end: bool = False  # OnlyStartEvaluatingAfterWarmUpPeriodEnds

    @classmethod
    def from_api(cls, config: Any) -> WarmUp | None:
        """None when absent; ConfigurationError (CloudWatch's ValidationError) when malformed: the
        duration is required, an integer of 1..2880 minutes, the flag a boolean."""
        if config is None:
            return None
        if not isinstance(config, dict):
            raise ConfigurationError(f"WarmUpConfiguration must be a structure, got {config!r}")
        unknown = sorted(set(config) - {"WarmUpPeriodDurationInMinutes", "OnlyStartEvaluatingAfterWarmUpPeriodEnds"})
        if unknown:
            raise ConfigurationError(f"WarmUpConfiguration: unknown field(s) {', '.join(unknown)}")
        minutes = config.get("WarmUpPeriodDurationInMinutes")
        low, high = WARM_UP_MINUTES
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not low <= minutes <= high:
            raise ConfigurationError(
                f"WarmUpConfiguration.WarmUpPeriodDurationInMinutes must be an integer of {low} to {high}, "
                f"got {minutes!r}")
        flag = config.get("OnlyStartEvaluatingAfterWarmUpPeriodEnds", False)
        if not isinstance(flag, bool):
            raise ConfigurationError(
                f"WarmUpConfiguration.OnlyStartEvaluatingAfterWarmUpPeriodEnds must be a boolean, got {flag!r}")
        return cls(minutes, flag)

    def to_api(self) -> dict[str, Any]:
        return {"WarmUpPeriodDurationInMinutes": self.minutes,
                "OnlyStartEvaluatingAfterWarmUpPeriodEnds": self.only_after_end}

    def ends_at(self, created: datetime) -> datetime:
        return created + timedelta(minutes=self.minutes)


def window_filled(has_data: Sequence[bool], evaluation_periods: int) -> bool:
    """Whether the data fills the evaluation window, for an early end of warm-up.

    ``has_data``: one flag per period of the evaluation range, oldest first; the window is its newest
    ``evaluation_periods`` periods (``Period`` x ``EvaluationPeriods``), the older ones lie before it.
    The user guide: the window "is full when a datapoint exists for the most recent period", and one
    that starts publishing 4 minutes after creation fills its 15-minute window only at about 19
    minutes, i.e. once the whole window lies after the first datapoint. Read on whole periods: the
    newest period holds a datapoint and some period before the window does (the metric was published
    before the window began). Missing periods inside the window do not matter; ``DatapointsToAlarm``
    does not either (the guide says so). At most one period later than CloudWatch, never earlier.
    """
    n = evaluation_periods
    if n < 1 or len(has_data) <= n:
        raise ConfigurationError(f"window_filled needs more than {n} periods, got {len(has_data)}")
    return bool(has_data[-1]) and any(has_data[:-n])


def warm_up_over(warm_up: WarmUp, created: datetime, now: datetime, filled: bool) -> bool:
    """Whether an alarm created at ``created`` with ``warm_up`` evaluates at ``now``: after its whole
    duration always; earlier only once the window is ``filled`` and OnlyStartEvaluatingAfterWarmUpPeriodEnds
    is false (the default)."""
    return now >= warm_up.ends_at(created) or (filled and not warm_up.only_after_end)


# --- composite alarm rules --------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<comma>,)|(?P<str>\"(?:[^\"\\]|\\.)*\")|(?P<word>[^\s()\",]+))")


@dataclass(frozen=True)
class AlarmRule:
    """A parsed composite ``AlarmRule``: ALARM(x)/OK(x)/INSUFFICIENT_DATA(x), AND, OR, NOT, (), TRUE, FALSE.

    Precedence NOT > AND > OR. ``x`` is an alarm name or ARN, quoted or not.
    """

    text: str
    references: tuple[str, ...]
    _fn: Callable[[Callable[[str], str | None]], bool] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> AlarmRule:
        tokens = _tokenize(text)
        refs: list[str] = []
        pos, fn = _parse_or(tokens, 0, refs)
        if pos != len(tokens):
            raise ConfigurationError(f"AlarmRule: unexpected {tokens[pos][1]!r} in {text!r}")
        return cls(text, tuple(refs), fn)

    def evaluate(self, state_of: Callable[[str], str | None]) -> bool:
        """``state_of(name_or_arn)`` returns the child's state, or None when it does not exist."""
        return self._fn(state_of)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConfigurationError(f"AlarmRule: cannot read {text[pos:]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = json.loads(value)
        tokens.append((kind, value))
        pos = m.end()
    return tokens


_Fn = Callable[[Callable[[str], str | None]], bool]


def _parse_or(tokens: list[tuple[str, str]], pos: int, refs: list[str]) -> tuple[int, _Fn]:
    pos, left = _parse_and(tokens, pos, refs)
    while pos < len(tokens) and tokens[pos] == ("word", "OR"):
        pos, right = _parse_and(tokens, pos + 1, refs)
        left = (lambda a, b: lambda s: a(s) or b(s))(left, right)
    return pos, left


def _parse_and(tokens: list[tuple[str, str]], pos: int, refs: list[str]) -> tuple[int, _Fn]:
    pos, left = _parse_not(tokens, pos, refs)
    while pos < len(tokens) and tokens[pos] == ("word", "AND"):
        pos, right = _parse_not(tokens, pos + 1, refs)
        left = (lambda a, b: lambda s: a(s) and b(s))(left, right)
    return pos, left


def _parse_not(tokens: list[tuple[str, str]], pos: int, refs: list[str]) -> tuple[int, _Fn]:
    if pos < len(tokens) and tokens[pos] == ("word", "NOT"):
        pos, inner = _parse_not(tokens, pos + 1, refs)
        return pos, (lambda a: lambda s: not a(s))(inner)
    return _parse_atom(tokens, pos, refs)


def _expect(tokens: list[tuple[str, str]], pos: int, kind: str) -> int:
    if pos >= len(tokens) or tokens[pos][0] != kind:
        got = tokens[pos][1] if pos < len(tokens) else "end of rule"
        raise ConfigurationError(f"AlarmRule: expected {kind!r}, got {got!r}")
    return pos + 1


def _parse_atom(tokens: list[tuple[str, str]], pos: int, refs: list[str]) -> tuple[int, _Fn]:
    if pos >= len(tokens):
        raise ConfigurationError("AlarmRule: unexpected end of rule")
    kind, value = tokens[pos]
    if kind == "lp":
        pos, inner = _parse_or(tokens, pos + 1, refs)
        return _expect(tokens, pos, "rp"), inner
    if kind == "word" and value in ("TRUE", "FALSE"):
        result = value == "TRUE"
        return pos + 1, lambda s: result
    if kind == "word" and value in (ALARM, OK, INSUFFICIENT_DATA):
        pos = _expect(tokens, pos + 1, "lp")
        if pos >= len(tokens) or tokens[pos][0] not in ("str", "word"):
            raise ConfigurationError(f"AlarmRule: {value}() needs an alarm name")
        name = tokens[pos][1]
        refs.append(name)
        pos = _expect(tokens, pos + 1, "rp")
        return pos, (lambda want, ref: lambda s: s(ref) == want)(value, name)
    raise ConfigurationError(f"AlarmRule: unsupported {value!r} (AT_LEAST is not emulated)")
