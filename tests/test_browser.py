"""The admin pages in a real browser: log in, release a lock through the
confirmation page, and look at the effective policies. The demo page against the
running demo: its timelines render and update while tasks run.

Runs headless Chromium through Debian's ``chromium`` and ``chromium-driver``
packages; nothing is downloaded. Without them the test is skipped, unless
``HEIMDALL_REQUIRE_BROWSER=1`` (set by CI), which makes it fail instead.

Screenshots go to the test's temporary directory. The ones in the docs are taken
on purpose, at 1280 px wide with the admin's sidebar open::

    HEIMDALL_SCREENSHOTS=docs/screenshots .venv/bin/pytest tests/test_browser.py
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest
import redis
from django.urls import reverse

from django_heimdall.models import PolicyOverride
from django_heimdall.store import Acquired, get_store
from tests.conftest import wait_until
from tests.test_demo import running_demo

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Only localhost is reachable: without these, Chromium waits on refused connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",  # a laptop screen
)
WAIT = 60  # seconds; only bounds a hang (CI machines can be slow and busy)


def _unavailable(reason):
    """Skip on a developer machine; fail where a browser is required (CI)."""
    if os.environ.get("HEIMDALL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (HEIMDALL_REQUIRE_BROWSER=1 requires the browser test to run)")
    pytest.skip(reason)


@pytest.fixture
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        _unavailable(
            f"{' and '.join(missing)} not found; install Debian's packages with "
            "'apt-get install chromium chromium-driver'"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed; install the 'dev' extra")

    with tempfile.TemporaryDirectory(
        prefix="heimdall-chromium-", ignore_cleanup_errors=True
    ) as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        # An explicit driver path: Selenium Manager never runs or downloads anything.
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()


def hold(task, owner, arguments):
    preview = json.dumps(arguments, sort_keys=True, separators=(",", ":"))
    identity = f"{task}:{hashlib.sha1(preview.encode()).hexdigest()}"
    assert get_store().acquire(identity, owner, 600_000, task, preview).status == Acquired.TAKEN
    return identity


def click_and_wait(driver, by, selector):
    """Click a submit button and wait until its page is gone."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    button = driver.find_element(by, selector)
    button.click()
    WebDriverWait(driver, WAIT).until(ec.staleness_of(button))


@pytest.fixture
def screenshot(tmp_path):
    """Save a screenshot under ``$HEIMDALL_SCREENSHOTS`` when set (the docs' pictures),
    otherwise in the test's temporary directory: a test run never changes the checkout."""
    folder = Path(os.environ.get("HEIMDALL_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def save(driver, name):
        assert driver.save_screenshot(str(folder / name)), name

    return save


def test_release_a_lock_in_the_browser(
    browser, screenshot, live_server, transactional_db, django_user_model
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    kept_owner = "0b7d5c1e-6f0a-4c55-9a3e-2d8f4b1c7e90"
    released_owner = "f3a9e2c4-1d7b-4e8a-b5c6-9e0f1a2b3c4d"
    kept = hold("tests.tasks.unique_add", kept_owner, {"x": 1, "y": 2})
    released = hold("tests.tasks.unique_add", released_owner, {"x": "<b>bold</b>", "y": 0})

    # Log in through the form.
    browser.get(f"{live_server.url}{reverse('admin:login')}")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("pw")
    click_and_wait(browser, By.CSS_SELECTOR, "#login-form [type=submit]")
    wait.until(ec.presence_of_element_located((By.ID, "user-tools")))

    # The locks page lists both holders; the argument preview is escaped text.
    browser.get(f"{live_server.url}{reverse('admin:heimdall_lock_changelist')}")
    table = wait.until(ec.presence_of_element_located((By.ID, "result_list")))
    # The admin's default: the app list (sidebar) is open, as a new user sees it.
    assert browser.find_element(By.ID, "nav-sidebar").is_displayed()
    assert kept_owner in table.text
    assert released_owner in table.text
    assert "<b>bold</b>" in table.text
    assert not table.find_elements(By.TAG_NAME, "b")
    assert browser.find_element(By.ID, "changelist-filter").is_displayed()
    screenshot(browser, "locks.png")

    # Select one lock, release it, confirm.
    boxes = {
        json.loads(box.get_attribute("value"))[1]: box
        for box in browser.find_elements(By.CSS_SELECTOR, "input[name=selected]")
    }
    assert set(boxes) == {kept_owner, released_owner}
    boxes[released_owner].click()
    assert boxes[released_owner].is_selected()
    Select(browser.find_element(By.NAME, "action")).select_by_value("release")
    click_and_wait(browser, By.CSS_SELECTOR, "#changelist-form .actions button[type=submit]")
    wait.until(ec.title_contains("Are you sure?"))
    content = browser.find_element(By.ID, "content")
    assert "Are you sure?" in content.text
    assert released_owner in content.text
    assert kept_owner not in content.text
    screenshot(browser, "confirm.png")
    click_and_wait(browser, By.CSS_SELECTOR, 'input[type=submit][value="Yes, I\'m sure"]')

    # Back on the locks page: only the other lock is left, in the browser and in Redis.
    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    assert "1 lock released." in message.text
    table = browser.find_element(By.ID, "result_list")
    assert kept_owner in table.text
    assert released_owner not in browser.page_source
    assert get_store().holder(released) is None
    assert get_store().holder(kept) == kept_owner

    # The effective policies, with an admin override.
    PolicyOverride.objects.create(task_name="tests.tasks.limited", options={"rate_limit": "7/m"})
    from django_heimdall.overrides import source

    source.reset()
    browser.get(f"{live_server.url}{reverse('admin:heimdall_policyoverride_effective')}")
    main = wait.until(ec.presence_of_element_located((By.ID, "content-main")))
    assert "tests.tasks.limited" in main.text
    assert "7/60s" in main.text
    screenshot(browser, "effective-policies.png")


DEMO_ROWS = """
return Array.from(document.querySelectorAll(`#chart-${arguments[0]} svg g.row`), row => ({
  class: row.getAttribute("class"),
  text: Array.from(row.querySelectorAll(":scope > text"), text => text.textContent).join(" | "),
  runs: row.querySelectorAll("rect.run").length,
  waits: row.querySelectorAll("rect.wait").length,
  calls: row.querySelectorAll("line.call").length,
}));
"""


def test_demo_page_draws_live_timelines(browser, screenshot, tmp_path):
    """The real demo (worker, beat, web server): every demo has a chart, the charts
    update while tasks run, duplicates collapse onto one bar, throttled tasks wait,
    beat's leader and the periodic task are shown, and data stays text."""
    from selenium.webdriver.common.by import By

    def rows(slug):
        """The rows of one chart, read at once: the page redraws them every second."""
        return browser.execute_script(DEMO_ROWS, slug)

    def chart_text(slug):
        return browser.find_element(By.ID, f"chart-{slug}").text

    with running_demo(tmp_path) as demo:
        # A call whose label and id are markup: drawn as text, never as elements.
        client = redis.Redis.from_url(demo.redis_url)
        seconds, micros = client.time()
        hostile = json.dumps(
            {
                "demo": "sync",
                "lane": "sync",
                "label": "<b>bold</b>",
                "id": '<img src=x onerror="window.injected=1">',
                "at_us": seconds * 1_000_000 + micros,
                "note": "new task",
            }
        )
        calls = "example:1:demo:calls"  # example_project/demo/timeline.py's CALLS
        client.lpush(calls, hostile)

        browser.get(demo.url)
        wait_until(
            lambda: browser.find_elements(By.ID, "charts"), timeout=WAIT, message="demo page"
        )
        sections = browser.find_elements(By.CSS_SELECTOR, "section.demo")
        assert len(sections) >= 7
        wait_until(
            lambda: (
                len(browser.find_elements(By.CSS_SELECTOR, "section.demo .chart svg"))
                == len(sections)
            ),
            timeout=WAIT,
            message="one chart per demo",
        )
        wait_until(lambda: rows("sync"), timeout=WAIT, message="the injected row")
        assert "<b>bold</b>" in chart_text("sync")
        assert not browser.find_elements(By.CSS_SELECTOR, ".chart b, .chart img")
        assert browser.execute_script("return window.injected") is None
        client.lrem(calls, 0, hostile)
        client.close()

        # Beat's leader (host, pid, lease left) and nightly_cleanup's runs, every 5 s.
        leader = wait_until(
            lambda: (
                "pid" in browser.find_element(By.ID, "beat-leader").text
                and browser.find_element(By.ID, "beat-leader").text
            ),
            timeout=WAIT,
            message="beat leader",
        )
        assert "lease" in leader and "s left" in leader
        wait_until(lambda: rows("periodic"), timeout=WAIT, message="a nightly_cleanup run")
        assert "nightly_cleanup" in chart_text("periodic")

        for slug in ("partner", "customers", "report", "debounce", "digest", "rebuild", "render"):
            browser.find_element(By.CSS_SELECTOR, f'button[data-demo="{slug}"]').click()
            if slug == "rebuild":
                wait_until(
                    lambda: browser.find_element(By.ID, "responses-rebuild").text.count("\n") == 2,
                    timeout=WAIT,
                    message="three API answers",
                )
                assert "no answer" not in browser.find_element(By.ID, "responses-rebuild").text

        # Rate limit: six rows, the ones over the limit waiting (hollow), not started.
        wait_until(lambda: len(rows("partner")) == 6, timeout=WAIT, message="six partner calls")
        wait_until(
            lambda: "throttled, tried again in" in chart_text("partner"),
            timeout=WAIT,
            message="a throttled call shown as waiting",
        )
        throttled = [row for row in rows("partner") if "throttled" in row["text"]]
        assert throttled
        for row in throttled:  # a hollow bar from its enqueue time, no run bar
            assert "kind-waiting" in row["class"]
            assert row["waits"] == 1
            assert row["runs"] == 0
        # The chart updates while tasks run: the throttled ones start a window later.
        wait_until(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, "#chart-partner rect.run")) > 2,
            timeout=WAIT,
            message="new partner bars in the next window",
        )
        assert "limit 2 \u00b7 highest 2" in chart_text("partner")

        # Five clicks, one task id: one row with the note on it, one bar.
        wait_until(
            lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-report rect.run"),
            timeout=WAIT,
            message="the report's run",
        )
        (report,) = rows("report")
        assert "5 calls \u00b7 4\u00d7 same id as before" in report["text"]
        assert report["calls"] == 5
        assert report["runs"] == 1

        # Debounce: four replaced calls that never ran, the last one runs.
        wait_until(
            lambda: (
                len(browser.find_elements(By.CSS_SELECTOR, "#chart-debounce rect.wait.gone")) == 4
                and browser.find_elements(By.CSS_SELECTOR, "#chart-debounce rect.run")
            ),
            timeout=WAIT,
            message="a debounced run",
        )
        assert "3 calls: 202, 409, 409" in chart_text("rebuild")
        # Concurrency: twelve renders, at most two bars overlapping at any moment.
        wait_until(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, "#chart-render rect.run")) >= 3,
            timeout=WAIT,
            message="renders taking turns",
        )
        assert len(rows("render")) == 12
        assert "limit 2 \u00b7 highest 2" in chart_text("render")
        browser.find_element(By.CSS_SELECTOR, 'button[data-demo="sync"]').click()
        wait_until(
            lambda: "3 calls \u00b7 2\u00d7 same id as before" in chart_text("sync"),
            timeout=WAIT,
            message="three syncs on one id",
        )
        wait_until(
            lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-sync rect.run"),
            timeout=WAIT,
            message="the sync's run",
        )

        # The page fits a 1280 px screen.
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, height + 140)  # the whole page in one picture
        browser.execute_script("window.scrollTo(0, 0)")
        screenshot(browser, "demo.png")
