"""EventBridge schedule expressions: ``rate(...)`` and six-field ``cron(...)``, parsed and stepped as
EventBridge reads them (Amazon EventBridge user guide, "Schedule expressions for rules")."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from regionha.errors import ConfigurationError

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {d: i + 1 for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


@dataclass(frozen=True)
class Rate:
    seconds: int

    def next_after(self, t: datetime, anchor: datetime) -> datetime | None:
        """The first firing strictly after ``t`` of a rate that started at ``anchor``."""
        elapsed = (t - anchor).total_seconds()
        n = int(elapsed // self.seconds) + 1
        return anchor + timedelta(seconds=n * self.seconds)


@dataclass(frozen=True)
class _CronField:
    values: frozenset[int] | None  # None: any ("*" or "?")
    last: bool = False  # day-of-month "L"
    nth: tuple[int, int] | None = None  # day-of-week "d#n"
    last_weekday: int | None = None  # day-of-week "dL"


@dataclass(frozen=True)
class Cron:
    """AWS's six-field cron (minutes hours day-of-month month day-of-week year), in UTC.

    Day-of-week counts 1 = SUN .. 7 = SAT. ``L`` (day-of-month), ``dL`` and ``d#n``
    (day-of-week) are supported; ``W`` is not (it raises ``ConfigurationError``).
    """

    minutes: _CronField
    hours: _CronField
    dom: _CronField
    months: _CronField
    dow: _CronField
    years: _CronField

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = text.split()
        if len(fields) != 6:
            raise ConfigurationError(f"cron({text}) must have 6 fields, has {len(fields)}")
        minute, hour, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise ConfigurationError(f"cron({text}): exactly one of day-of-month and day-of-week must be '?'")
        return cls(
            minutes=_parse_field(minute, 0, 59, {}),
            hours=_parse_field(hour, 0, 23, {}),
            dom=_parse_field(dom, 1, 31, {}, allow_last=True),
            months=_parse_field(month, 1, 12, _MONTHS),
            dow=_parse_field(dow, 1, 7, _DAYS, allow_weekday_forms=True),
            years=_parse_field(year, 1970, 2199, {}),
        )

    def _day_matches(self, d: datetime) -> bool:
        days_in_month = calendar.monthrange(d.year, d.month)[1]
        if self.dom.values is not None or self.dom.last:
            return (self.dom.last and d.day == days_in_month) or (
                self.dom.values is not None and d.day in self.dom.values
            )
        aws_dow = (d.weekday() + 1) % 7 + 1
        f = self.dow
        if f.nth is not None:
            return aws_dow == f.nth[0] and (d.day - 1) // 7 + 1 == f.nth[1]
        if f.last_weekday is not None:
            return aws_dow == f.last_weekday and d.day + 7 > days_in_month
        return f.values is None or aws_dow in f.values

    def next_after(self, t: datetime, anchor: datetime) -> datetime | None:
        """The first matching minute strictly after ``t``; None when the year field runs out."""
        c = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = c + timedelta(days=366 * 5)
        while c < limit:
            if not _in(self.years, c.year):
                if self.years.values and c.year > max(self.years.values):
                    return None
                c = c.replace(year=c.year + 1, month=1, day=1, hour=0, minute=0)
            elif not _in(self.months, c.month) or not self._day_matches(c):
                c = (c + timedelta(days=1)).replace(hour=0, minute=0)
            elif not _in(self.hours, c.hour):
                c = (c + timedelta(hours=1)).replace(minute=0)
            elif not _in(self.minutes, c.minute):
                c += timedelta(minutes=1)
            else:
                return c
        return None


def _in(f: _CronField, v: int) -> bool:
    return f.values is None or v in f.values


def _parse_field(
    text: str,
    lo: int,
    hi: int,
    names: dict[str, int],
    allow_last: bool = False,
    allow_weekday_forms: bool = False,
) -> _CronField:
    if text in ("*", "?"):
        return _CronField(None)
    if allow_last and text == "L":
        return _CronField(frozenset(), last=True)
    if allow_weekday_forms and "#" in text:
        day, n = text.split("#", 1)
        return _CronField(frozenset(), nth=(_value(day, lo, hi, names), int(n)))
    if allow_weekday_forms and text.endswith("L") and len(text) > 1:
        return _CronField(frozenset(), last_weekday=_value(text[:-1], lo, hi, names))
    if "W" in text and text.upper() not in names:
        raise ConfigurationError(f"cron field {text!r}: 'W' is not supported by the local runtime")
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part == "*":
            start, end = lo, hi
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, lo, hi, names), _value(b, lo, hi, names)
        else:
            start = _value(part, lo, hi, names)
            end = hi if step != 1 else start
        values.update(range(start, end + 1, step))
    return _CronField(frozenset(values))


def _value(text: str, lo: int, hi: int, names: dict[str, int]) -> int:
    v = names[text.upper()] if text.upper() in names else int(text)
    if not lo <= v <= hi:
        raise ConfigurationError(f"cron value {text!r} outside {lo}-{hi}")
    return v


def parse_schedule(expression: str) -> Rate | Cron:
    """``rate(N minute|minutes|hour|hours|day|days)`` or ``cron(<6 fields>)``."""
    expression = expression.strip()
    if m := _RATE.match(expression):
        n = int(m.group(1))
        if n <= 0:
            raise ConfigurationError(f"{expression}: the rate must be positive")
        return Rate(n * _UNIT_SECONDS[m.group(2).rstrip("s")])
    if m := _CRON.match(expression):
        return Cron.parse(m.group(1))
    raise ConfigurationError(f"unsupported schedule expression {expression!r}")
