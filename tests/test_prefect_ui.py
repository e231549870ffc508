"""The Prefect UI as a user sees it, in a real headless browser (Debian's chromium, driven by its
chromedriver through Selenium): a completed run and a run whose gate fails, against a real
``prefect server start`` on loopback (started and stopped by PID in ``test_deployment``'s fixture).

Checked: the validation report's pictures load (they are inlined; the UI cannot reach reports/), the
figure table fits the page (one figure a row), progress artifacts say what and how far, no dict
reprs or long floats in the run's logs and reports, and the validate task is Failed when the gate is.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import tiny_collections, tiny_settings
from tests.test_deployment import ROOT, free_port, start, stop, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PYTHON_REPR = re.compile(r"\{'|\[\(|\d\.\d{7,}")  # a dict or list-of-tuples repr, a float printed in full


@pytest.fixture
def prefect_api(tmp_path):
    """``prefect server start`` on a free loopback port, with the UI told where its API is (as the README says)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": url,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log = tmp_path / "server.log"
    server = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                   env, log)

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("the Prefect server", healthy, 180, [log])
        yield url, env | {"PREFECT_API_URL": url}
    finally:
        stop(server)


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("no chromium / chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver and the browser it started


def _run(params: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(params), *args, "run"], cwd=params.parent,
                          env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)


def _wait_page(driver, url: str, ready: str, timeout: float = 60.0):
    """Open ``url`` and wait until the JavaScript expression ``ready`` is true (the UI renders client-side)."""
    driver.get(url)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if driver.execute_script(f"return Boolean({ready})"):
            return
        time.sleep(0.5)
    body = driver.find_element("tag name", "body").text[:2000]
    raise AssertionError(f"{url}: not rendered after {timeout} s:\n{body}")


def _awkward_files(a: Path) -> None:
    """Issue 21 through the real ``cycleaug run``: a named pipe (which once blocked ingest forever) and a
    labelled sample whose name is not UTF-8 (which once crashed it) in collection A."""
    os.mkfifo(a / "train" / "pipe.png")
    os.rename(a / "train" / "hand_006.png", a / os.fsdecode(b"train/hand_006 \xe9.png"))
    labels = a / "labels.csv"
    labels.write_bytes(labels.read_bytes().replace(b"train/hand_006.png,", b"train/hand_006 \xe9.png,"))


def test_the_ui_shows_pictures_tables_progress_and_a_failed_gate(prefect_api, browser, tmp_path):
    api, env = prefect_api
    a, b = tiny_collections(tmp_path / "raw")
    _awkward_files(a)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_settings(tmp_path / "work", a, b)))
    done = _run(params, env)
    assert done.returncode == 0, done.stderr[-3000:]
    ingested = tmp_path / "work" / "ingest" / "A"
    assert (ingested / "quarantine.csv").read_text().splitlines() == [
        "path,reason", 'train/pipe.png,"named pipe (FIFO): not a regular file, not read"']
    rows = pq.read_table(ingested / "manifest.parquet", columns=["relpath", "relpath_bytes", "label"]).to_pylist()
    assert {"relpath": "train/hand_006 \\xe9.png", "relpath_bytes": b"train/hand_006 \xe9.png", "label": 6} in rows
    failed = _run(params, env, "--set", "validate.run.AtoB.min_mean_cycle_psnr=99")
    assert failed.returncode == 1 and "AtoB.mean_cycle_psnr" in failed.stderr

    def post(path: str, body: dict) -> list:
        r = httpx.post(f"{api}{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    runs = post("/flow_runs/filter", {"sort": "START_TIME_ASC",
                                      "flow_runs": {"parent_task_run_id": {"is_null_": True}}})
    assert [r["state_type"] for r in runs] == ["COMPLETED", "FAILED"]
    subflows = post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [runs[1]["id"]]}}})
    ids = [runs[1]["id"], *(f["id"] for f in subflows)]
    tasks = {t["name"].rsplit("-", 1)[0]: t["state_type"] for t in post("/task_runs/filter",
                                                                          {"flow_runs": {"id": {"any_": ids}}})}
    assert tasks["validate"] == "FAILED", tasks  # red in the UI when the gate fails, not green

    artifacts = post("/artifacts/filter", {"sort": "CREATED_DESC"})[::-1]  # oldest first
    by_key: dict[str, list[dict]] = {}
    for art in artifacts:
        by_key.setdefault(art["key"], []).append(art)
    base = api.removesuffix("/api")

    # The validation report's pictures load in the browser.
    report = by_key["validation-report"][-1]
    _wait_page(browser, f"{base}/artifacts/artifact/{report['id']}",
               "document.images.length >= 2 && Array.from(document.images).every(i => i.complete)")
    pictures = browser.execute_script(
        "return Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))"
        ".map(i => [i.complete, i.naturalWidth])")
    assert len(pictures) >= 2 and all(ok and width > 0 for ok, width in pictures), pictures

    # The figure table: one figure a row, three columns, as wide as the page, not cut off.
    table = by_key["validation"][-1]
    _wait_page(browser, f"{base}/artifacts/artifact/{table['id']}", "document.querySelector('table')")
    heads, overflow = browser.execute_script(
        "const t = document.querySelector('table');"
        "return [Array.from(t.querySelectorAll('th')).map(h => h.innerText.trim()),"
        "        t.scrollWidth - t.parentElement.clientWidth]")
    assert heads == ["figure", "AtoB", "BtoA"] and overflow <= 1, (heads, overflow)
    assert "mean_cycle_psnr" in browser.find_element("tag name", "body").text

    # The run's report, as the UI renders it: what ran, per-direction counts, no Python reprs.
    run_report = by_key["cycleaug-report"][-1]
    _wait_page(browser, f"{base}/artifacts/artifact/{run_report['id']}", "document.querySelector('h1')")
    text = browser.find_element("tag name", "body").text
    assert "CycleAug run" in text and "translated AtoB 24, BtoA 24" in text
    assert not PYTHON_REPR.search(run_report["data"]), PYTHON_REPR.search(run_report["data"])

    # Progress artifacts say what and how far, beside the bar.
    train = by_key["train-train"][-1]
    assert re.fullmatch(r"CycleAug train: 6 of 6 \(100%\), .+ s; G .+", train["description"]), train["description"]
    assert all(re.search(r": \d[\d,]* of \d[\d,]* \(\d+%\)", a["description"]) for a in artifacts
               if a["type"] == "progress"), [a["description"] for a in artifacts if a["type"] == "progress"]

    logs = [x["message"] for x in post("/logs/filter", {"limit": 200})]
    assert logs and not [m for m in logs if PYTHON_REPR.search(m)], [m for m in logs if PYTHON_REPR.search(m)]


def test_readme_says_how_to_open_the_ui():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### The Prefect UI"):]
    assert "PREFECT_HOME" in section and "PREFECT_UI_API_URL" in section and "prefect server start" in section
