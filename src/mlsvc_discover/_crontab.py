"""Standard crontab expressions as APScheduler 3.x triggers.

A leaf module: config validation and the daemon's scheduler build triggers the same way,
without the config module importing the daemon.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cron_trigger", "crontab_weekdays"]

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday(token: str) -> int:
    """A crontab day-of-week token as 0..7 (0 and 7 are Sunday), numbers or names."""
    name = token.strip().lower()[:3]
    if name in _WEEKDAYS:
        return _WEEKDAYS.index(name)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    raise ValueError(f"{token!r} is not a day of the week (0-7 or sun-sat)")


def crontab_weekdays(field: str) -> str:
    """The day-of-week field of a standard crontab as APScheduler 3.x reads it correctly.

    APScheduler 3.x numbers weekdays from Monday (0) while crontab numbers them from Sunday
    (0 or 7), so ``from_crontab("0 9 * * 1-5")`` would run Tuesday to Saturday. Day names mean
    the same to both, so every number, range and step is spelled out as a list of names.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text!r} in {field!r} must be at least 1")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            a, b = span.split("-", 1)
            first, last = _weekday(a), _weekday(b)
        else:
            first = _weekday(span)
            last = 6 if step_text else first  # "1/2" means from Monday to the end of the week
        if last < first:
            raise ValueError(f"range {span!r} in {field!r} runs backwards")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def cron_trigger(expr: str, *, jitter: float | None = None) -> Any:
    """An APScheduler CronTrigger for a standard 5-field crontab expression (Sunday is 0 or 7)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r} has {len(fields)} fields; a crontab expression has 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_weekdays(weekday), jitter=jitter
    )
