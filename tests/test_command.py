"""``manage.py heimdall`` through call_command, on the same store as the admin."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from django_heimdall.ratelimits import Rate
from django_heimdall.store import Acquired, Slot, get_store
from tests.conftest import wait_until

TASK = "tests.tasks.unique_add"


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("heimdall", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def hold(identity, owner, task=TASK):
    assert get_store().acquire(identity, owner, 60_000, task, "{}").status == Acquired.TAKEN


def test_locks_lists_and_filters_as_json():
    hold(f"{TASK}:a", "owner-a")
    hold("tests.tasks.unique_failing:b", "owner-b", task="tests.tasks.unique_failing")
    data = json.loads(run("locks", "--json")[0])
    assert data["total"] == 2
    assert {row["holder"] for row in data["locks"]} == {"owner-a", "owner-b"}
    data = json.loads(run("locks", "--task", TASK, "--json")[0])
    assert [row["key"] for row in data["locks"]] == [f"{TASK}:a"]
    assert "1 lock(s) held" in run("locks", "--task", TASK)[0]


def test_release_one_key_is_owner_checked():
    hold(f"{TASK}:a", "owner-a")
    out, _ = run("release", f"{TASK}:a", "--noinput")
    assert "1 lock(s) released." in out
    assert get_store().holder(f"{TASK}:a") is None


def test_release_by_task_and_all(monkeypatch):
    for n in range(3):
        hold(f"{TASK}:{n}", f"o{n}")
    hold("tests.tasks.unique_failing:x", "ox", task="tests.tasks.unique_failing")
    assert "3 lock(s) released." in run("release", "--task", TASK, "--noinput")[0]
    assert get_store().holder("tests.tasks.unique_failing:x") == "ox"
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert "1 lock(s) released." in run("release", "--all")[0]
    assert get_store().holder("tests.tasks.unique_failing:x") is None


def test_release_by_task_keeps_a_key_another_task_took_since():
    hold(f"{TASK}:own", "a-2")
    assert get_store().acquire("shared", "a-1", 50, TASK, "").status == Acquired.TAKEN
    wait_until(lambda: get_store().holder("shared") is None, message="the lease on it ended")
    hold("shared", "b-1", task="tests.tasks.unique_failing")
    assert "1 lock(s) released." in run("release", "--task", TASK, "--noinput")[0]
    assert get_store().holder("shared") == "b-1"


def test_release_asks_and_can_be_cancelled(monkeypatch):
    hold(f"{TASK}:a", "owner-a")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(CommandError, match="Cancelled"):
        run("release", f"{TASK}:a")
    assert get_store().holder(f"{TASK}:a") == "owner-a"


def test_release_without_a_terminal_to_answer_is_a_clear_error(monkeypatch):
    """No stdin (cron, CI): the question cannot be answered; nothing is released."""
    hold(f"{TASK}:a", "owner-a")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match=r"no answer.*--noinput"):
        run("release", f"{TASK}:a")
    assert get_store().holder(f"{TASK}:a") == "owner-a"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("release",), "exactly one"),
        (("release", "k", "--all", "--noinput"), "exactly one"),
        (("release", "missing-key", "--noinput"), "No lock is held"),
        (("reset-rate", "nothing", "--noinput"), "No rate-limit window"),
        (("locks", "--limit", "0"), "at least 1"),
    ],
)
def test_bad_input_raises_command_error(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_unknown_subcommand_is_an_error():
    with pytest.raises(CommandError):
        run("explode")


@pytest.mark.django_db
def test_policies_show_values_and_sources(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.configured_in_settings": {"unique": True, "unique_on": []}},
    }
    data = {row["task"]: row for row in json.loads(run("policies", "--json")[0])}
    configured = data["tests.tasks.configured_in_settings"]["options"]
    assert configured["unique"] == {"value": "True", "source": "settings"}
    assert configured["unique_on"] == {"value": "[]", "source": "settings"}
    assert data[TASK]["options"]["unique"] == {"value": "True", "source": "decorator"}
    assert data[TASK]["options"]["unique_timeout"]["source"] == "built-in"
    assert "tests.tasks.limited" in run("policies")[0]


def test_rates_list_and_reset():
    store = get_store()
    store.start(
        "t1", task_name="tests.tasks.limited", rates=(("tests.tasks.limited", Rate(5, 10)),)
    )
    (window,) = json.loads(run("rates", "--json")[0])
    assert (window["identity"], window["times"], window["per"], window["starts"]) == (
        "tests.tasks.limited",
        5,
        10.0,
        1,
    )
    assert (
        "Window of tests.tasks.limited reset."
        in run("reset-rate", "tests.tasks.limited", "--noinput")[0]
    )
    (window,) = json.loads(run("rates", "--json")[0])
    assert window["starts"] == 0  # a reset window stays listed, empty


def test_rates_and_slots_list_every_page(monkeypatch):
    monkeypatch.setattr("django_heimdall.management.commands.heimdall.PAGE", 5)
    store = get_store()
    for n in range(12):
        store.start(f"r{n}", task_name="t", rates=((f"key-{n}", Rate(5, 60)),))
        store.start(
            f"s{n}", task_name="t", lease_ms=60_000, token="x", slots=(Slot(f"s:{n}", 1, 1),)
        )
    out = run("rates")[0]
    assert "12 rate-limit key(s) in use" in out
    assert {f"key-{n}" for n in range(12)} <= {line.split()[0] for line in out.splitlines()}
    assert len(json.loads(run("rates", "--json")[0])) == 12
    assert "12 semaphore(s) in use" in run("slots")[0]
    assert len(json.loads(run("slots", "--json")[0])) == 12


def test_redis_down_is_a_command_error(private_redis):
    private_redis.stop()
    with pytest.raises(CommandError, match="unreachable"):
        run("locks")


def test_slots_lists_holders_and_release_slot_is_owner_checked():
    from django_heimdall import mutex
    from django_heimdall.store import Slot

    name = "task:tests.tasks.two_at_a_time"
    get_store().start(
        "held-1", task_name="t", lease_ms=60_000, token="e1", slots=(Slot(name, 1, 2),)
    )
    with mutex("import-data"):
        data = json.loads(run("slots", "--json")[0])
        by_name = {row["name"]: row for row in data}
        assert by_name[name]["used"] == 1 and by_name[name]["capacity"] == 2
        assert by_name[name]["holders"][0]["holder"] == "held-1"
        assert by_name["resource:import-data"]["used"] == 1
        out = run("slots")[0]
        assert "1/2 in use" in out and "held-1" in out

    out, _ = run("release-slot", name, "held-1", "--noinput")
    assert "released" in out
    rows = {row["name"]: row for row in json.loads(run("slots", "--json")[0])}
    assert rows[name]["used"] == 0
    with pytest.raises(CommandError, match="holds no slot"):
        run("release-slot", name, "held-1", "--noinput")
