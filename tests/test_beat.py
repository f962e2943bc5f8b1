"""Beat that can run twice: a leader lease, a claim per occurrence, unique locks
checked before sending. Proven with real ``celery beat`` processes, a real Redis
and the messages they leave in the broker."""

import base64
import datetime
import itertools
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
from celery import schedules
from celery.beat import ScheduleEntry
from django.core.management import call_command
from django_redis import get_redis_connection

from django_heimdall import signals
from django_heimdall.beat import OCCURRENCE_HEADER, Scheduler, claim_terms, occurrence_ms
from django_heimdall.checks import check_beat, check_settings
from django_heimdall.services import beat as beat_state
from django_heimdall.store import get_store
from django_heimdall.store.beat import BeatStore, Claimed, Led
from django_heimdall.testing import EmbeddedRedis
from tests import tasks
from tests.celery_app import app as celery_app
from tests.conftest import WorkerProcess, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEASE = 2.0  # seconds: short, so a failover happens within the test


def env_for(prefix, schedule=None, database=None, lease=LEASE, cache=None):
    beat = {"lease": lease, "schedule": schedule or {}, "database": database, "cache": cache}
    return {
        **os.environ,
        "HEIMDALL_TEST_PREFIX": prefix,
        "HEIMDALL_TEST_BEAT": json.dumps(beat),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }


class BeatProcess(WorkerProcess):
    """``celery beat`` in its own OS process, logging to a file."""

    def __init__(self, env, tmp_path, name, scheduler="django_heimdall.beat:Scheduler"):
        self.log_path = tmp_path / f"beat-{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        schedule = str(tmp_path / f"schedule-{name}")
        argv = ["-A", "tests.celery_app", "beat", "-S", scheduler, "-s", schedule, "-l", "INFO"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", *argv],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        return self.log_path.read_text(errors="replace")

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        if self.alive():
            super().stop()
        self._log.close()


@pytest.fixture
def beats(tmp_path):
    started = []

    def _start(env, name, **kwargs):
        process = BeatProcess(env, tmp_path, name, **kwargs)
        started.append(process)
        return process

    yield _start
    for process in started:
        process.stop()


def ping_schedule(queue, every=1.0):
    return {"ping": {"task": "tests.beat.ping", "schedule": every, "options": {"queue": queue}}}


def messages(queue):
    """Every message waiting in ``queue`` (nobody consumes it): (occurrence, args)."""
    found = []
    for raw in get_redis_connection("default").lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"].get(OCCURRENCE_HEADER), body[0]))
    return found


def occurrences_of(queue):
    """Occurrence times (ms) of the messages in ``queue``, checking that each
    occurrence was sent exactly once and that they are at least 1 s apart."""
    tags = [tag for tag, _args in messages(queue)]
    assert None not in tags, "a message was sent without a claim"
    assert len(tags) == len(set(tags)), f"an occurrence was sent twice: {sorted(tags)}"
    times = sorted(int(tag.rsplit("@", 1)[1]) for tag in tags)
    assert all(b - a >= 1000 for a, b in itertools.pairwise(times)), times
    return times


def by_beat():
    """Beat id of every occurrence sent, by occurrence ms, from the history."""
    return {
        int(o.scheduled.timestamp() * 1000): o.beat_id
        for o in beat_state().recent()
        if o.outcome == "sent"
    }


# -- the store: lease and claims ----------------------------------------------------


def test_lease_is_owner_checked_renewed_and_given_back():
    store = BeatStore(get_store())
    assert store.lead("a", 5000, "host-a", 1).status == Led.TAKEN
    standby = store.lead("b", 5000, "host-b", 2)
    assert (standby.status, standby.leader) == (Led.STANDBY, "a")
    assert store.lead("a", 5000, "host-a", 1).status == Led.RENEWED
    assert not store.resign("b")  # not the leader: nothing happens
    leader = beat_state().leader()
    assert (leader.beat_id, leader.host, leader.pid) == ("a", "host-a", 1)
    assert 0 < leader.lease_left <= 5
    assert store.resign("a")
    assert beat_state().leader() is None
    assert store.lead("b", 5000, "host-b", 2).status == Led.TAKEN


def test_each_occurrence_is_claimed_once_and_only_by_the_leader(redis_client):
    store = BeatStore(get_store())
    sec, _usec = redis_client.time()
    now_ms = sec * 1000
    store.lead("a", 5000, "h", 1)
    assert store.claim("a", "ping", now_ms, "t").status == Claimed.SEND
    assert store.claim("a", "ping", now_ms, "t").status == Claimed.CLAIMED
    assert store.claim("a", "ping", now_ms - 1000, "t").status == Claimed.CLAIMED
    assert store.claim("b", "ping", now_ms + 1000, "t").status == Claimed.NOT_LEADER
    # The leader dies; its lease lapses; the new leader cannot send the same occurrence.
    redis_client.delete(get_store().keys.beat_leader)
    store.lead("b", 5000, "h", 2)
    assert store.claim("b", "ping", now_ms, "t").status == Claimed.CLAIMED
    assert store.claim("a", "ping", now_ms + 1000, "t").status == Claimed.NOT_LEADER
    assert store.claim("b", "ping", now_ms + 1000, "t").status == Claimed.SEND
    # A host whose clock is ahead of Redis's is refused (it would hold everyone back).
    assert store.claim("b", "ping", now_ms + 60_000, "t").status == Claimed.AHEAD
    recent = beat_state().recent()
    assert [(o.beat_id, o.outcome) for o in recent] == [("b", "sent"), ("a", "sent")]
    # Bounded: one claim per entry, and every beat key expires.
    keys = get_store().keys
    assert redis_client.hlen(keys.beat_claims) == redis_client.zcard(keys.beat_claim_ends) == 1
    assert redis_client.pttl(keys.beat_claims) > 0 and redis_client.pttl(keys.beat_claim_ends) > 0
    assert redis_client.pttl(keys.beat_history) > 0


def redis_ms(client):
    sec, usec = client.time()
    return sec * 1000 + usec // 1000


def test_claims_of_entries_gone_are_forgotten(redis_client):
    """One-off or deleted entries (a row per order, say) leave no claim behind once
    their keep time has passed: one claim per live entry."""
    store, keys = BeatStore(get_store()), get_store().keys
    store.lead("a", 5000, "h", 1)
    now_ms = redis_ms(redis_client)
    for n in range(300):
        assert store.claim("a", f"remind-{n}", now_ms, "t", keep_ms=1).status == Claimed.SEND
    # Their keep time over (1 ms), claims of live entries forget them, a batch a call.
    wait_until(lambda: redis_ms(redis_client) > now_ms + 1000, message="a second later")
    later = redis_ms(redis_client)
    for n in range(3):
        assert store.claim("a", "live", later + n, "t", keep_ms=60_000).status == Claimed.SEND
    assert redis_client.hkeys(keys.beat_claims) == [b"live"]
    assert redis_client.zcard(keys.beat_claim_ends) == 1


def test_a_fixed_interval_is_claimed_once_per_interval_whatever_the_label():
    """Beats fire an interval entry on their own phase: two beats either side of a
    boundary label one run with neighbouring occurrences. The second is refused
    until the interval has passed since the first claim."""
    store = BeatStore(get_store())
    store.lead("a", 5000, "h", 1)
    hour = 3_600_000
    now_ms = redis_ms(get_store().client)
    first = now_ms // hour * hour
    assert store.claim("a", "hourly", first - hour, "t", gap_ms=hour - 2000) == (Claimed.SEND, "")
    assert store.claim("a", "hourly", first, "t", gap_ms=hour - 2000).status == Claimed.CLAIMED
    assert store.claim("a", "other", first, "t", gap_ms=hour - 2000).status == Claimed.SEND


def test_beats_either_side_of_an_interval_boundary_send_one_run(tmp_path, heimdall_prefix):
    """A leads and sends its hourly entry 0.05 s before a boundary, then stops
    normally; B, due 0.05 s after it, takes over: it must not send the entry again."""
    queue = f"{heimdall_prefix}-beat"
    boundary = redis_ms(get_store().client) // 3_600_000 * 3600

    def scheduler(name, last_run_at):
        made = Scheduler(app=celery_app, schedule_filename=str(tmp_path / f"schedule-{name}"))
        made.add(
            name="hourly",
            task="tests.beat.ping",
            schedule=3600.0,
            options={"queue": queue},
            last_run_at=datetime.datetime.fromtimestamp(last_run_at, datetime.timezone.utc),
        )
        return made

    a, b = scheduler("a", boundary - 3600 - 0.05), scheduler("b", boundary - 3600 + 0.05)
    try:
        a.tick()
        assert a.leadership.leading and len(messages(queue)) == 1
        a.close()  # gives the lease back
        b.tick()
        assert b.leadership.leading
    finally:
        b.close()
    assert len(messages(queue)) == 1


def test_an_interval_longer_than_a_month_is_claimed_once(redis_client):
    """Its occurrence (aligned to the interval) may be months old: the claim must
    last as long as the entry's period, not a fixed month."""
    store = BeatStore(get_store())
    store.lead("a", 5000, "h", 1)
    day = 86_400_000
    now_ms = redis_ms(redis_client)
    every = next(d * day for d in range(40, 400) if now_ms % (d * day) > 36 * day)
    entry = ScheduleEntry(name="e", task="t", schedule=every / 1000, app=celery_app)
    label = now_ms // every * every
    keep_ms, gap_ms = claim_terms(entry, label, 30_000)
    assert keep_ms >= 2 * every and gap_ms > every - 3000
    terms = {"keep_ms": keep_ms, "gap_ms": gap_ms}
    assert store.claim("a", "e", label, "t", **terms).status == Claimed.SEND
    assert store.claim("a", "e", label, "t", **terms).status == Claimed.CLAIMED


def test_a_host_whose_clock_is_ahead_does_not_lead(redis_client):
    """Its every claim would be refused as ahead: leading, it would only keep a
    healthy standby from sending. It gives the lease back and stands by."""
    store = BeatStore(get_store())
    now_ms = redis_ms(redis_client)
    assert store.lead("fast", 5000, "h", 1, clock_ms=now_ms).status == Led.TAKEN
    assert store.lead("fast", 5000, "h", 1, clock_ms=now_ms + 10_000).status == Led.AHEAD
    assert beat_state().leader() is None
    assert store.lead("fast", 5000, "h", 1, clock_ms=now_ms + 60_000).status == Led.AHEAD
    assert store.lead("healthy", 5000, "h", 2).status == Led.TAKEN


def test_every_beat_computes_the_same_occurrence():
    def entry(schedule, last_run_at):
        return ScheduleEntry(
            name="e", task="t", schedule=schedule, last_run_at=last_run_at, app=celery_app
        )

    def at(seconds):
        return start + datetime.timedelta(seconds=seconds)

    def ms(moment):
        return int(moment.timestamp() * 1000)

    start = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    every = schedules.schedule(datetime.timedelta(seconds=10))
    # Two beats that sent the previous occurrence 0.1 s and 7 s after 12:00:00.
    assert occurrence_ms(entry(every, at(0.1))) == occurrence_ms(entry(every, at(7))) == ms(at(10))
    # A crontab names its own time. (Older Celery computes it exactly only from a
    # recent last run, as beat's is: start five minutes back, on a multiple of five.)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    start -= datetime.timedelta(minutes=5)
    cron = schedules.crontab(minute="*/5")
    assert occurrence_ms(entry(cron, at(1))) == occurrence_ms(entry(cron, at(120))) == ms(at(300))


# -- the scheduler in this process ----------------------------------------------------


@pytest.fixture
def leader(tmp_path):
    """A scheduler in this process that leads (its first tick took the lease)."""
    scheduler = Scheduler(app=celery_app, schedule_filename=str(tmp_path / "schedule"))
    try:
        scheduler.tick()
        assert scheduler.leadership.leading
        yield scheduler
    finally:
        scheduler.close()


def test_leader_steps_down_when_redis_is_unreachable_and_recovers(leader, private_redis, caplog):
    private_redis.stop()
    with caplog.at_level(logging.ERROR, logger="django_heimdall"):
        delay = leader.tick()  # does not raise
    assert not leader.leadership.leading
    assert 0 < delay <= leader.leadership.poll
    assert any("standing by" in r.getMessage() for r in caplog.records)
    private_redis.start()
    leader.tick()
    assert leader.leadership.leading


def test_fail_open_leader_keeps_sending_while_redis_is_unreachable(
    leader, private_redis, settings, heimdall_prefix, caplog
):
    settings.HEIMDALL = {**settings.HEIMDALL, "ON_REDIS_ERROR": "fail_open"}
    queue = f"{heimdall_prefix}-beat"
    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger="django_heimdall"):
        leader.tick()
        apply_due(leader, "unclaimed", tasks.plain_record, ("x",), {"queue": queue})
    assert leader.leadership.leading
    assert [args for _tag, args in messages(queue)] == [["x"]]
    assert any("sent without a claim" in r.getMessage() for r in caplog.records)


def test_leader_that_lost_its_lease_stands_by(tmp_path, caplog):
    scheduler = Scheduler(app=celery_app, schedule_filename=str(tmp_path / "schedule"))
    try:
        scheduler.tick()
        assert scheduler.leadership.leading
        # Its lease lapsed (a long pause) and another beat took it.
        get_store().client.delete(get_store().keys.beat_leader)
        BeatStore(get_store()).lead("other", 5000, "elsewhere", 1)
        with caplog.at_level(logging.ERROR, logger="django_heimdall"):
            scheduler.tick()
        assert not scheduler.leadership.leading
        assert any("lost the leader lease to other" in r.getMessage() for r in caplog.records)
    finally:
        scheduler.close()
    assert beat_state().leader().beat_id == "other"  # closing did not take it away


def test_database_scheduler_needs_django_celery_beat(monkeypatch):
    import django_heimdall.beat as heimdall_beat

    monkeypatch.delitem(vars(heimdall_beat), "DatabaseScheduler", raising=False)
    monkeypatch.setitem(sys.modules, "django_celery_beat.schedulers", None)
    with pytest.raises(ImportError, match=r"django-heimdall\[beat\]"):
        heimdall_beat.DatabaseScheduler  # noqa: B018


def test_lease_is_checked(settings):
    from celery import current_app

    settings.HEIMDALL = {**settings.HEIMDALL, "BEAT_LEASE": 0}
    assert [m.id for m in check_settings()] == ["heimdall.E005"]
    settings.HEIMDALL = {**settings.HEIMDALL, "BEAT_LEASE": 10}
    conf = current_app.conf  # the app the check reads, as Django's checks do
    loop = conf.beat_max_loop_interval
    conf.beat_max_loop_interval = 10
    try:
        (warning,) = check_beat()
        assert warning.id == "heimdall.W004"
        conf.beat_max_loop_interval = 3
        assert check_beat() == []
    finally:
        conf.beat_max_loop_interval = loop


def apply_due(scheduler, name, task, args, options):
    """Add entry ``name`` to ``scheduler``, due now, and apply it as beat would."""
    entry = scheduler.add(
        name=name,
        task=task.name,
        schedule=1.0,
        args=args,
        options=options,
        last_run_at=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5),
    )
    scheduler.apply_entry(entry, producer=scheduler.producer)


@pytest.mark.django_db
def test_skipped_occurrence_sends_a_signal_and_no_message(tmp_path, heimdall_prefix):
    """A unique task whose lock is held: the leader claims the occurrence, logs,
    signals, and publishes nothing."""
    queue = f"{heimdall_prefix}-beat"
    held = tasks.unique_add.apply_async((1, 2), queue=queue)  # holds the lock, never runs
    scheduler = Scheduler(app=celery_app, schedule_filename=str(tmp_path / "schedule"))
    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs))

    signals.beat_skipped.connect(receiver)
    try:
        scheduler.leadership.refresh()
        apply_due(scheduler, "adder", tasks.unique_add, (1, 2), {"queue": queue})
    finally:
        signals.beat_skipped.disconnect(receiver)
        scheduler.close()
    assert len(messages(queue)) == 1  # only the holder's own message
    ((sender, kwargs),) = received
    assert sender.name == tasks.unique_add.name
    assert kwargs["holder"] == held.id and kwargs["entry"] == "adder"
    (occurrence,) = beat_state().recent()
    assert (occurrence.outcome, occurrence.holder) == ("skipped", held.id)


def test_an_entry_unique_by_its_call_options_is_skipped_too(tmp_path, heimdall_prefix):
    """An entry's options go to apply_async: ``heimdall={"unique": True}`` there makes
    the occurrence unique, and it is skipped (not sent, not recorded as sent)."""
    queue = f"{heimdall_prefix}-beat"
    call = {"unique": True}
    held = tasks.digest.apply_async(("k",), queue=queue, heimdall=call)  # never runs
    scheduler = Scheduler(app=celery_app, schedule_filename=str(tmp_path / "schedule"))
    try:
        scheduler.leadership.refresh()
        apply_due(
            scheduler, "digest-entry", tasks.digest, ("k",), {"queue": queue, "heimdall": call}
        )
    finally:
        scheduler.close()
    assert len(messages(queue)) == 1  # only the holder's own message
    (occurrence,) = beat_state().recent()
    assert (occurrence.outcome, occurrence.holder) == ("skipped", held.id)


def test_occurrence_of_a_skipping_task_whose_resource_is_taken_is_not_sent(
    tmp_path, heimdall_prefix
):
    """on_busy="skip" and the resource's only ticket taken: the leader claims the
    occurrence, signals, and publishes nothing; once the ticket is free it sends."""
    from django_heimdall import mutex

    queue = f"{heimdall_prefix}-beat"
    scheduler = Scheduler(app=celery_app, schedule_filename=str(tmp_path / "schedule"))
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    def due(name):
        apply_due(scheduler, name, tasks.skips_single, ("beat",), {"queue": queue})

    signals.beat_skipped.connect(receiver)
    try:
        scheduler.leadership.refresh()
        with mutex("single"):
            due("skipper")
            assert messages(queue) == []
        due("skipper-later")
    finally:
        signals.beat_skipped.disconnect(receiver)
        scheduler.close()
    assert len(messages(queue)) == 1  # sent once the ticket was free
    (kwargs,) = received
    assert kwargs["entry"] == "skipper" and kwargs["key"] == "resource:single"
    outcomes = [(o.entry, o.outcome) for o in beat_state().recent()]
    assert ("skipper", "skipped") in outcomes and ("skipper-later", "sent") in outcomes


# -- real beat processes --------------------------------------------------------------


def test_two_beats_send_each_occurrence_once(beats, heimdall_prefix):
    queue = f"{heimdall_prefix}-beat"
    # A longer lease than the failover tests': a slow machine does not fail over here.
    env = env_for(heimdall_prefix, ping_schedule(queue), lease=6.0)
    first, second = beats(env, "a"), beats(env, "b")
    wait_until(lambda: len(messages(queue)) >= 10, timeout=60, message="10 occurrences")
    assert first.alive() and second.alive()
    times = occurrences_of(queue)
    assert len(times) >= 10
    leader = beat_state().leader()
    assert leader.pid in (first.pid, second.pid)
    standby = second if leader.pid == first.pid else first
    assert "standing by" in standby.log()
    assert set(by_beat().values()) == {leader.beat_id}


def two_beats_sending(beats, prefix):
    """Two beats with a 1-second entry, once three occurrences were sent: the queue,
    the leader's ``BeatLeader``, its process and the other one."""
    queue = f"{prefix}-beat"
    env = env_for(prefix, ping_schedule(queue))
    first, second = beats(env, "a"), beats(env, "b")
    wait_until(lambda: len(messages(queue)) >= 3, timeout=60, message="3 occurrences")
    leader = beat_state().leader()
    if leader.pid == first.pid:
        return queue, leader, first, second
    return queue, leader, second, first


def test_standby_takes_over_when_the_leader_is_killed(beats, heimdall_prefix):
    queue, old, killed, survivor = two_beats_sending(beats, heimdall_prefix)
    os.kill(killed.pid, signal.SIGKILL)
    killed.process.wait()
    sent_before = len(messages(queue))

    def survivor_sent_three():
        senders = by_beat()
        last_old = max((t for t, b in senders.items() if b == old.beat_id), default=0)
        return sum(b != old.beat_id for t, b in senders.items() if t > last_old) >= 3

    wait_until(survivor_sent_three, timeout=60, message="the standby to send")
    assert survivor.alive()
    times = occurrences_of(queue)  # nothing sent twice across the failover
    senders = by_beat()
    new = beat_state().leader()
    assert new.pid == survivor.pid and new.beat_id != old.beat_id
    old_times = [t for t in times if senders.get(t) == old.beat_id]
    assert old_times, "the killed leader sent nothing"
    # After the killed leader's last occurrence, only the survivor sent.
    later = [senders.get(t) for t in times if t > max(old_times)]
    assert len(later) >= 3 and set(later) == {new.beat_id}
    assert len(times) >= sent_before + 3
    # The survivor took over because the killed leader's lease lapsed (no resign).
    assert new.since.timestamp() * 1000 > max(old_times)


def test_paused_leader_resumes_as_standby_and_nothing_is_sent_twice(beats, heimdall_prefix):
    """A leader frozen past its lease (a paused VM, a stop-the-world pause) wakes up
    believing it leads: its claims are refused and it stands by."""
    queue, old, paused, survivor = two_beats_sending(beats, heimdall_prefix)
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: (beat_state().leader() or old).beat_id != old.beat_id,
            timeout=60,
            message="the standby to take over",
        )
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    new = beat_state().leader()
    wait_until(lambda: "lost the leader lease" in paused.log(), timeout=60, message="the step-down")
    resumed_at = len(messages(queue))
    wait_until(lambda: len(messages(queue)) >= resumed_at + 3, timeout=60, message="3 more")
    assert paused.alive() and survivor.alive()
    times = occurrences_of(queue)  # nothing sent twice across the pause
    senders = by_beat()
    last_old = max(t for t, b in senders.items() if b == old.beat_id)
    assert {b for t, b in senders.items() if t > last_old} == {new.beat_id}
    assert beat_state().leader().beat_id == new.beat_id
    assert len(times) >= resumed_at + 3


def test_unique_periodic_task_is_not_sent_while_it_runs(
    beats, heimdall_prefix, worker_process, open_gate
):
    queue = f"{heimdall_prefix}-q"
    worker_process(pool="threads", concurrency=2)
    schedule = {
        "blocking": {
            "task": tasks.unique_blocking.name,
            "schedule": 1.0,
            "args": ["beat"],
            "options": {"queue": queue},
        }
    }
    process = beats(env_for(heimdall_prefix, schedule), "a")

    def skipped():
        return [o for o in beat_state().recent() if o.outcome == "skipped"]

    wait_until(lambda: len(skipped()) >= 3, timeout=60, message="3 skipped occurrences")
    runs = tasks.records("unique_blocking")
    assert len(runs) == 1  # sent once; every later occurrence while it runs was skipped
    assert {o.holder for o in skipped()} == {runs[0]["id"]}
    assert "still holds its unique lock" in process.log()
    open_gate("beat")
    wait_until(
        lambda: len(tasks.records("unique_blocking")) >= 2, timeout=60, message="a second run"
    )
    sent = [o for o in beat_state().recent() if o.outcome == "sent"]
    assert len(sent) >= 2  # sent again once the first run released its lock


def test_leader_survives_its_redis_going_away_and_leads_again(beats, heimdall_prefix):
    queue = f"{heimdall_prefix}-beat"
    server = EmbeddedRedis().start()  # the lease's Redis; the broker stays up
    try:
        env = env_for(heimdall_prefix, ping_schedule(queue), cache=server.url)
        process = beats(env, "a")
        wait_until(lambda: len(messages(queue)) >= 2, timeout=60, message="2 occurrences")
        server.stop()
        wait_until(
            lambda: "cannot reach the leader lease" in process.log(),
            timeout=60,
            message="the leader to step down",
        )
        stalled = len(messages(queue))
        server.start()
        wait_until(lambda: len(messages(queue)) >= stalled + 2, timeout=60, message="sends")
        assert process.alive()
        log = process.log()  # led, stood by, led again
        assert log.index("cannot reach the leader lease") < log.rindex("leading (lease")
        occurrences_of(queue)
    finally:
        server.stop()


def run_django(env, *args):
    subprocess.run(
        [sys.executable, "-m", "django", *args], env=env, cwd=ROOT, check=True, timeout=120
    )


def test_database_scheduler_sends_a_periodic_task_row_once_with_two_beats(
    beats, heimdall_prefix, tmp_path
):
    queue = f"{heimdall_prefix}-beat"
    env = env_for(heimdall_prefix, database=str(tmp_path / "beat.sqlite3"))
    run_django(env, "migrate", "-v", "0", "--skip-checks")
    row = (
        "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
        "every, _ = IntervalSchedule.objects.get_or_create(every=1, period='seconds')\n"
        "PeriodicTask.objects.update_or_create(name='db-ping', defaults=dict("
        f"task='tests.beat.ping', interval=every, queue={queue!r}, args=%r))\n"
    )
    run_django(env, "shell", "-c", row % '["first"]')
    scheduler = "django_heimdall.beat:DatabaseScheduler"
    first = beats(env, "a", scheduler=scheduler)
    second = beats(env, "b", scheduler=scheduler)
    wait_until(lambda: len(messages(queue)) >= 5, timeout=60, message="5 occurrences")
    run_django(env, "shell", "-c", row % '["second"]')  # a change to the row is picked up
    wait_until(
        lambda: sum(args == ["second"] for _tag, args in messages(queue)) >= 3,
        timeout=60,
        message="the changed row to be sent",
    )
    assert first.alive() and second.alive()
    occurrences_of(queue)
    assert len(set(by_beat().values())) == 1


def test_command_prints_the_leader_and_recent_occurrences(capsys, redis_client):
    store = BeatStore(get_store())
    store.lead("host:1:abc", 5000, "host", 1)
    sec, _usec = redis_client.time()
    store.claim("host:1:abc", "ping", sec * 1000, "tests.beat.ping")
    call_command("heimdall", "beat")
    out = capsys.readouterr().out
    assert "Leader: host:1:abc  host=host  pid=1" in out
    assert "sent     ping (tests.beat.ping)  by host:1:abc" in out
    call_command("heimdall", "beat", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["leader"]["pid"] == 1 and data["recent"][0]["outcome"] == "sent"


def test_admin_shows_the_beat_leader_and_recent_occurrences(admin_client, redis_client):
    from django.urls import reverse

    url = reverse("admin:heimdall_beatleader_changelist")
    assert "No beat leads" in admin_client.get(url).content.decode()
    store = BeatStore(get_store())
    store.lead("ops-1:4242:abc", 5000, "ops-1", 4242)
    sec, _usec = redis_client.time()
    store.claim("ops-1:4242:abc", "nightly-report", sec * 1000, "shop.tasks.report")
    page = admin_client.get(url).content.decode()
    assert "ops-1" in page and "4242" in page
    assert "nightly-report" in page and "shop.tasks.report" in page


def test_admin_page_says_when_redis_is_down(admin_client, private_redis):
    from django.urls import reverse

    private_redis.stop()
    response = admin_client.get(reverse("admin:heimdall_beatleader_changelist"))
    assert response.status_code == 200
    assert "Redis is unreachable" in response.content.decode()
