"""Signals sent by django-heimdall. The sender is always the task object.

* ``lock_acquired(task_id, key)`` — a unique lock was taken.
* ``duplicate_blocked(task_id, holder, key, stage)`` — a copy was refused; ``stage``
  is ``"enqueue"`` (not published) or ``"start"`` (reached a worker, did not run).
* ``lock_released(task_id, key)`` — the owner gave its lock back.
* ``throttled(task_id, key, countdown)`` — a start was over a rate limit and deferred.
* ``busy(task_id, resource, countdown, action)`` — a start found a concurrency slot or
  resource ticket taken: ``action`` is ``"defer"`` (it waits in line and comes back in
  about ``countdown`` seconds) or ``"skip"`` (it does not run).
* ``beat_skipped(entry, occurrence, holder, key)`` — beat did not send an occurrence
  (``occurrence``: its fire time, ms since the epoch) of periodic task ``entry``: the
  unique lock ``key`` is held by task ``holder``.

``overrides_changed`` (sender: the ``PolicyOverride`` model) is internal: a bulk
change of overrides that sends no model signal.
"""

from django.dispatch import Signal

lock_acquired = Signal()
duplicate_blocked = Signal()
lock_released = Signal()
throttled = Signal()
busy = Signal()
beat_skipped = Signal()
overrides_changed = Signal()
