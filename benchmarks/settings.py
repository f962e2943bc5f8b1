"""Django settings of the benchmarks (``python -m benchmarks.enqueue``).

Every run gets its own key prefix and queue, so runs on a shared Redis never see
each other's keys, and the benchmark can delete exactly what it wrote.
"""

import uuid

from django_heimdall.testing import redis_url

# REDIS_URL if set; otherwise an embedded redis-server started for this process.
REDIS_URL = redis_url()
RUN_ID = uuid.uuid4().hex[:12]
#: Prefix of every heimdall key of this run.
KEY_PREFIX = f"hbench-{RUN_ID}"
#: The queue the benchmark publishes to; no worker consumes it.
QUEUE = f"hbench-{RUN_ID}-queue"

SECRET_KEY = "django-heimdall-benchmarks"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_heimdall"]
# The policy-override table, as in production (created by the benchmark at start).
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{KEY_PREFIX}-cache",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
    },
}

HEIMDALL = {
    "CACHE": "default",
    "KEY_PREFIX": KEY_PREFIX,
}

CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# No result backend: apply_async then costs the publish only, for plain and heimdall alike.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = QUEUE
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# Production-like logging: heimdall's per-duplicate INFO line is not emitted.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_heimdall": {"handlers": ["console"], "level": "WARNING"}},
}
