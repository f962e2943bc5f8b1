"""Django settings of the test suite."""

import json
import os
import uuid

from django_heimdall.testing import redis_url

REDIS_URL = redis_url()
# One queue per test session, so that parallel sessions on one server do not mix.
QUEUE = os.environ.setdefault("HEIMDALL_TEST_QUEUE", f"heimdall-tests-{uuid.uuid4().hex[:8]}")

SECRET_KEY = "django-heimdall-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the live server serves the admin's CSS
    "django_celery_beat",
    "django_celery_results",
    "django_heimdall",
    "tests",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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
STATIC_URL = "static/"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "heimdall-tests-cache",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
    },
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
# django-heimdall's own alias, so that a cache.clear() never wipes its state (W003).
CACHES["heimdall"] = {**CACHES["default"], "KEY_PREFIX": ""}

HEIMDALL = {
    "CACHE": "heimdall",
    # Worker subprocesses get the test's prefix through the environment.
    "KEY_PREFIX": os.environ.get("HEIMDALL_TEST_PREFIX", "heimdall-tests"),
    "DEFER_JITTER": 0.2,
    "RESOURCES": {"shared": {"capacity": 2}, "single": {"capacity": 1}},
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXPIRES = 600
CELERY_TASK_DEFAULT_QUEUE = QUEUE
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_heimdall": {"handlers": ["console"], "level": "INFO"}},
}

# Beat subprocesses of tests/test_beat.py get their schedule, lease and (for the
# database scheduler) a shared sqlite file through the environment.
_BEAT = json.loads(os.environ.get("HEIMDALL_TEST_BEAT", "{}"))
if _BEAT:
    CELERY_BEAT_SCHEDULE = _BEAT.get("schedule", {})
    HEIMDALL["BEAT_LEASE"] = _BEAT["lease"]
    if _BEAT.get("cache"):  # a private server the test stops and starts again
        CACHES[HEIMDALL["CACHE"]] = {**CACHES[HEIMDALL["CACHE"]], "LOCATION": _BEAT["cache"]}
    if _BEAT.get("database"):
        DATABASES["default"] = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _BEAT["database"],
            "OPTIONS": {"timeout": 20},
        }
