"""Drive `dagster dev` as a user does: start it, launch jobs over GraphQL, look at it in Chromium."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from dagster_graphql import DagsterGraphQLClient

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=2200,1300",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@contextmanager
def dagster_dev(workspace: Path, env: dict[str, str], log_path: Path):
    """`dagster dev -w workspace` (webserver + daemon) on a free loopback port; yields the base URL."""
    port = free_port()
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _location_loaded(url) or process.poll() is not None, 240, f"dagster dev at {url}")
        assert process.poll() is None, f"dagster dev exited {process.returncode}; log:\n{log_path.read_text()[-4000:]}"
        yield url
    finally:
        # dagster dev owns a process group (webserver, daemon, code server): stop it as a whole.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _location_loaded(url: str) -> bool:
    """True once the code location has loaded; raises at once if it failed to load."""
    try:
        return repository(url) is not None
    except httpx.HTTPError:  # the webserver is still starting
        return False


def repository(url: str) -> dict[str, str] | None:
    """The one code location's selector once it has loaded, else None; its error if it failed."""
    data = graphql(url, """{ workspaceOrError { ... on Workspace { locationEntries {
        name locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } }
                                   ... on PythonError { message stack } } } } } }""")
    [entry] = data["workspaceOrError"]["locationEntries"]
    location = entry["locationOrLoadError"]
    if location is None:
        return None
    if location["__typename"] != "RepositoryLocation":
        raise AssertionError(f"code location {entry['name']} failed to load: {location.get('message')}\n"
                             + "".join(location.get("stack") or [])[-3000:])
    return {"repositoryLocationName": entry["name"], "repositoryName": location["repositories"][0]["name"]}


def add_partition(url: str, selector: dict, partition: str) -> None:
    data = graphql(url, """mutation($repo: RepositorySelector!, $name: String!, $key: String!) {
        addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
          __typename ... on PythonError { message } ... on UnauthorizedError { message } } }""",
                   {"repo": selector, "name": "domain", "key": partition})
    assert data["addDynamicPartition"]["__typename"] in {"AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"}, data


def run_job(url: str, selector: dict, job: str, tags: dict[str, str], timeout_s: float) -> tuple[str, str]:
    """Launch a job through GraphQL (the official client) and wait until it ends: (run id, final status)."""
    client = DagsterGraphQLClient(url.removeprefix("http://").split(":")[0], port_number=int(url.rsplit(":", 1)[1]))
    run_id = client.submit_job_execution(
        job, repository_location_name=selector["repositoryLocationName"],
        repository_name=selector["repositoryName"], run_config={}, tags=tags,
    )
    final = {"SUCCESS", "FAILURE", "CANCELED"}
    status = wait_for(lambda: (s := client.get_run_status(run_id).value) in final and s, timeout_s,
                      f"run {run_id} of {job}", every_s=2)
    return run_id, status


def failure_messages(url: str, run_id: str) -> list[str]:
    """What the run's failed steps said, for an assertion message."""
    data = graphql(url, """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
        __typename ... on MessageEvent { message stepKey }
        ... on ExecutionStepFailureEvent { error { message } } ... on RunFailureEvent { message } } } } }""",
                   {"id": run_id})
    events = data["logsForRun"].get("events", [])
    return [f"{e.get('stepKey') or ''}: {(e.get('error') or {}).get('message') or e.get('message')}"
            for e in events if e["__typename"] in {"ExecutionStepFailureEvent", "RunFailureEvent"}]


def materialised_partitions(url: str) -> dict[str, int | None]:
    """Asset name -> partitions materialised (None for an unpartitioned asset: 1 if materialised)."""
    data = graphql(url, """{ assetNodes { assetKey { path } partitionStats { numMaterialized }
        assetMaterializations(limit: 1) { timestamp } } }""")
    return {
        "/".join(node["assetKey"]["path"]): (node["partitionStats"] or {}).get(
            "numMaterialized", len(node["assetMaterializations"]))
        for node in data["assetNodes"]
    }


def open_asset_graph(url: str, screenshot: Path, names: list[str], user_data_dir: Path, chromium: str,
                     chromedriver: str) -> str:
    """Open the global asset lineage in headless Chromium; return the page's text, save a PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        driver.get(f"{url}/asset-groups")

        def visible_with_text(text: str) -> list:
            found = driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{text}']")
            return [element for element in found if element.is_displayed()]

        def dismiss_welcome_dialog() -> None:
            # A fresh DAGSTER_HOME greets a first-time user with a newsletter dialog over the graph.
            for button in visible_with_text("Skip"):
                button.click()

        expand_tries = []

        def expand_all_groups() -> None:
            # Assets in several groups start collapsed to one node per group; the lineage view's
            # "Expand all groups" is bound to Alt+E. Pressed again only if still not expanded.
            if len(expand_tries) < 3 and time.monotonic() - (expand_tries[-1] if expand_tries else 0) > 5:
                ActionChains(driver).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()
                expand_tries.append(time.monotonic())

        def canvas_left_edge() -> float:
            # The asset list (with its "Jump to" box) is on the left; the graph canvas is right of it.
            jump = driver.find_elements(By.XPATH, "//input[starts-with(@placeholder, 'Jump to')]")
            return jump[0].rect["x"] + jump[0].rect["width"] if jump else 0.0

        def drawn_on_canvas(name: str) -> bool:
            edge = canvas_left_edge()
            return any(element.rect["x"] > edge for element in visible_with_text(name))

        def graph_drawn() -> bool:
            dismiss_welcome_dialog()
            if visible_with_text("Skip"):
                return False
            if all(drawn_on_canvas(name) for name in names):
                return True
            expand_all_groups()
            return False

        try:
            wait_for(graph_drawn, 90, f"asset nodes {names} drawn on the lineage page", every_s=1)
            time.sleep(1)  # let the zoom-to-fit animation settle before the picture
        finally:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        return driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
