"""Django settings of the admin benchmark (``python -m benchmarks.admin_listing``).

The benchmark starts a private embedded ``redis-server`` (it fills it with over a
million keys, which must never land on a shared server) and passes its URL in
``HEIMDALL_ADMIN_BENCH_REDIS_URL`` before Django reads these settings. The
database is an in-memory SQLite one; the run creates its tables.
"""

import os
import uuid

from django.core.exceptions import ImproperlyConfigured

try:
    REDIS_URL = os.environ["HEIMDALL_ADMIN_BENCH_REDIS_URL"]
except KeyError:
    raise ImproperlyConfigured(
        "HEIMDALL_ADMIN_BENCH_REDIS_URL is not set: run python -m benchmarks.admin_listing, "
        "which starts a private Redis for these settings"
    ) from None
RUN_ID = uuid.uuid4().hex[:12]
#: Prefix of every heimdall key of this run.
KEY_PREFIX = f"hbench-admin-{RUN_ID}"

SECRET_KEY = "django-heimdall-benchmarks"
# Production-like: cached template loaders, no query log, no debug context.
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
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
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{KEY_PREFIX}-cache",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 10},
    },
}

HEIMDALL = {
    "CACHE": "default",
    "KEY_PREFIX": KEY_PREFIX,
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_heimdall": {"handlers": ["console"], "level": "WARNING"}},
}
