"""Tasks the tests run on real workers. They record what happened in Redis,
under the test's key prefix, so that worker threads and processes can report."""

import json
import os
import time

from celery import shared_task
from django_redis import get_redis_connection

from django_heimdall import (
    AlreadyQueuedError,
    HeimdallTask,
    RateLimit,
    ResourceBusy,
    locked,
    semaphore,
)
from django_heimdall.conf import heimdall_settings
from django_heimdall.keys import identity
from django_heimdall.store import get_store


def redis():
    # Always the shared server, even when a test points HEIMDALL at a private one.
    return get_redis_connection("default")


def record_key(name):
    return f"{heimdall_settings.KEY_PREFIX}:test:{name}"


def record(_name, **data):
    redis().rpush(record_key(_name), json.dumps(data))


def records(name):
    return [json.loads(item) for item in redis().lrange(record_key(name), 0, -1)]


def gate_key(name):
    return f"{heimdall_settings.KEY_PREFIX}:gate:{name}"


def wait_for_gate(name, timeout=30):
    deadline = time.monotonic() + timeout
    while not redis().exists(gate_key(name)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {name} never opened")
        time.sleep(0.02)


def redis_time_us():
    sec, usec = redis().time()
    return sec * 1_000_000 + usec


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def unique_add(self, x, y=0):
    record("unique_add", id=self.request.id, x=x, y=y)
    return x + y


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def unique_blocking(self, name):
    """Runs until the test opens the gate ``name``."""
    record("unique_blocking", id=self.request.id, name=name)
    wait_for_gate(name)
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_raises": True})
def unique_raising(self, name):
    wait_for_gate(name)
    return name


@shared_task(base=HeimdallTask, bind=True, max_retries=5, heimdall={"unique": True})
def unique_retrying(self, name):
    """Retries twice, checking at every attempt that it still holds its lock."""
    ident = identity(self, self.heimdall_policy, self.request.args, self.request.kwargs)
    record(
        "unique_retrying",
        id=self.request.id,
        retries=self.request.retries,
        holder=get_store().holder(ident.lock),
    )
    if self.request.retries < 2:
        raise self.retry(countdown=0.1)
    return self.request.retries


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def unique_failing(self, name):
    record("unique_failing", id=self.request.id)
    raise ValueError(f"boom {name}")


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"unique": True, "unique_timeout": 3, "unique_wait_for_expiry": True},
)
def unique_interval(self, name):
    record("unique_interval", id=self.request.id)
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def unique_typed(self, when, ident, amount, extra=None):
    """Reports the lock identity the worker computes from the deserialised message."""
    computed = identity(self, self.heimdall_policy, self.request.args, self.request.kwargs)
    record(
        "unique_typed",
        id=self.request.id,
        lock=computed.lock,
        types=[type(when).__name__, type(ident).__name__, type(amount).__name__],
    )
    return computed.lock


@shared_task(bind=True)
def plain_record(self, value):
    record("plain_record", id=self.request.id, value=value)
    return value


@shared_task(
    base=HeimdallTask, bind=True, max_retries=0, heimdall={"rate_limit": RateLimit((10, 2))}
)
def limited_10_per_2s(self, n):
    """Records its start on the Redis clock and its retry count."""
    record(
        "limited",
        id=self.request.id,
        n=n,
        t=self.request.heimdall_started_at,
        now=redis_time_us(),
        retries=self.request.retries,
    )
    return n


@shared_task(base=HeimdallTask, bind=True, max_retries=1, heimdall={"rate_limit": "1/s"})
def limited_retrying(self, name):
    """Records its admission; "retry-once" retries at once on its first run."""
    record(
        "limited_retrying",
        name=name,
        retries=self.request.retries,
        t=self.request.heimdall_started_at,
    )
    if name == "retry-once" and not self.request.retries:
        raise self.retry(countdown=0)
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"rate_limit": "3/s"})
def limited(self, n):
    """Rate set per test through HEIMDALL['TASKS'] (a settings layer above '3/s')."""
    record(
        "limited",
        id=self.request.id,
        n=n,
        t=self.request.heimdall_started_at,
        retries=self.request.retries,
        slot=getattr(self.request, "heimdall_slot", None),
    )
    return n


@shared_task(base=HeimdallTask, bind=True, heimdall={"rate_limit": "5/s"})
def backlog_limited(self, n):
    """For worker processes, which do not see a test's settings: the limit is here."""
    record(
        "backlog",
        n=n,
        t=self.request.heimdall_started_at,
        slot=getattr(self.request, "heimdall_slot", None),
    )
    return n


@shared_task(bind=True)
def warm_up(self):
    """Makes a pool process connect and resolve policies before a measured run."""
    backlog_limited.heimdall_policy  # noqa: B018
    get_store().client.ping()
    time.sleep(0.3)
    record("warm_up", pid=os.getpid())


@shared_task(base=HeimdallTask, bind=True, track_started=True, heimdall={"rate_limit": "1/2s"})
def tracked_limited(self, n):
    return n


@shared_task(base=HeimdallTask, bind=True, heimdall={"times": 2, "per": 1})
def legacy_limited(self, n):
    """celery-heimdall's spelling of a rate limit."""
    record("legacy_limited", n=n, t=self.request.heimdall_started_at)
    return n


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "lock_prefix": "h-lock:"})
def unique_prefixed(self, name):
    wait_for_gate(name)
    return name


@shared_task(base=HeimdallTask, bind=True)
def digest(self, key):
    """celery-heimdall's ``self.only_after`` inside a body."""
    return self.only_after(f"digest-{key}", 60)


def per_customer_rate(key, args):
    # A dynamic, per-key limit: customer 1 is premium.
    return (4, 1) if args[0] == 1 else (1, 1)


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={
        "rate_limit": RateLimit(per_customer_rate),
        "key": lambda args, kwargs: f"customer-{args[0]}",
    },
)
def limited_per_customer(self, customer, n):
    record(
        "per_customer",
        id=self.request.id,
        customer=customer,
        n=n,
        t=self.request.heimdall_started_at,
    )
    return n


@shared_task(
    base=HeimdallTask,
    bind=True,
    max_retries=0,
    heimdall={"unique": True, "rate_limit": RateLimit((1, 1))},
)
def unique_and_limited(self, name):
    record(
        "unique_and_limited",
        id=self.request.id,
        name=name,
        t=self.request.heimdall_started_at,
        retries=self.request.retries,
    )
    return name


def report_key(args, kwargs):
    return f"report-{args[0]}"


@shared_task(base=HeimdallTask, bind=True)
def configured_in_settings(self, customer, fmt="pdf"):
    """No decorator options: tests configure it through HEIMDALL['TASKS']."""
    record("configured_in_settings", id=self.request.id)
    wait_for_gate(f"configured-{customer}")
    return customer


@shared_task
def collect(results):
    record("collect", results=results)
    return results


def identity_of(task, *args, **kwargs):
    """The lock identity of one call, as the task computes it."""
    return identity(task, task.heimdall_policy, args, kwargs).lock


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def unique_heartbeat(self, name, beats=6):
    """Outlives its (short) lease by renewing it, recording the holder each time."""
    for _ in range(beats):
        renewed = self.heimdall_heartbeat()
        record(
            "unique_heartbeat",
            renewed=renewed,
            holder=get_store().holder(identity_of(self, name, beats=beats)),
            id=self.request.id,
        )
        time.sleep(0.4)
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def unique_crashing(self, name):
    """Kills its own worker process (only ever run on a prefork worker process)."""
    import os
    import signal

    record("unique_crashing", id=self.request.id, pid=os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_on": ["region"]})
def unique_kwargs(self, customer, **options):
    """unique_on names an argument caught by **options."""
    return customer


@shared_task(bind=True)
def plain_configured(self):
    """A plain Celery task that settings try to configure (W002)."""


def flaky_key(args, kwargs):
    """A key function whose backing service fails once the test opens a gate."""
    if redis().exists(gate_key("flaky-key")):
        raise RuntimeError("key service down")
    return f"flaky-{args[0]}"


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "key": flaky_key})
def unique_flaky_key(self, n):
    record("unique_flaky_key", id=self.request.id)


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "key": flaky_key})
def unique_flaky_blocking(self, n):
    """Runs until the test opens the gate ``flaky-block``."""
    record("unique_flaky_blocking", id=self.request.id)
    wait_for_gate("flaky-block")
    return n


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_timeout": 1})
def unique_short_lease(self, name):
    record("unique_short_lease", id=self.request.id)


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def unique_sleepy(self, name):
    """Records its start and end on the Redis clock around a short sleep."""
    start = redis_time_us()
    time.sleep(0.3)
    record("unique_sleepy", id=self.request.id, start=start, end=redis_time_us())
    return name


@shared_task(base=HeimdallTask, bind=True, throws=(KeyError,), heimdall={"unique": True})
def unique_with_throws(self):
    return None


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"unique": True, "unique_timeout": 600, "unique_wait_for_expiry": True},
)
def interval_crashing(self, name):
    """An "at most once per interval" task that kills its own worker process."""
    import os
    import signal

    record("interval_crashing", id=self.request.id)
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(
    base=HeimdallTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    heimdall={"unique": True},
)
def unique_crashing_once(self, name):
    """Kills its own worker process on its first run; Celery then redelivers it."""
    import os
    import signal

    record("unique_crashing_once", id=self.request.id)
    if len(records("unique_crashing_once")) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return name


@shared_task(base=HeimdallTask, bind=True, acks_late=True, heimdall={"unique": True})
def unique_rejecting_once(self, name):
    """Rejects itself back to the queue on its first run."""
    from celery.exceptions import Reject

    lock = identity(self, self.heimdall_policy, (name,), {}).lock
    record("unique_rejecting_once", id=self.request.id, holder=get_store().holder(lock))
    if len(records("unique_rejecting_once")) == 1:
        raise Reject("not yet", requeue=True)
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_until": "started"})
def self_rescheduling(self, name, times=3):
    """Re-schedules itself from its body, the pattern that used to stop itself."""
    runs = len(records("self_rescheduling")) + 1
    record("self_rescheduling", id=self.request.id, run=runs)
    if runs < times:
        self.apply_async((name, times), countdown=0.2)


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_until": "started"})
def started_blocking(self, name):
    record("started_blocking", id=self.request.id)
    wait_for_gate(name)


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"unique": True, "unique_on": ["customer"], "on_duplicate": "replace"},
)
def debounced(self, customer, payload):
    record("debounced", id=self.request.id, customer=customer, payload=payload)
    return payload


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"unique": True, "key": lambda customer_id, **_: f"customer-{customer_id}"},
)
def keyed_by_name(self, customer_id, note=""):
    return customer_id


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"unique": True, "unique_timeout": 2, "heartbeat": True},
)
def auto_heartbeat(self, name, seconds=6.0):
    """Outlives its 2 s lease with heartbeat=True, recording the holder as it goes."""
    lock = identity(self, self.heimdall_policy, (name,), {"seconds": seconds}).lock
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record("auto_heartbeat", id=self.request.id, holder=get_store().holder(lock))
        time.sleep(0.5)
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_until": "expired"})
def eager_interval(self, name):
    record("eager_interval", id=self.request.id)
    return name


def record_run(name, task, **data):
    """Records a body's start and end on the Redis clock around a short sleep."""
    start = redis_time_us()
    time.sleep(data.pop("hold", 0.05))
    record(name, id=task.request.id, start=start, end=redis_time_us(), **data)


@shared_task(base=HeimdallTask, bind=True, max_retries=0, heimdall={"concurrency_limit": 2})
def two_at_a_time(self, n):
    record_run("two_at_a_time", self, n=n, retries=self.request.retries, hold=0.1)
    return n


@shared_task(base=HeimdallTask, bind=True, max_retries=0, heimdall={"resources": ["shared"]})
def uses_shared(self, n):
    record_run("shared", self, n=n, kind="a", hold=0.08)
    return n


@shared_task(
    base=HeimdallTask,
    bind=True,
    max_retries=0,
    heimdall={"resources": {"shared": 1}, "concurrency_limit": 3},
)
def also_uses_shared(self, n):
    record_run("shared", self, n=n, kind="b", hold=0.05)
    return n


@shared_task(base=HeimdallTask, bind=True, heimdall={"resources": ["single"]})
def holds_single(self, name):
    """Holds the one ticket of resource 'single' until the test opens gate ``name``."""
    record("single", id=self.request.id, task="holder", t=redis_time_us())
    wait_for_gate(name)
    record("single", id=self.request.id, task="holder-end", t=redis_time_us())
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"resources": ["single"], "on_busy": "skip"})
def skips_single(self, name):
    record("single", id=self.request.id, task="skipper", t=redis_time_us())
    return name


@shared_task(base=HeimdallTask, bind=True, max_retries=0, heimdall={"resources": ["single"]})
def defers_single(self, name):
    record(
        "single",
        id=self.request.id,
        task="deferred",
        t=redis_time_us(),
        retries=self.request.retries,
    )
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"concurrency_limit": 1})
def slot_crashing(self, name):
    """Kills its own worker process while holding its slot (prefork only)."""
    import os
    import signal

    record("slot_crashing", id=self.request.id)
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(bind=True, max_retries=0)
@locked("plain-locked")
def plain_locked(self, n):
    record("locked", id=self.request.id, n=n, retries=self.request.retries, kind="plain")
    return n


@shared_task(bind=True)
@locked("locked-twins", capacity=10)
def locked_sleepy(self, name):
    """Records its start and end on the Redis clock around a short sleep."""
    start = redis_time_us()
    time.sleep(0.3)
    record("locked_sleepy", id=self.request.id, start=start, end=redis_time_us())
    return name


@shared_task(base=HeimdallTask, bind=True, max_retries=0)
@locked("heimdall-locked")
def heimdall_locked(self, n):
    record("locked", id=self.request.id, n=n, retries=self.request.retries, kind="heimdall")
    return n


@shared_task(base=HeimdallTask, bind=True, heimdall={"heartbeat": True})
@locked("heartbeat-locked", lease=1.5)
def locked_heartbeat(self, seconds=5.0):
    """Holds @locked's ticket (1.5 s lease) for longer, with heartbeat=True; records,
    every half second, whether another holder could take the ticket meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            with semaphore("heartbeat-locked", 1, lease=0.1):
                taken = True
        except ResourceBusy:
            taken = False
        record("locked_heartbeat", taken=taken)
    return "done"


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"concurrency_limit": 1, "unique_timeout": 1},
)
def slot_heartbeat(self, beats=5):
    """Outlives its 1 s lease by renewing lock-less slot leases."""
    renewed = []
    for _ in range(beats):
        time.sleep(0.4)
        renewed.append(self.heimdall_heartbeat())
    record("slot_heartbeat", id=self.request.id, renewed=renewed)
    return renewed


@shared_task(base=HeimdallTask, bind=True, max_retries=0, heimdall={"concurrency_limit": 2})
def slow_two_at_a_time(self, n):
    """Holds its slot long enough that waiters are sent away, not waited for in place."""
    record_run("slow_two_at_a_time", self, n=n, retries=self.request.retries, hold=0.7)
    return n


@shared_task(base=HeimdallTask, bind=True, heimdall={"concurrency_limit": 1, "unique_timeout": 2})
def slot_sleeper(self):
    """Holds its slot (2 s lease, no heartbeat) until its worker is killed."""
    import os

    record("slot_sleeper", id=self.request.id, pid=os.getpid(), t=self.request.heimdall_started_at)
    time.sleep(60)


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_on": ["name"]})
def unique_replaced(self, name, into=""):
    """Replaces itself (``Task.replace``), the replacement sent 2 s later: with
    ``unique_replacement`` ("other"), with itself under the same key ("self") or under
    another key ("next"). A replacement returns its name."""
    if into == "other":
        return self.replace(unique_replacement.s(name).set(countdown=2))
    if into:
        successor = name if into == "self" else f"{name}-next"
        return self.replace(unique_replaced.s(successor).set(countdown=2))
    return name


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def unique_replacement(self, name):
    return name


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"unique": True, "unique_on": ["name"], "unique_until": "expired"},
)
def kept_replaced(self, name):
    """At most once an interval per name; replaced by unique_replacement 3 s later."""
    return self.replace(unique_replacement.s(name).set(countdown=3))


@shared_task(base=HeimdallTask, bind=True, max_retries=1)
def replace_or_retry(self, name):
    """Replaces itself with unique_raising(name); retries if that key is taken."""
    record("replace_or_retry", retries=self.request.retries, lock=self.request.heimdall_lock)
    if self.request.retries:
        return name
    try:
        return self.replace(unique_raising.s(name))
    except AlreadyQueuedError:
        raise self.retry(countdown=0.2) from None


class SlowlyReplaced(HeimdallTask):
    """A moment passes between the replacement's publish and the replaced
    execution's end (a busy process, a slow round trip)."""

    def on_replace(self, sig):
        try:
            return super().on_replace(sig)
        finally:
            time.sleep(0.5)


@shared_task(base=SlowlyReplaced, bind=True, heimdall={"concurrency_limit": 1, "key": "slow"})
def limited_replaced(self, name, again=True):
    """Concurrency-limited; replaces itself once (same slot holder: the task id)."""
    if again:
        return self.replace(limited_replaced.s(name, False))
    return name
