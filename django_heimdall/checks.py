"""System checks for ``settings.HEIMDALL`` and for the options of every task.

Ids: E001 not a dict · E002 unknown setting · E003 unknown cache alias ·
E004 cache is not django-redis · E005 invalid setting value · E006 unknown option ·
E007 invalid option value · E008 unimportable dotted path · E009 ``unique_on``
names a missing argument · E011 invalid ``RESOURCES`` · E012 option ``resources``
names an undeclared resource (or more tickets than its capacity) ·
W001 ``TASKS`` names an unregistered task ·
W002 ``TASKS`` names a task that is not a ``HeimdallTask`` ·
W003 ``CACHE`` is the alias Django's ``cache`` uses · W005 the override table is
missing (database check; a warning, so that ``migrate`` itself still runs) ·
W010 a ``HeimdallTask`` still carries celery-once's or celery-singleton's options ·
W004 ``BEAT_LEASE`` is not longer than beat's loop interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from .conf import DEFAULTS, FAIL_CLOSED, FAIL_OPEN, heimdall_settings, resource_capacities
from .options import OptionError, parse_option, parse_options, signature_errors

_importing = False


def _is_django_redis(backend: Any) -> bool:
    from django_redis.cache import RedisCache

    try:
        cls = import_string(backend)
    except (ImportError, TypeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, RedisCache)


def _error(check_id: str, msg: str, hint: str, obj: Any = None) -> checks.CheckMessage:
    level = checks.Warning if check_id.split(".")[1].startswith("W") else checks.Error
    return level(msg, hint=hint, obj=obj, id=check_id)


def _check_options(options: Any, where: str, *, dotted_paths: bool) -> list[checks.CheckMessage]:
    if not isinstance(options, Mapping):
        return [
            _error(
                "heimdall.E007",
                f"{where} must be a dict of options, not {options!r}.",
                "Give a dict such as {'unique': True}.",
            )
        ]
    errors = []
    for name, value in options.items():
        try:
            parse_option(name, value, dotted_paths=dotted_paths)
        except OptionError as exc:
            errors.append(
                _error(exc.check_id, f"{where}, option {name!r}: {exc.message}", exc.hint)
            )
    if not errors:
        try:
            parse_options(options, dotted_paths=dotted_paths)  # options given together
        except OptionError as exc:
            errors.append(
                _error(exc.check_id, f"{where}, option {exc.option!r}: {exc.message}", exc.hint)
            )
    return errors


def _positive(value: Any, allow_zero: bool = False) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate ``settings.HEIMDALL`` and the cache alias it names."""
    raw = heimdall_settings.raw
    if not isinstance(raw, dict):
        return [
            _error(
                "heimdall.E001",
                f"HEIMDALL must be a dict, not {type(raw).__name__}.",
                "Define HEIMDALL = {'CACHE': 'default', ...} in your settings.",
            )
        ]
    errors = [
        _error(
            "heimdall.E002",
            f"HEIMDALL[{key!r}] is not a django-heimdall setting.",
            f"Valid settings: {', '.join(DEFAULTS)}.",
        )
        for key in raw
        if key not in DEFAULTS
    ]
    values = {**DEFAULTS, **raw}

    alias = values["CACHE"]
    caches = getattr(settings, "CACHES", {})
    if not isinstance(alias, str):
        errors.append(
            _error(
                "heimdall.E005",
                f"HEIMDALL['CACHE'] must be an alias name, not {alias!r}.",
                "Name a django-redis cache of CACHES, e.g. 'default'.",
            )
        )
    elif alias not in caches:
        errors.append(
            _error(
                "heimdall.E003",
                f"HEIMDALL['CACHE'] names cache alias {alias!r}, which is not in CACHES.",
                f"Add a django-redis cache {alias!r} to CACHES or name an existing one.",
            )
        )
    elif not _is_django_redis(caches[alias].get("BACKEND")):
        errors.append(
            _error(
                "heimdall.E004",
                f"Cache alias {alias!r} uses {caches[alias].get('BACKEND')!r}, not django-redis.",
                "Set its BACKEND to 'django_redis.cache.RedisCache'.",
            )
        )

    if alias == "default":
        errors.append(
            _error(
                "heimdall.W003",
                "HEIMDALL['CACHE'] is 'default', the cache Django's `cache` uses: a "
                "cache.clear() there is FLUSHDB and wipes every lock and rate window.",
                "Add a second django-redis alias (another database or server) for "
                "django-heimdall and name it in HEIMDALL['CACHE'].",
            )
        )

    prefix = values["KEY_PREFIX"]
    if not isinstance(prefix, str) or not prefix or any(c.isspace() or c in "{}" for c in prefix):
        errors.append(
            _error(
                "heimdall.E005",
                f"HEIMDALL['KEY_PREFIX'] is invalid: {prefix!r}.",
                "Use a non-empty string without spaces or braces, e.g. 'heimdall'.",
            )
        )
    if values["ON_REDIS_ERROR"] not in (FAIL_CLOSED, FAIL_OPEN):
        errors.append(
            _error(
                "heimdall.E005",
                f"HEIMDALL['ON_REDIS_ERROR'] is {values['ON_REDIS_ERROR']!r}.",
                f"Use {FAIL_CLOSED!r} (the default) or {FAIL_OPEN!r}.",
            )
        )
    for name, allow_zero in (
        ("DEFER_MAX_COUNTDOWN", False),
        ("DEFER_JITTER", True),
        ("UNAVAILABLE_COUNTDOWN", False),
        ("OVERRIDES_REFRESH", False),
        ("BEAT_LEASE", False),
    ):
        if not _positive(values[name], allow_zero):
            errors.append(
                _error(
                    "heimdall.E005",
                    f"HEIMDALL[{name!r}] is {values[name]!r}.",
                    "Give a number of seconds, 0 or more."
                    if allow_zero
                    else "Give a positive number of seconds.",
                )
            )

    errors += _check_resources(values["RESOURCES"])

    if not isinstance(values["DEFAULTS"], Mapping):
        errors.append(
            _error(
                "heimdall.E005",
                f"HEIMDALL['DEFAULTS'] must be a dict, not {values['DEFAULTS']!r}.",
                "Give option defaults such as {'unique_timeout': 600}.",
            )
        )
    else:
        defaults = dict(values["DEFAULTS"])
        if "unique_on" in defaults:
            del defaults["unique_on"]  # the other defaults are still checked
            errors.append(
                _error(
                    "heimdall.E007",
                    "HEIMDALL['DEFAULTS'], option 'unique_on': argument names differ "
                    "between tasks, so they cannot have a default.",
                    "Set 'unique_on' per task, in HEIMDALL['TASKS'] or on the decorator.",
                )
            )
        errors += _check_options(defaults, "HEIMDALL['DEFAULTS']", dotted_paths=True)
    tasks = values["TASKS"]
    if not isinstance(tasks, dict):
        errors.append(
            _error(
                "heimdall.E005",
                f"HEIMDALL['TASKS'] must be a dict, not {tasks!r}.",
                "Map registered task names to option dicts.",
            )
        )
    else:
        for name, options in tasks.items():
            errors += _check_options(
                options, f"Task {name!r} (HEIMDALL['TASKS'])", dotted_paths=True
            )
    return errors


def _check_resources(resources: Any) -> list[checks.CheckMessage]:
    hint = "Declare each as {'name': {'capacity': N}} with a whole N >= 1."
    if not isinstance(resources, Mapping):
        return [
            _error(
                "heimdall.E011",
                f"HEIMDALL['RESOURCES'] must be a dict, not {resources!r}.",
                "Give e.g. {'storage': {'capacity': 10}, 'import-data': {'capacity': 1}}.",
            )
        ]
    errors = []
    for name, spec in resources.items():
        if not isinstance(name, str) or not name:
            errors.append(
                _error(
                    "heimdall.E011", f"HEIMDALL['RESOURCES'] has an invalid name {name!r}.", hint
                )
            )
        elif not isinstance(spec, Mapping) or set(spec) != {"capacity"}:
            errors.append(
                _error(
                    "heimdall.E011",
                    f"HEIMDALL['RESOURCES'][{name!r}] must be {{'capacity': N}}, not {spec!r}.",
                    hint,
                )
            )
        elif not resource_capacities({name: dict(spec)}):
            errors.append(
                _error(
                    "heimdall.E011",
                    f"HEIMDALL['RESOURCES'][{name!r}]['capacity'] is {spec['capacity']!r}.",
                    hint,
                )
            )
    return errors


@checks.register()
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate the decorator options of every ``HeimdallTask`` of the Celery app."""
    from celery import current_app

    from .task import HeimdallTask

    global _importing
    if _importing:
        # Celery's Django fixup runs the system checks while importing task modules.
        return []
    # Import the project's task modules the way a worker does (autodiscovery is lazy).
    _importing = True
    try:
        current_app.loader.import_default_modules()
    finally:
        _importing = False
    registered = current_app.tasks
    errors: list[checks.CheckMessage] = []
    tasks = heimdall_settings.TASKS if isinstance(heimdall_settings.raw, dict) else {}
    tasks = tasks if isinstance(tasks, dict) else {}
    for name, task in sorted(registered.items()):
        if not isinstance(task, HeimdallTask):
            continue
        if task.heimdall is not None:
            errors += _check_options(
                task.heimdall, f"Task {name!r} (heimdall={{...}})", dotted_paths=False
            )
        errors += _check_unique_on(name, task, tasks.get(name))
        errors += _check_peer_leftovers(name, task)
    errors += [
        _error(
            "heimdall.W002",
            f"HEIMDALL['TASKS'] configures {name!r}, whose base class is not HeimdallTask: "
            "the policy has no effect.",
            "Declare the task with base=HeimdallTask (or set the Celery app's task_cls).",
        )
        for name in tasks
        if name in registered and not isinstance(registered[name], HeimdallTask)
    ]
    errors += [
        _error(
            "heimdall.W001",
            f"HEIMDALL['TASKS'] configures {name!r}, which the Celery app does not register.",
            "Check the task's registered name (module path + function name) or remove it.",
        )
        for name in tasks
        if name not in registered
    ]
    if not isinstance(heimdall_settings.raw, dict):
        # E001 says HEIMDALL is unusable: no resource can be declared, so naming one
        # is not a separate mistake.
        errors = [e for e in errors if e.id != "heimdall.E012"]
    return errors


def _check_unique_on(name: str, task: Any, settings_options: Any) -> list[checks.CheckMessage]:
    errors = []
    for where, options in (
        ("heimdall={...}", task.heimdall),
        ("HEIMDALL['TASKS']", settings_options),
    ):
        if isinstance(options, Mapping):
            errors += [
                _error(
                    exc.check_id,
                    f"Task {name!r} ({where}), option {exc.option!r}: {exc.message}",
                    exc.hint,
                )
                for exc in signature_errors(task, options)
            ]
    return errors


@checks.register()
def check_beat(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Compare ``BEAT_LEASE`` with the loop interval beat was configured with."""
    from celery import current_app

    lease = heimdall_settings.BEAT_LEASE if isinstance(heimdall_settings.raw, dict) else None
    loop = current_app.conf.beat_max_loop_interval
    if not _positive(lease) or not _positive(loop) or lease > loop:
        return []
    return [
        _error(
            "heimdall.W004",
            f"HEIMDALL['BEAT_LEASE'] ({lease!r}s) is not longer than beat's loop interval "
            f"(beat_max_loop_interval, {loop!r}s): django_heimdall.beat's schedulers tick "
            f"every {lease / 3:g}s instead, to renew the lease in time.",
            "Make BEAT_LEASE a few times the loop interval, or shorten the loop interval.",
        )
    ]


@checks.register(checks.Tags.database)
def check_override_table(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """The override table exists (``check --database default``)."""
    from django.db import DatabaseError, connections, router

    from .models import PolicyOverride

    missing = False
    for alias in databases or ():
        if not router.allow_migrate_model(alias, PolicyOverride):
            continue
        try:
            tables = connections[alias].introspection.table_names()
        except DatabaseError:
            continue
        missing = missing or PolicyOverride._meta.db_table not in tables
    if not missing:
        return []
    return [
        _error(
            "heimdall.W005",
            "The table of django-heimdall's policy overrides does not exist.",
            "Run 'manage.py migrate heimdall'.",
        )
    ]


# Task attributes of the peers that django-heimdall replaces, with the option to use.
_PEER_ATTRIBUTES = {
    "once": ("celery-once", "heimdall={'unique': True, ...}"),
    "unique_on": ("celery-singleton", "heimdall={'unique': True, 'unique_on': [...]}"),
    "raise_on_duplicate": ("celery-singleton", "heimdall={'on_duplicate': 'raise'}"),
    "lock_expiry": ("celery-singleton", "heimdall={'unique_timeout': ...}"),
}


def _check_peer_leftovers(name: str, task: Any) -> list[checks.CheckMessage]:
    return [
        _error(
            "heimdall.W010",
            f"Task {name!r} carries {peer}'s {attribute!r} option, which django-heimdall "
            "ignores: the task is not unique through it.",
            f"Use {replacement} instead (see docs/migrating.md).",
        )
        for attribute, (peer, replacement) in _PEER_ATTRIBUTES.items()
        if attribute in vars(type(task))
    ]
