"""Django settings of the side-by-side suite (``python -m benchmarks.suite``).

The suite starts a private embedded ``redis-server`` and passes its URL in
``HEIMDALL_SUITE_REDIS_URL``, the run's id in ``HEIMDALL_SUITE_RUN_ID`` and a SQLite
file in ``HEIMDALL_SUITE_DB`` before Django reads these settings, so that the worker
subprocesses it starts share all three. The database (migrated by the suite) is there
as in production: every process reads the admin's policy overrides from it once.
"""

import os

from django.core.exceptions import ImproperlyConfigured

URL_ENV = "HEIMDALL_SUITE_REDIS_URL"
RUN_ENV = "HEIMDALL_SUITE_RUN_ID"
DB_ENV = "HEIMDALL_SUITE_DB"

try:
    REDIS_URL = os.environ[URL_ENV]
    RUN_ID = os.environ[RUN_ENV]
    DB_PATH = os.environ[DB_ENV]
except KeyError as missing:
    raise ImproperlyConfigured(
        f"{missing.args[0]} is not set: run python -m benchmarks.suite, which starts a "
        "private Redis for these settings"
    ) from None
#: Prefix of every heimdall key of this run (the peers get prefixes derived from it).
KEY_PREFIX = f"hsuite-{RUN_ID}"
#: The queue of the enqueue measurements; no worker consumes it.
QUEUE = f"{KEY_PREFIX}-enqueue"

SECRET_KEY = "django-heimdall-benchmarks"
DEBUG = False
USE_TZ = True
# Django exports TIME_ZONE to the environment (TZ): keep the run's times in UTC.
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_heimdall"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_PATH}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{KEY_PREFIX}-cache",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
    },
}

# Library defaults otherwise (DEFER_JITTER 0.5 s, fail closed): what a user gets.
HEIMDALL = {
    "CACHE": "default",
    "KEY_PREFIX": KEY_PREFIX,
}

CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# No result backend: apply_async costs the publish only, for every contender alike;
# completion is counted in Redis by the tasks themselves.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = QUEUE
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Production-like logging: no per-duplicate or per-deferral INFO lines.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_heimdall": {"handlers": ["console"], "level": "WARNING"}},
}
