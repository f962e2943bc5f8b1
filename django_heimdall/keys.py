"""Canonical identities of task calls: the part of a lock or rate key that
names *which* call it is (the store adds its prefix and namespace).

Arguments are bound to the task's signature with defaults applied, so
``f(1)``, ``f(x=1)`` and ``f(x=1, y=<default>)`` share one identity. The
encoding survives Celery's JSON round trip (tuples become lists, dict keys
become strings, ``datetime``/``UUID``/``Decimal`` come back as themselves), so
the identity computed at enqueue equals the one the worker computes.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import inspect
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .policies import Policy

PREVIEW_CHARS = 200
_signatures: dict[str, tuple[Any, inspect.Signature | None]] = {}


class Identity(NamedTuple):
    """``lock`` names one call for uniqueness; ``rate`` the bucket it counts against."""

    lock: str
    rate: str
    preview: str


def _signature(task: Any) -> inspect.Signature | None:
    run = task.run
    func = getattr(run, "__func__", run)
    cached = _signatures.get(task.name)
    if cached is not None and cached[0] is func:
        return cached[1]
    try:
        sig = inspect.signature(run)
    except (TypeError, ValueError):
        sig = None
    _signatures[task.name] = (func, sig)
    return sig


_positional: dict[int, tuple[inspect.Signature, Any]] = {}


def _bind_positional(sig: inspect.Signature, args: Sequence[Any]) -> dict | None:
    """``sig.bind(*args)`` with defaults applied, for the common call with only
    positional arguments to a plain signature; ``None`` when it does not apply."""
    cached = _positional.get(id(sig))
    if cached is not None and cached[0] is sig:
        shape = cached[1]
    else:
        params = list(sig.parameters.values())
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        shape = (
            (
                tuple(p.name for p in params),
                {p.name: p.default for p in params if p.default is not p.empty},
            )
            if plain
            else None
        )
        _positional[id(sig)] = (sig, shape)
    if shape is None:
        return None
    names, defaults = shape
    if len(args) > len(names) or any(n not in defaults for n in names[len(args) :]):
        return None
    return {**dict(zip(names, args, strict=False)), **{n: defaults[n] for n in names[len(args) :]}}


def bind_arguments(task: Any, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> dict:
    """Map the call's arguments to parameter names, defaults applied.

    Raises ``TypeError`` (as the task itself would) when they do not fit, unless the
    task was declared with ``typing=False``.
    """
    args = args or ()
    kwargs = kwargs or {}
    sig = _signature(task)
    if sig is not None and not kwargs:
        fast = _bind_positional(sig, args)
        if fast is not None:
            return fast
    if sig is not None:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            if getattr(task, "typing", True):
                raise
        else:
            bound.apply_defaults()
            return bound.arguments
    return {"*args": list(args), "**kwargs": dict(kwargs)}


def _tagged(value: Any) -> Any:
    # Tag non-JSON types so that, e.g., a UUID and its string form differ.
    if isinstance(value, datetime.datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"__date__": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"__time__": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"__uuid__": str(value)}
    if isinstance(value, decimal.Decimal):
        return {"__decimal__": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets have no stable order; pass a sorted list")
    raise TypeError(f"objects of type {type(value).__name__} cannot be part of a unique key")


def canonical(arguments: Mapping[str, Any]) -> str:
    """A stable JSON text for bound arguments (``1`` and ``"1"`` differ)."""
    try:
        return json.dumps(
            arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_tagged
        )
    except TypeError as exc:
        raise TypeError(
            f"django-heimdall cannot build a unique key from these arguments ({exc}); "
            "give the task a 'key' or 'unique_on' option"
        ) from None


def _pick(task: Any, arguments: dict, names: tuple[str, ...]) -> dict:
    """The ``unique_on`` subset of bound arguments; a name caught by ``**kwargs``
    is looked up there (absent: ``None``)."""
    sig = _signature(task)
    extra_name = next(
        (p.name for p in (sig.parameters.values() if sig else ()) if p.kind is p.VAR_KEYWORD),
        None,
    )
    extra = arguments.get(extra_name, {}) if extra_name else {}
    picked = {}
    for name in names:
        if name in arguments:
            picked[name] = arguments[name]
        elif extra_name is not None:
            picked[name] = extra.get(name)
        else:
            raise TypeError(
                f"unique_on of task {task.name!r} names {name}, which the task does not take"
            )
    return picked


def _call_key(task: Any, key: Any, args: Any, kwargs: Any) -> Any:
    """Call a key function: ``key(args, kwargs)``, or with the task's bound
    arguments by name (``lambda customer_id, **_: ...``)."""
    try:
        params = inspect.signature(key).parameters
    except (TypeError, ValueError):
        params = {}
    sig = _signature(task)
    named = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    by_name = sig is not None and bool(params) and all(n in sig.parameters for n in named)
    if not by_name:
        return key(list(args or ()), dict(kwargs or {}))
    arguments = bind_arguments(task, args, kwargs)
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        arguments = {name: value for name, value in arguments.items() if name in params}
    return key(**arguments)


def identity(task: Any, policy: Policy, args: Any, kwargs: Any) -> Identity:
    """The identity of one call of ``task`` under ``policy``; the lock's starts with
    the policy's ``lock_prefix``."""
    ident = _identity(task, policy, args, kwargs)
    prefix = getattr(policy, "lock_prefix", "")
    return ident._replace(lock=prefix + ident.lock) if prefix else ident


def _identity(task: Any, policy: Policy, args: Any, kwargs: Any) -> Identity:
    key = policy.key
    if key is not None:
        if callable(key):
            key = _call_key(task, key, args, kwargs)
            if not isinstance(key, str) or not key:
                raise TypeError(
                    f"the 'key' function of task {task.name!r} must return a non-empty str, "
                    f"not {key!r}"
                )
        return Identity(lock=key, rate=key, preview=key[:PREVIEW_CHARS])
    if not policy.unique:
        # Only rate-limited: one global bucket per task, no need to encode arguments.
        return Identity(lock=task.name, rate=task.name, preview="")
    arguments = bind_arguments(task, args, kwargs)
    if policy.unique_on is not None:
        arguments = _pick(task, arguments, policy.unique_on)
    text = canonical(arguments)
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
    return Identity(lock=f"{task.name}:{digest}", rate=task.name, preview=text[:PREVIEW_CHARS])
