"""The demo's startup path: Redis, database, worker, beat and web server start
and talk to each other, and stopping leaves no process behind."""

import json
import os
import socket
import urllib.request
from http.cookiejar import CookieJar

import pytest
from celery import Celery

from django_heimdall.testing import EmbeddedRedis
from example_project.run import Demo
from tests.conftest import wait_until


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def demo(tmp_path):
    redis = EmbeddedRedis().start()  # never the shared server: the demo uses plain queue names
    demo = Demo(
        port=free_port(), redis_url=redis.url, database=str(tmp_path / "demo.sqlite3"), quiet=True
    )
    try:
        yield demo.start()
    finally:
        demo.stop()
        redis.stop()


def test_demo_starts_and_its_pieces_talk_to_each_other(demo):
    control = Celery(broker=demo.redis_url, set_as_current=False)
    wait_until(lambda: control.control.ping(timeout=0.5), timeout=60, message="worker ping")

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = wait_until(lambda: _get(opener, demo.url), timeout=60, message="web server")
    assert "django-heimdall demo" in page

    # A demo task round-trips: web -> Redis broker -> worker -> database -> web.
    csrf = _csrf(opener)
    request = urllib.request.Request(
        f"{demo.url}fire/digest/", method="POST", headers={"X-CSRFToken": csrf, "Referer": demo.url}
    )
    fired = json.loads(opener.open(request, timeout=10).read())["fired"]
    assert len({entry["id"] for entry in fired}) == 1  # interval-unique: one task, three clicks

    def state():
        tasks = json.loads(_get(opener, f"{demo.url}status/"))["tasks"]
        return {t["state"] for t in tasks if t["id"] == fired[0]["id"]} == {"SUCCESS"}

    wait_until(state, timeout=60, message="demo task result")
    control.close()


def test_stopping_the_demo_leaves_no_process(tmp_path):
    redis = EmbeddedRedis().start()
    demo = Demo(
        port=free_port(), redis_url=redis.url, database=str(tmp_path / "db.sqlite3"), quiet=True
    ).start()
    pids = [process.pid for process in demo.processes]
    try:
        wait_until(
            lambda: Celery(broker=redis.url, set_as_current=False).control.ping(timeout=0.5),
            timeout=60,
            message="worker ping",
        )
    finally:
        demo.stop()
        redis.stop()
    assert not [pid for pid in pids if alive(pid)]
    # The worker's pool processes were in its process group: the group is gone too.
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)


def _get(opener, url):
    try:
        return opener.open(url, timeout=5).read().decode()
    except OSError:
        return None


def _csrf(opener):
    for handler in opener.handlers:
        jar = getattr(handler, "cookiejar", None)
        if jar is not None:
            return next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    raise AssertionError("no CSRF cookie")
