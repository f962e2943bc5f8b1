"""Django settings of the benchmarks (``python -m benchmarks``).

The suite starts a private embedded ``redis-server`` and passes its URL, the run's
id and a SQLite file in the environment before Django reads these settings, so
that the worker subprocesses it starts share all three. The database (migrated by
the suite) is there as in production: every process reads the admin's policy
overrides from it, and the admin section logs in against it.
"""

import os

from django.core.exceptions import ImproperlyConfigured

URL_ENV, RUN_ENV, DB_ENV = "HEIMDALL_BENCH_REDIS_URL", "HEIMDALL_BENCH_RUN_ID", "HEIMDALL_BENCH_DB"
try:
    REDIS_URL, RUN_ID, DB_PATH = (os.environ[name] for name in (URL_ENV, RUN_ENV, DB_ENV))
except KeyError as missing:
    raise ImproperlyConfigured(
        f"{missing.args[0]} is not set: run python -m benchmarks, which starts a private "
        "Redis for these settings"
    ) from None
#: Prefix of every heimdall key of this run (the peers get prefixes derived from it).
KEY_PREFIX = f"hbench-{RUN_ID}"

SECRET_KEY = "django-heimdall-benchmarks"
# Production-like: cached template loaders, no query log, no debug context.
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
TIME_ZONE = "UTC"  # Django exports it to the environment (TZ): the run's times in UTC
ROOT_URLCONF = "benchmarks.urls"
STATIC_URL = "/static/"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_celery_results",
    "django_heimdall",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_PATH}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{KEY_PREFIX}-cache",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 10},
    },
}

# Library defaults otherwise (DEFER_JITTER, fail closed): what a user gets. The backlog
# section sets the hop cap of its workers (its ``cap`` parameter) in the environment.
HEIMDALL = {"CACHE": "default", "KEY_PREFIX": KEY_PREFIX}
if cap := os.environ.get("HEIMDALL_BENCH_DEFER_MAX_COUNTDOWN"):
    HEIMDALL["DEFER_MAX_COUNTDOWN"] = float(cap)

CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# No result backend: apply_async costs the publish only, for every contender alike;
# completion is counted in Redis by the tasks themselves.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
#: The queue of the enqueue section; no worker consumes it.
CELERY_TASK_DEFAULT_QUEUE = f"{KEY_PREFIX}-enqueue"
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
