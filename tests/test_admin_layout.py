"""The admin's live pages fit a laptop: at 1280 px with the sidebar open, the
held-locks and effective-policies tables need no horizontal scrollbar."""

import pytest
from django.urls import reverse

from django_heimdall.models import PolicyOverride
from django_heimdall.store import get_store
from tests.test_browser import WAIT, browser, click_and_wait, screenshot  # noqa: F401

pytestmark = pytest.mark.browser

FITS = """
const el = document.querySelector(arguments[0]);
const page = document.documentElement;
return [el.scrollWidth, el.clientWidth, page.scrollWidth, page.clientWidth];
"""


def assert_fits(driver, selector):
    inner, outer, page, viewport = driver.execute_script(FITS, selector)
    assert inner <= outer, f"{selector} scrolls sideways: {inner} > {outer}"
    assert page <= viewport, f"the page scrolls sideways: {page} > {viewport}"


def log_in(driver, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{live_server.url}{reverse('admin:login')}")
    driver.find_element(By.NAME, "username").send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys("pw")
    click_and_wait(driver, By.CSS_SELECTOR, "#login-form [type=submit]")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "user-tools")))


def test_live_tables_fit_1280_px_with_the_sidebar_open(
    browser,  # noqa: F811
    screenshot,  # noqa: F811
    live_server,
    transactional_db,
    django_user_model,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    long_args = '{"payload":"' + "x" * 300 + '","customer_id":"' + "9" * 60 + '"}'
    for n in range(3):
        get_store().acquire(
            f"tests.tasks.unique_add:{n:040d}",
            f"{n:08d}-1111-2222-3333-444455556666",
            600_000,
            "tests.tasks.unique_add",
            long_args,
        )
    PolicyOverride.objects.create(
        task_name="tests.tasks.limited",
        options={"rate_limit": "7/m", "unique": True, "unique_on": ["n"], "heartbeat": True},
    )

    log_in(browser, live_server)

    browser.get(f"{live_server.url}{reverse('admin:heimdall_lock_changelist')}")
    wait.until(ec.presence_of_element_located((By.ID, "result_list")))
    assert browser.find_element(By.ID, "nav-sidebar").is_displayed()
    assert browser.execute_script("return window.innerWidth") == 1280
    assert_fits(browser, "#changelist .results")
    text = browser.find_element(By.ID, "result_list").text
    assert "phase: queued" in text and "expires in" in text  # folded in, not hidden
    screenshot(browser, "locks.png")

    browser.get(f"{live_server.url}{reverse('admin:heimdall_policyoverride_effective')}")
    wait.until(ec.presence_of_element_located((By.ID, "effective")))
    assert_fits(browser, "#content-main .results")
    assert "7/60s" in browser.find_element(By.ID, "effective").text
    screenshot(browser, "effective-policies.png")


def test_every_other_admin_page_fits_and_is_pictured(
    browser,  # noqa: F811
    screenshot,  # noqa: F811
    live_server,
    transactional_db,
    django_user_model,
):
    from selenium.webdriver.common.by import By

    from django_heimdall import mutex
    from django_heimdall.ratelimits import Rate
    from django_heimdall.store.beat import BeatStore

    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    override = PolicyOverride.objects.create(
        task_name="tests.tasks.limited",
        options={"rate_limit": "7/m", "unique_on": ["n"]},
        note="incident 42: the partner asked us to slow down",
    )
    store = get_store()
    for n in range(3):
        store.start(
            f"r{n}", task_name="tests.tasks.limited", rates=(("tests.tasks.limited", Rate(5, 60)),)
        )
    BeatStore(store).lead("beat-1", 30_000, "scheduler-host", 4242)
    ticket = mutex("single")
    ticket.__enter__()
    log_in(browser, live_server)

    pages = [
        (
            "heimdall_policyoverride_changelist",
            (),
            "#changelist",
            "overrides.png",
            "rate_limit=7/m",
        ),
        (
            "heimdall_policyoverride_change",
            (override.pk,),
            "#content-main",
            "override-form.png",
            "7/m",
        ),
        (
            "heimdall_ratelimitwindow_changelist",
            (),
            "#content-main",
            "rate-windows.png",
            "5 / 60 s",
        ),
        (
            "heimdall_beatleader_changelist",
            (),
            "#content-main",
            "beat-leader.png",
            "scheduler-host",
        ),
        ("heimdall_concurrencyslot_changelist", (), "#content-main", "concurrency.png", "single"),
    ]
    for name, args, selector, picture, expected in pages:
        browser.get(f"{live_server.url}{reverse(f'admin:{name}', args=args)}")
        main = browser.find_element(By.ID, "content-main")
        page_text = main.text + " ".join(
            field.get_attribute("value") or "" for field in main.find_elements(By.TAG_NAME, "input")
        )
        assert expected in page_text, name
        assert_fits(browser, selector)
        screenshot(browser, picture)
    ticket.__exit__(None, None, None)
