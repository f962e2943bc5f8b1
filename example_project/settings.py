"""Settings of the example project, wired the way a real project is.

Start everything with ``python3 example_project/run.py`` (see the README).
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

from django_heimdall.testing import redis_url

BASE_DIR = Path(__file__).resolve().parent.parent
# The running demo's file: run.py writes its Redis URL there, so that
# ``manage.py heimdall locks`` started by hand looks at the demo's Redis.
DEMO_REDIS_URL_FILE = BASE_DIR / ".demo-redis-url"
if not os.environ.get("REDIS_URL") and DEMO_REDIS_URL_FILE.exists():
    os.environ["REDIS_URL"] = DEMO_REDIS_URL_FILE.read_text().strip()
# REDIS_URL if set (the demo runner passes it to every process it starts), else
# the running demo's; otherwise an embedded redis-server, with a note on stderr.
REDIS_URL = redis_url()

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_celery_results",
    "django_heimdall",
    "example_project.demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.urls"
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
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DATABASE", BASE_DIR / "demo.sqlite3"),
        # The web server, the worker and beat share this file.
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"

# django-heimdall gets an alias of its own, on the next database of the same
# server: a cache.clear() of the project's cache must not wipe its locks (W003).
_redis = urlsplit(REDIS_URL)
_database = int(_redis.path.strip("/") or 0)
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "example",
    },
    "heimdall": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _redis._replace(path=f"/{(_database + 1) % 16}").geturl(),
    },
}

HEIMDALL = {
    "CACHE": "heimdall",
    "KEY_PREFIX": "heimdall-demo",
    "ON_REDIS_ERROR": "fail_closed",
    "DEFAULTS": {"unique_timeout": 600},
    # A policy set without touching the task's code (see demo/tasks.py).
    "TASKS": {
        "example_project.demo.tasks.sync_customer": {
            "unique": True,
            "unique_on": ["customer_id"],
        },
    },
}

# Celery, read by celery.py under the CELERY_ namespace.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 100
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "example_project.demo.tasks.call_partner_api": {"queue": "high"},
    "example_project.demo.tasks.fetch_customer_data": {"queue": "high"},
    "example_project.demo.tasks.generate_report": {"queue": "low"},
    "example_project.demo.tasks.nightly_cleanup": {"queue": "low"},
}
# The schedule lives in the database (django-celery-beat's periodic tasks, editable
# in the admin); django-heimdall's scheduler lets several beats run and skips an
# occurrence whose unique task still holds its lock.
CELERY_BEAT_SCHEDULER = "django_heimdall.beat:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    # Stored as a periodic task at beat's start. Due every 5 s but runs for 8 s:
    # while one runs, beat skips the next occurrences, so it never overlaps itself.
    "cleanup": {"task": "example_project.demo.tasks.nightly_cleanup", "schedule": 5.0},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# django_heimdall's lines, once each, in the worker's format. The logger does not
# propagate: the worker and beat give the root logger a handler of their own,
# which would print every line a second time.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "celery": {"format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "celery"}},
    "loggers": {"django_heimdall": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
