"""The Celery app of the test suite (also used by worker subprocesses)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from celery import Celery  # noqa: E402

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")

import tests.tasks  # noqa: E402, F401
