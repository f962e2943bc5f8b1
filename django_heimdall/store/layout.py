"""Names of every Redis key, under one ``{prefix}`` hash tag.

All keys of one prefix hash to one slot, so every script (which may touch a lock,
its task's index and several rate logs at once) works unchanged on Redis Cluster.
Django cache keys look like ``<prefix>:<version>:<key>``; ours start with ``{``.
"""

from __future__ import annotations


class Layout:
    """Key names of one prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.tag = "{" + prefix + "}"

    def lock(self, identity: str) -> str:
        return f"{self.tag}:lock:{identity}"

    def identity_of(self, lock_key: str) -> str:
        return lock_key[len(self.tag) + len(":lock:") :]

    @property
    def index_prefix(self) -> str:
        return f"{self.tag}:locks:"

    def index(self, task_name: str) -> str:
        return f"{self.index_prefix}{task_name}"

    @property
    def tasks(self) -> str:
        return f"{self.tag}:tasks"

    @property
    def owner_prefix(self) -> str:
        return f"{self.tag}:owner:"

    def owner(self, task_id: str) -> str:
        return f"{self.owner_prefix}{task_id}"

    def lock_keys(self, identity: str, task_name: str, owner: str) -> list[str]:
        """The keys of one lock, in the order the lock scripts take them."""
        return [self.lock(identity), self.index(task_name), self.tasks, self.owner(owner)]

    @property
    def rate_prefix(self) -> str:
        # Admissions of a rate-limit key (a zset; the list of earlier snapshots was
        # named ":rate:", so a leftover of that type is never read, just expires).
        return f"{self.tag}:admitted:"

    def rate(self, identity: str) -> str:
        return f"{self.rate_prefix}{identity}"

    @property
    def rate_queue_prefix(self) -> str:
        return f"{self.tag}:rateq:"

    def rate_queue(self, identity: str) -> str:
        """Reservations of the waiters of one rate-limit key (zset: task id -> slot)."""
        return f"{self.rate_queue_prefix}{identity}"

    @property
    def rates(self) -> str:
        return f"{self.tag}:rates"

    @property
    def rate_details(self) -> str:
        return f"{self.tag}:rates:details"

    def after(self, key: str) -> str:
        """The marker of ``only_after(key, ...)``."""
        return f"{self.tag}:after:{key}"

    @property
    def key_tag(self) -> str:
        """What scripts put in front of a name to build a key of this prefix."""
        return f"{self.tag}:"

    def semaphore(self, name: str) -> list[str]:
        """The keys of semaphore ``name``: holders, line, details (the order scripts take)."""
        return [f"{self.tag}:semh:{name}", f"{self.tag}:semw:{name}", f"{self.tag}:semd:{name}"]

    @property
    def semaphores(self) -> str:
        return f"{self.tag}:sems"

    @property
    def semaphore_sequence(self) -> str:
        return f"{self.tag}:sems:seq"

    def slots(self, holder: str) -> str:
        """What one holder (a task id) holds or waits for, for its release."""
        return f"{self.tag}:slots:{holder}"

    def reserved(self, task_id: str) -> str:
        """Pointer to the reservations zset in which a waiting task holds its
        rate-limit slot, so that its release takes it out of the line."""
        return f"{self.tag}:reserved:{task_id}"

    @property
    def overrides(self) -> str:
        return f"{self.tag}:overrides"

    @property
    def overrides_version(self) -> str:
        return f"{self.tag}:overrides:version"

    @property
    def beat_leader(self) -> str:
        return f"{self.tag}:beat:leader"

    @property
    def beat_claims(self) -> str:
        return f"{self.tag}:beat:claimed"

    @property
    def beat_claim_ends(self) -> str:
        return f"{self.tag}:beat:claimed:ends"

    @property
    def beat_history(self) -> str:
        return f"{self.tag}:beat:history"
