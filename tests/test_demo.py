"""The demo's startup path: Redis, database, worker, beat and web server start
and talk to each other, ``run.py manage`` reaches the running demo's Redis, and
stopping leaves no process behind."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from http.cookiejar import CookieJar

import pytest
from celery import Celery

from django_heimdall.testing import EmbeddedRedis
from example_project.run import ROOT, Demo
from tests.conftest import wait_until

RUN_PY = ROOT / "example_project" / "run.py"


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


@contextlib.contextmanager
def running_demo(tmp_path):
    """The whole demo (worker, beat, web server) on its own Redis and database, once
    its web server answers."""
    redis = EmbeddedRedis().start()  # never the shared server: the demo uses plain queue names
    demo = Demo(
        port=free_port(),
        redis_url=redis.url,
        database=str(tmp_path / "demo.sqlite3"),
        quiet=True,
        url_file=tmp_path / "demo-redis-url",  # never the checkout's .demo-redis-url
        log_dir=tmp_path,
    )
    try:
        demo.start()
        wait_until(
            lambda: _get(urllib.request.build_opener(), demo.url), timeout=60, message="web server"
        )
        yield demo
    except BaseException:
        print(demo.logs())  # shown with the failure
        raise
    finally:
        demo.stop()
        redis.stop()


@pytest.fixture
def demo(tmp_path):
    with running_demo(tmp_path) as demo:
        yield demo


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
    assert [entry["note"] for entry in fired] == ["new task", *["same id as before"] * 2]

    # The page's timeline: one row for the three calls, its run on the Redis clock.
    def ran():
        rows = json.loads(_get(opener, f"{demo.url}timeline/"))["demos"].get("digest", [])
        return rows and rows[0]["kind"] == "ran" and rows[0]

    row = wait_until(ran, timeout=60, message="the digest's run on the timeline")
    assert row["id"] == fired[0]["id"]
    assert [call["at_us"] for call in row["calls"]] == [entry["at_us"] for entry in fired]
    assert row["state"] == "SUCCESS"
    assert row["enqueued_us"] <= row["start_us"] < row["end_us"]
    control.close()


def run_py(url_file, *args, database=None):
    """``python3 example_project/run.py --url-file FILE ARGS`` in this Python, as a user
    would run it in a second terminal."""
    env = {**os.environ, "DEMO_NO_VENV": "1"}
    if database:
        env["DEMO_DATABASE"] = database
    return subprocess.run(
        [sys.executable, str(RUN_PY), "--url-file", str(url_file), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_py_manage_sees_the_running_demos_locks(demo):
    assert demo.url_file.read_text().strip() == demo.redis_url
    # Three locks in the demo's Redis: a digest is unique for 30 s, even after it ran.
    hold = run_py(
        demo.url_file,
        "manage",
        "shell",
        "-v",
        "0",
        "-c",
        "from example_project.demo.tasks import send_digest\n"
        "print(*[send_digest.delay(user).id for user in (1, 2, 3)])",
        database=demo.database,
    )
    assert hold.returncode == 0, hold.stderr
    holders = hold.stdout.split()
    assert len(set(holders)) == 3

    # This process's REDIS_URL is another server: the command follows the demo's file.
    listed = run_py(
        demo.url_file,
        "manage",
        "heimdall",
        "locks",
        "--task",
        "example_project.demo.tasks.send_digest",
        "--json",
        database=demo.database,
    )
    assert listed.returncode == 0, listed.stderr
    assert "embedded" not in listed.stderr
    locks = json.loads(listed.stdout)
    assert locks["total"] == 3
    assert sorted(lock["holder"] for lock in locks["locks"]) == sorted(holders)


def test_run_py_manage_without_a_running_demo_says_so(tmp_path):
    result = run_py(tmp_path / "no-demo", "manage", "heimdall", "locks")
    assert result.returncode == 1
    assert "No demo is running" in result.stderr
    assert "python3 example_project/run.py" in result.stderr


def test_an_embedded_redis_started_for_a_command_is_announced():
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-c", "from django_heimdall.testing import redis_url; redis_url()"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "REDIS_URL is not set: started an empty embedded redis-server" in result.stderr


def test_a_ctrl_c_in_the_terminal_leaves_the_embedded_redis_to_its_owner():
    """Ctrl-C signals the terminal's whole process group: the demo's Redis must
    outlive it until the worker has finished its tasks and the demo stops it."""
    redis = EmbeddedRedis().start()
    try:
        assert os.getpgid(redis.process.pid) != os.getpgid(0)
    finally:
        redis.stop()


def test_stopping_the_demo_leaves_no_process(tmp_path):
    redis = EmbeddedRedis().start()
    url_file = tmp_path / "demo-redis-url"
    demo = Demo(
        port=free_port(),
        redis_url=redis.url,
        database=str(tmp_path / "db.sqlite3"),
        quiet=True,
        url_file=url_file,
    ).start()
    assert url_file.read_text().strip() == redis.url
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
    assert not url_file.exists()  # no stale URL for 'run.py manage' to follow
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
