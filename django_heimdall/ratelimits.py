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
                f"{value!r} is not a rate; write it as calls per period, such as 10/m or 2/60s"
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


def is_single_rate(value: Any) -> bool:
    """``value`` is one rate (``"10/m"``, ``Rate``, ``(times, per)``), not a list of them."""
    if isinstance(value, (str, Rate)):
        return True
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def parse_rates(value: Any) -> tuple[Rate, ...]:
    """One rate or a non-empty list of rates, as a tuple of ``Rate``."""
    if is_single_rate(value):
        return (parse_rate(value),)
    if isinstance(value, (tuple, list)) and value:
        return tuple(parse_rate(item) for item in value)
    raise ValueError(
        f"{value!r} is not a rate; give (times, per_seconds), a string like '10/m', "
        "or a list of those"
    )


class _Dynamic(NamedTuple):
    func: Callable[..., Any]
    params: tuple[str, ...]


class RateLimit:
    """A global rate limit, or several that all hold at once.

    ``RateLimit((times, per_seconds))``, ``RateLimit("10/m")``, ``RateLimit(callable)``
    or a list of those: ``RateLimit(["10/s", "1000/d"])``.

    A callable is called at every task start with any of ``key``, ``task``, ``args``
    and ``kwargs`` that it names as parameters, and returns a rate or a list of
    rates in the forms above (or a ``RateLimit``), so a limit can change at run time.
    """

    __slots__ = ("_parts",)

    def __init__(self, rate: Any):
        if isinstance(rate, RateLimit):
            self._parts: tuple[Rate | _Dynamic, ...] = rate._parts
        elif is_single_rate(rate) or _is_callable(rate):
            self._parts = (_part(rate),)
        elif isinstance(rate, (tuple, list)) and rate:
            parts: list[Rate | _Dynamic] = []
            for item in rate:
                parts += RateLimit(item)._parts if isinstance(item, RateLimit) else [_part(item)]
            self._parts = tuple(parts)
        else:
            raise ValueError(
                f"{rate!r} is not a rate; give (times, per_seconds), a string like '10/m', "
                "a callable, or a list of those"
            )

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(part, _Dynamic) for part in self._parts)

    def rates(self, *, key: str, task: Any, args: Any, kwargs: Any) -> tuple[Rate, ...]:
        """Every rate that applies to this call (callables are called)."""
        available = {"key": key, "task": task, "args": args, "kwargs": kwargs}
        rates: list[Rate] = []
        for part in self._parts:
            if isinstance(part, Rate):
                rates.append(part)
            else:
                given = part.func(**{name: available[name] for name in part.params})
                single = is_single_rate(given) or isinstance(given, RateLimit)
                items = [given] if single else given
                if not isinstance(items, (tuple, list)) or not items:
                    parse_rates(given)  # raises the error that says what to give
                for item in items:
                    if isinstance(item, RateLimit):
                        rates += item.rates(**available)
                    else:
                        rates.append(parse_rate(item))
        return tuple(rates)

    def resolve(self, *, key: str, task: Any, args: Any, kwargs: Any) -> Rate:
        """The rate that applies to this call (the first, when there are several)."""
        return self.rates(key=key, task=task, args=args, kwargs=kwargs)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RateLimit) and self._parts == other._parts

    def __hash__(self) -> int:
        return hash(self._parts)

    def __repr__(self) -> str:
        shown = [
            tuple(part) if isinstance(part, Rate) else _name(part.func) for part in self._parts
        ]
        return f"RateLimit({shown[0] if len(shown) == 1 else shown!r})"

    def __str__(self) -> str:
        return ", ".join(
            str(part) if isinstance(part, Rate) else f"{_dotted(part.func)}()"
            for part in self._parts
        )


def _is_callable(value: Any) -> bool:
    return callable(value) and not isinstance(value, (tuple, list, str))


def _part(value: Any) -> Rate | _Dynamic:
    if _is_callable(value):
        return _Dynamic(value, _callable_params(value))
    return parse_rate(value)


def _name(func: Any) -> Any:
    return getattr(func, "__qualname__", func)


def _dotted(func: Any) -> str:
    return f"{getattr(func, '__module__', '?')}.{_name(func)}"


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
