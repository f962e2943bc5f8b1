"""Global rate limits: the ``RateLimit`` option value and the rate-string parser."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_CALLABLE_PARAMS = ("key", "task", "args", "kwargs")


class Rate(NamedTuple):
    """``times`` task starts per ``per`` seconds."""

    times: int
    per: float

    def __str__(self) -> str:
        per = int(self.per) if float(self.per).is_integer() else self.per
        return f"{self.times}/{per}s"


def parse_rate(value: Any) -> Rate:
    """Turn ``"10/m"``, ``"2/60s"``, ``(2, 60)`` or a ``Rate`` into a ``Rate``.

    Raises ``ValueError`` with a message fit for a user.
    """
    if isinstance(value, Rate):
        times, per = value
    elif isinstance(value, str):
        match = _RATE_RE.match(value)
        unit = match and match.group(3).lower()
        if not match or unit not in _UNITS or (match.group(2) is None and not unit):
            raise ValueError(
                f"{value!r} is not a rate; write it as 'times/period', e.g. '10/m' or '2/60s'"
            )
        times = int(match.group(1))
        per = float(match.group(2) or 1) * _UNITS[unit]
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        times, per = value
    else:
        raise ValueError(
            f"{value!r} is not a rate; give (times, per_seconds) or a string like '10/m'"
        )
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be a positive integer, not {times!r}")
    if (
        isinstance(per, bool)
        or not isinstance(per, (int, float))
        or not per > 0
        or not math.isfinite(per)
    ):
        raise ValueError(f"per must be a positive number of seconds, not {per!r}")
    return Rate(times, float(per))


class RateLimit:
    """A global rate limit: ``RateLimit((times, per_seconds))``, ``RateLimit("10/m")``
    or ``RateLimit(callable)``.

    A callable is called at every task start with any of ``key``, ``task``, ``args``
    and ``kwargs`` that it names as parameters, and returns a rate in one of the
    forms above, so a limit can change at run time.
    """

    __slots__ = ("_fixed", "_func", "_params")

    def __init__(self, rate: Any):
        if isinstance(rate, RateLimit):
            self._fixed, self._func, self._params = rate._fixed, rate._func, rate._params
        elif callable(rate) and not isinstance(rate, (tuple, list, str)):
            self._fixed = None
            self._func: Callable[..., Any] | None = rate
            self._params = _callable_params(rate)
        else:
            self._fixed = parse_rate(rate)
            self._func = None
            self._params = ()

    @property
    def is_dynamic(self) -> bool:
        return self._func is not None

    def resolve(self, *, key: str, task: Any, args: Any, kwargs: Any) -> Rate:
        """The rate that applies to this call."""
        if self._fixed is not None:
            return self._fixed
        available = {"key": key, "task": task, "args": args, "kwargs": kwargs}
        return parse_rate(self._func(**{name: available[name] for name in self._params}))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RateLimit)
            and self._fixed == other._fixed
            and self._func == other._func
        )

    def __hash__(self) -> int:
        return hash((self._fixed, self._func))

    def __repr__(self) -> str:
        if self._fixed is not None:
            return f"RateLimit({tuple(self._fixed)!r})"
        return f"RateLimit({getattr(self._func, '__qualname__', self._func)!r})"

    def __str__(self) -> str:
        if self._fixed is not None:
            return str(self._fixed)
        func = self._func
        return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}()"


def _callable_params(func: Callable[..., Any]) -> tuple[str, ...]:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return ()
    if any(p.kind is p.POSITIONAL_ONLY for p in params):
        raise ValueError(
            f"a rate-limit callable receives {', '.join(_CALLABLE_PARAMS)} by name; "
            f"{getattr(func, '__qualname__', func)} has positional-only parameters"
        )
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return _CALLABLE_PARAMS
    unknown = [
        p.name
        for p in params
        if p.name not in _CALLABLE_PARAMS
        and p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL,)
    ]
    if unknown:
        raise ValueError(
            f"a rate-limit callable may only take {', '.join(_CALLABLE_PARAMS)}; "
            f"{getattr(func, '__qualname__', func)} also needs {', '.join(unknown)}"
        )
    return tuple(p.name for p in params if p.name in _CALLABLE_PARAMS)
