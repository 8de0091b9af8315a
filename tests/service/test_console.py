"""The console in a real headless browser: Debian's chromium and chromium-driver, with
Selenium, against the real app served by uvicorn on a loopback port.

`.ci/setup --test` installs the browser and the driver. If they are missing or cannot
start, the tests fail saying so: a browser test that skips is a check that cannot fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from load_tests.processes import free_port
from service.app import create_app
from tests.demo_fixtures import DemoDirs, serve_in_thread
from tests.service.conftest import make_settings
from tests.service.test_rules_api import rules_catalog

KEY = "console-test-key"
CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
WAIT = 20.0


@pytest.fixture(scope="module")
def console_url(demo: DemoDirs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    catalog = rules_catalog(demo, tmp_path_factory.mktemp("console") / "catalog.json")
    # the console's user: the admin scope for the catalog view, decide for the form
    settings = make_settings(demo, catalog_path=catalog, api_keys=f"ops:{KEY}:decide+feedback+admin",
                             control_share=0.3)
    with serve_in_thread(create_app(settings), free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    binary = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    driver_path = shutil.which(DRIVER)
    if binary is None or driver_path is None:
        pytest.fail("the console test needs Debian's chromium and chromium-driver "
                    "(bash .ci/setup --test installs them; apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.fail(f"headless chromium ({binary}) did not start through {driver_path}: {exc.msg}")
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def rows(browser: Any, table: str) -> list[list[str]]:
    """The table's body cells' text, read in one script (the page may redraw it meanwhile)."""
    found: list[list[str]] = browser.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]"
        ".map((tr) => [...tr.cells].map((td) => td.innerText));", table)
    return found


def wait_for_rows(browser: Any, table: str, error: str) -> list[list[str]]:
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(driver: Any) -> list[list[str]] | Literal[False]:
        problem = driver.find_element("id", error).text
        assert not problem, problem
        return rows(driver, table) or False

    found: list[list[str]] = WebDriverWait(browser, WAIT).until(ready)
    return found


def open_console(browser: Any, url: str) -> None:
    """The console with the API key typed in (kept in the tab's session storage)."""
    browser.get(f"{url}/console")
    assert browser.title == "nextbest console"
    browser.execute_script("sessionStorage.setItem('nextbest-api-key', arguments[0]);", KEY)
    browser.refresh()  # loads everything once, with the key
    assert browser.find_element("id", "api-key").get_attribute("value") == KEY


def test_the_page_loads_the_catalog_with_rules_and_budgets(browser: Any, console_url: str) -> None:
    open_console(browser, console_url)
    catalog = {r[0].split(" — ")[0]: r for r in wait_for_rows(browser, "catalog-table", "catalog-error")}
    assert len(catalog) > 10
    assert '"once": true' in catalog["o007"][7]  # caps and cooldowns
    assert '"limit": 2' in catalog["p003"][8] and catalog["p003"][9] == "2"  # budget, and left
    assert '"min": 1000' in catalog["p001"][6]  # the eligibility rule


def test_the_decision_form_returns_ranked_actions_and_reasons(browser: Any, console_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_console(browser, console_url)
    wait_for_rows(browser, "catalog-table", "catalog-error")
    form = browser.find_element(By.ID, "decision-form")
    form.find_element(By.NAME, "customer_id").send_keys("c00001")
    Select(form.find_element(By.NAME, "channel")).select_by_value("web")
    Select(form.find_element(By.NAME, "placement")).select_by_value("home")
    limit = form.find_element(By.NAME, "limit")
    limit.clear()
    limit.send_keys("4")
    context = form.find_element(By.NAME, "context")
    context.clear()
    context.send_keys('{"cart_value": 20}')
    browser.find_element(By.ID, "decide-button").click()
    ranked = wait_for_rows(browser, "ranked-table", "decision-error")
    assert [r[0] for r in ranked] == ["1", "2", "3", "4"]
    assert all(r[1] for r in ranked) and len({r[1] for r in ranked}) == 4
    assert all(0 < float(r[3]) < 1 for r in ranked)  # propensities
    reasons = {r[0]: r[1] for r in rows(browser, "removed-table")}
    assert reasons["p001"] == "rule:context.cart_value"  # cart_value 20 < 1000
    assert "placement" in reasons.values()
    assert browser.find_element(By.ID, "decision-group").text in ("treatment", "control")
    # no script error (network ones are the first load's 401 before the key, the favicon's 404)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert not errors, errors


def test_the_insights_and_the_uplift_show_as_tables_and_charts(browser: Any, console_url: str) -> None:
    from selenium.webdriver.common.by import By

    headers = {"x-api-key": KEY}
    with httpx.Client(base_url=console_url, headers=headers, timeout=10) as client:
        for i in range(40):
            d = client.post("/v1/decisions", json={"customer_id": f"c{i + 1:05d}", "channel": "app",
                                                  "placement": "home", "limit": 1}).json()
            event = {"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"]}
            outcomes = ["impression"] + (["accept"] if i % 3 == 0 else ["dismiss"] if i % 3 == 1 else [])
            r = client.post("/v1/feedback", json={"events": [{**event, "outcome": o} for o in outcomes]})
            assert r.status_code == 202, r.text
    open_console(browser, console_url)
    touchpoints = wait_for_rows(browser, "touchpoints-table", "touchpoints-error")
    assert sum(int(r[2]) for r in touchpoints if r[0] == "app") == 40
    assert browser.find_elements(By.CSS_SELECTOR, "#touchpoints-chart svg rect")
    groups = wait_for_rows(browser, "uplift-groups", "uplift-error")
    app = {r[1]: r for r in groups if r[0] == "app"}
    assert int(app["treatment"][2]) + int(app["control"][2]) == 40
    assert "30.0% of customers" in browser.find_element(By.ID, "uplift-setup").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#uplift-chart svg rect")) == 2


def test_the_page_and_script_are_served_without_a_key(console_url: str) -> None:
    page = httpx.get(f"{console_url}/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    script = httpx.get(f"{console_url}/console/console.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(f"{console_url}/v1/console/catalog").status_code == 401


def test_the_console_files_ship_in_the_package() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"console/*.html", "console/*.js"} <= set(data["service"])
    assert (root / "service" / "console" / "index.html").is_file()
