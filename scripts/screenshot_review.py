"""Take the README's screenshot of ``cycleaug review``: serve a published version on loopback, open it in
Debian's headless chromium (Selenium driving /usr/bin/chromium through /usr/bin/chromedriver; nothing
downloads a browser), wait for the grid's pictures and save a PNG.

    PYTHONPATH=. python scripts/screenshot_review.py --dataset data/augmented --out docs/review.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:  # the server is still starting
            pass
        time.sleep(0.5)
    raise SystemExit(f"screenshot_review: timed out after {timeout:.0f} s waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="data/augmented", help="the published version's folder")
    ap.add_argument("--out", default="docs/review.png", help="where the PNG goes")
    ap.add_argument("--size", default="1400,900", help="browser window, width,height in pixels")
    args = ap.parse_args()
    if not (Path(args.dataset) / "manifest.json").exists():
        raise SystemExit(f"screenshot_review: {args.dataset}: no manifest.json; publish a version first")
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        raise SystemExit("screenshot_review: needs Debian's chromium and chromium-driver (apt-get install ...)")
    import httpx
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    port, profile = _free_port(), tempfile.mkdtemp(prefix="review-shot-")
    log = open(Path(profile) / "review.log", "wb")  # noqa: SIM115  (closed below)
    dataset = os.path.relpath(Path(args.dataset).resolve(), ROOT)  # the server runs in the project folder;
    if dataset.startswith(".."):  # a relative path keeps this machine's folders off the picture
        dataset = str(Path(args.dataset).resolve())
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "review", "--dataset", dataset, "--port", str(port)],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env=os.environ | {"PYTHONPATH": str(ROOT)}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}/profile", f"--window-size={args.size}"):
        opts.add_argument(arg)
    opts.binary_location = chromium
    browser = None
    try:
        _wait("the review page", lambda: httpx.get(base + "/api/meta", timeout=2).status_code == 200, 120)
        browser = webdriver.Chrome(options=opts, service=Service(driver_bin))
        browser.get(base)
        _wait("the grid's pictures", lambda: browser.execute_script(
            "const i = Array.from(document.images).slice(0, 9);"  # the first rows' (the rest load lazily)
            "return i.length > 3 && i.every(x => x.complete && x.naturalWidth)"),
            60)
        time.sleep(1)  # the page's last layout pass
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(".tmp.png")
        browser.save_screenshot(str(tmp))
        os.replace(tmp, args.out)
        print(f"screenshot of {args.dataset}'s review page: {args.out} ({Path(args.out).stat().st_size / 1e3:.3g} kB)")
    finally:
        if browser is not None:
            browser.quit()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
