from tests.tasks import unique_blocking, records
from tests.conftest import wait_until

def test_smoke(celery_worker, open_gate):
    r1 = unique_blocking.delay("a")
    r2 = unique_blocking.delay("a")
    assert r1.id == r2.id
    wait_until(lambda: records("unique_blocking"))
    open_gate("a")
    assert r1.get(timeout=10) == "a"
    r3 = unique_blocking.delay("a")
    assert r3.id != r1.id
    open_gate("a")
    assert r3.get(timeout=10) == "a"
