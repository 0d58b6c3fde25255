"""Headless Chromium for the operator pages (Dagster asset pages, the MLflow run page)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tests.support.dagster_ui import CHROMIUM_FLAGS, REPO, free_port, wait_for
from tests.support.system_deps import require_binaries

MLFLOW_VENV = REPO / ".venv-mlflow"  # what `make mlflow` builds: the full mlflow wheel, UI included


@contextmanager
def chromium(user_data_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = require_binaries("chromium", "chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser["chromium"]
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=browser["chromedriver"]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def show(driver, url: str, screenshot: Path, wanted: list[str], timeout_s: float = 90) -> str:
    """Open ``url``, wait until every string of ``wanted`` is on the page, save a PNG; return the text."""
    from selenium.webdriver.common.by import By

    def ready() -> bool:
        # A fresh DAGSTER_HOME greets a first-time user with a newsletter dialog over the page.
        for button in driver.find_elements(By.XPATH, "//button[normalize-space(.)='Skip']"):
            if button.is_displayed():
                button.click()
                return False
        return all(w in page_text(driver) for w in wanted)

    driver.get(url)
    try:
        wait_for(ready, timeout_s,
                 f"{wanted} on {url} (page says: {page_text(driver)[:600]!r})", every_s=1)
        time.sleep(1)  # charts finish drawing
    finally:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
    return page_text(driver)


def mlflow_binary() -> Path:
    binary = MLFLOW_VENV / "bin" / "mlflow"
    if not binary.exists():  # as `make mlflow` does
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(MLFLOW_VENV / "bin" / "pip"), "install", "-q", "mlflow==3.17.2"], check=True)
    return binary


@contextmanager
def mlflow_ui(store_uri: str, log_path: Path):
    port = free_port()
    log = log_path.open("w")
    process = subprocess.Popen([str(mlflow_binary()), "ui", "--backend-store-uri", store_uri, "--host", "127.0.0.1",
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        def up() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                assert process.poll() is None, f"mlflow ui exited; log:\n{log_path.read_text()[-3000:]}"
                return False

        wait_for(up, 120, f"mlflow ui at {url}")
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        log.close()


def mlflow_charts(driver, url: str, screenshot: Path, prefix: str, wanted: list[str]) -> str:
    """The run's "Model metrics" tab narrowed to one metric section (``train/``), assistant closed."""
    from selenium.webdriver.common.by import By

    def search_box():
        found = [e for e in driver.find_elements(By.XPATH, "//input[contains(@placeholder, 'Search metric charts')]")
                 if e.is_displayed()]
        return found[0] if found else None

    driver.get(url)
    wait_for(search_box, 90, f"the metric search box on {url}")
    for button in driver.find_elements(By.XPATH, "//*[contains(text(), 'MLflow Assistant')]/following::button"):
        if (button.get_attribute("aria-label") or "").lower().startswith("close") and button.is_displayed():
            button.click()
            break
    search_box().send_keys(prefix)
    return show_current(driver, screenshot, wanted)


def show_current(driver, screenshot: Path, wanted: list[str], timeout_s: float = 60) -> str:
    try:
        wait_for(lambda: all(w in page_text(driver) for w in wanted), timeout_s,
                 f"{wanted} on the page (it says: {page_text(driver)[:600]!r})", every_s=1)
        time.sleep(2)  # charts finish drawing
    finally:
        driver.save_screenshot(str(screenshot))
    return page_text(driver)
