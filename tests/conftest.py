import itertools
import os
import subprocess
import sys
import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from django_redis import get_redis_connection

from django_heimdall.store import get_store
from django_heimdall.testing import EmbeddedRedis
from tests.celery_app import app as test_app


@pytest.fixture(autouse=True)
def heimdall_prefix(settings):
    """A fresh key prefix per test; its keys are deleted afterwards (never FLUSHDB,
    so a shared Redis keeps everybody else's data)."""
    prefix = f"ht-{uuid.uuid4().hex[:12]}"
    settings.HEIMDALL = {**settings.HEIMDALL, "KEY_PREFIX": prefix}
    yield prefix
    delete_matching(
        get_redis_connection("default"),
        f"{{{prefix}}}*",
        f"{prefix}*",
        f"_kombu.binding*.{prefix}*",
    )


def delete_matching(client, *patterns):
    """Delete the keys matching ``patterns`` (SCAN, never KEYS or FLUSHDB)."""
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_client():
    return get_store().client


@pytest.fixture(scope="session")
def celery_app():
    return test_app


@pytest.fixture(scope="session")
def celery_worker(celery_app):
    """An in-thread worker (4 threads) consuming the session's queue."""
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker
    queue = celery_app.conf.task_default_queue
    delete_matching(get_redis_connection("default"), queue, f"_kombu.binding*.{queue}")


@pytest.fixture
def open_gate(redis_client):
    from tests.tasks import gate_key

    def _open(name):
        redis_client.set(gate_key(name), 1, ex=120)

    return _open


def wait_until(predicate, timeout=30.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it is truthy; fail the test (not a timing assert:
    the timeout only bounds a hang) if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {message}")
        time.sleep(interval)


def overlapping_twins(celery_app, task_name, record, count):
    """Send ``count`` messages of ``task_name`` twice each (same task id, as a
    redelivery would), wait for their results; the task ids, and how many executions
    of one id overlapped (the task records ``id``, ``start`` and ``end`` under
    ``record``)."""
    from celery.result import AsyncResult
    from kombu.utils.uuid import uuid as task_uuid

    from tests import tasks

    ids = [task_uuid() for _ in range(count)]
    for n, task_id in enumerate(ids):
        for _ in range(2):
            celery_app.send_task(task_name, args=(f"twin-{n}",), task_id=task_id)
    for task_id in ids:
        assert AsyncResult(task_id).get(timeout=60).startswith("twin-")
    time.sleep(0.5)  # let any twin that did run finish recording
    runs = {}
    for run in tasks.records(record):
        runs.setdefault(run["id"], []).append(run)
    spans = [sorted((r["start"], r["end"]) for r in runs[task_id]) for task_id in ids]
    return ids, sum(b[0] < a[1] for one in spans for a, b in itertools.pairwise(one))


class WorkerProcess:
    """``celery worker`` in its own OS process, with the test's key prefix."""

    def __init__(self, prefix, queue, pool="prefork", concurrency=4):
        env = {
            **os.environ,
            "HEIMDALL_TEST_PREFIX": prefix,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
        }
        self.queue = queue
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.celery_app",
                "worker",
                "-P",
                pool,
                "-c",
                str(concurrency),
                "-Q",
                queue,
                "-l",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{queue}@%h",
            ],
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )

    def wait_ready(self, app, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("worker process exited")
            replies = app.control.ping(
                destination=[f"{self.queue}@{os.uname().nodename}"], timeout=0.5
            )
            if replies:
                return
        raise RuntimeError("worker process did not answer a ping")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def worker_process(heimdall_prefix, celery_app):
    started = []

    def _start(**kwargs):
        queue = f"{heimdall_prefix}-q"
        worker = WorkerProcess(heimdall_prefix, queue, **kwargs)
        started.append(worker)
        worker.wait_ready(celery_app)
        return worker

    yield _start
    for worker in started:
        worker.stop()


@pytest.fixture
def private_redis(settings):
    """HEIMDALL on a private server that the test may stop (never the shared one)."""
    server = EmbeddedRedis().start()
    settings.CACHES = {
        **settings.CACHES,
        "private": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        },
    }
    shared = settings.HEIMDALL
    settings.HEIMDALL = {**shared, "CACHE": "private", "UNAVAILABLE_COUNTDOWN": 1}
    yield server
    settings.HEIMDALL = shared
    server.stop()
