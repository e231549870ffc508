"""The analyst's review page in a real headless browser (Debian's chromium via Selenium): ``cycleaug
review`` on a small published version, started and stopped by PID; filter, sort, open a row, flag
two rows, and the flags file holds exactly them. Also the flags log itself and the CLI's flag/unflag."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from cyclegan_core.flags import FlagError, add_events, flagged, read_events
from cyclegan_core.reader import open_dataset
from cyclegan_core.review import VersionIndex
from tests._published import grown_versions
from tests.test_deployment import ROOT, free_port, start, stop, wait_for
from tests.test_prefect_ui import browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict:
    return grown_versions(tmp_path_factory.getbasetemp() / "published-versions")


@pytest.fixture(scope="module")
def v2(versions) -> Path:
    return versions["v2"]


def test_diff_of_a_grown_collection_shows_exactly_the_added_rows(versions):
    from cyclegan_core.diff import diff_markdown, diff_versions

    diff = diff_versions(open_dataset(str(versions["v1"])), open_dataset(str(versions["v2"])))
    for d, n in versions["new"].items():
        x = diff["directions"][d]
        assert x["added"] == {"total": n, "test": n} and x["removed"]["total"] == 0
        assert x["rows"]["new"] - x["rows"]["old"] == n
        assert x["unchanged"]["total"] == x["rows"]["old"]  # the model was reused: old rows keep their bytes
    assert "| AtoB |" in diff_markdown(diff) and not any(v["changed"] for v in diff["settings"].values())


def test_flags_are_an_append_only_log_replayed_in_order(tmp_path):
    path = tmp_path / "flags.parquet"
    assert flagged(path) == {} and read_events(path).num_rows == 0
    with pytest.raises(FlagError, match="needs a reason"):
        add_events(path, "flag", [{"source_id": "s1", "direction": "AtoB"}])
    with pytest.raises(FlagError, match="direction"):
        add_events(path, "flag", [{"source_id": "s1", "direction": "sideways"}], reason="x")
    add_events(path, "flag", [{"source_id": "s1", "direction": "AtoB"}, {"source_id": "s2", "direction": "BtoA"}],
               reason="wrong digit", who="ana")
    add_events(path, "unflag", [{"source_id": "s1", "direction": "AtoB"}], who="ana")
    add_events(path, "flag", [{"source_id": "s1", "direction": "BtoA"}], reason="blurred")
    now = flagged(path)
    assert set(now) == {("BtoA", "s2"), ("BtoA", "s1")} and now[("BtoA", "s2")].reason == "wrong digit"
    events = read_events(path).to_pylist()
    assert [e["action"] for e in events] == ["flag", "flag", "unflag", "flag"] and events[0]["who"] == "ana"


def test_the_index_filters_sorts_and_reads_one_row(v2):
    index = VersionIndex(open_dataset(str(v2)))
    assert len(index) == 55 and "cycle_psnr" in index.metrics
    page = index.page({"direction": "BtoA", "split": "test"}, sort="cycle_psnr", descending=True, limit=5)
    assert page.total == 9 and {r["direction"] for r in page.rows} == {"BtoA"}
    values = [r["cycle_psnr"] for r in page.rows]
    assert values == sorted(values, reverse=True)
    low = index.select({"max_cycle_psnr": str(values[-1])})
    assert all(index.columns["cycle_psnr"][i] <= values[-1] for i in low)
    row = page.rows[0]["row"]
    assert index.picture(row, "image")[:8] == b"\x89PNG\r\n\x1a\n"
    assert index.full_record(row)["source_id"] == page.rows[0]["source_id"]


def test_review_page_filters_sorts_and_flags_in_a_browser(versions, v2, browser, tmp_path):  # noqa: F811
    flags = tmp_path / "flags.parquet"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"flags": str(flags)}}))
    port = free_port()
    log = tmp_path / "review.log"
    server = start([sys.executable, "-m", "flows.cli", "--params", str(params), "review", "--dataset", str(v2),
                    "--port", str(port)], {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("the review page", lambda: _up(base), 120, [log])
        browser.get(base)
        rows = lambda: browser.find_elements("css selector", "#grid tbody tr")  # noqa: E731
        wait_for("rows", lambda: len(rows()) > 0, 60, [log])
        assert "55 rows" in browser.find_element("id", "count").text
        # Filter to one direction, sort by cycle PSNR (a header click), descending (a second click).
        browser.find_element("css selector", "#direction option[value='BtoA']").click()
        browser.find_element("id", "apply").click()
        wait_for("the filter", lambda: "27 in the filter" in browser.find_element("id", "count").text, 30, [log])
        header = next(th for th in browser.find_elements("css selector", "#grid th") if th.text == "cycle_psnr")
        header.click()
        time.sleep(1)
        header = next(th for th in browser.find_elements("css selector", "#grid th") if th.text == "cycle_psnr")
        header.click()
        col = [th.text for th in browser.find_elements("css selector", "#grid th")].index("cycle_psnr")

        def sorted_desc() -> bool:
            vals = [float(tr.find_elements("tag name", "td")[col].text) for tr in rows()]
            return len(vals) > 2 and vals == sorted(vals, reverse=True)

        wait_for("descending cycle PSNR", sorted_desc, 30, [log])
        pictures = browser.execute_script(
            "return Array.from(document.images).slice(0, 6).map(i => [i.complete, i.naturalWidth])")
        assert pictures and all(width > 0 for _, width in pictures), pictures
        # A row's full record on click.
        rows()[0].find_elements("tag name", "td")[2].click()
        wait_for("the record", lambda: "model_fingerprint" in browser.find_element("id", "record").text, 30, [log])
        # Flag the two best rows with a reason.
        picked = [tr.get_attribute("data-row") for tr in rows()[:2]]
        for tr in rows()[:2]:
            tr.find_element("css selector", "input.pick").click()
        browser.find_element("id", "reason").send_keys("not a digit")
        browser.find_element("id", "flag").click()
        wait_for("two flagged", lambda: "2 flagged" in browser.find_element("id", "count").text, 30, [log])
        wait_for("flagged rows marked", lambda: len(browser.find_elements("css selector", "tr.flagged")) == 2, 30,
                 [log])
    finally:
        stop(server)
    index = VersionIndex(open_dataset(str(v2)))
    expected = {("BtoA", index.record(int(r))["source_id"]) for r in picked}
    now = flagged(flags)
    assert set(now) == expected and {f.reason for f in now.values()} == {"not a digit"}

    # The next publish leaves the flagged sources out, counts them in the manifest, the card and metrics.json,
    # and adds this publish to reports/history.tsv.
    import json

    from cyclegan_core import pipeline
    from cyclegan_core.config import config_from_dict

    raw = versions["cfg"].to_dict()
    raw["paths"] |= {"published": str(tmp_path / "published"), "reports": str(tmp_path / "reports"),
                     "flags": str(flags)}
    cfg = config_from_dict(raw)
    result = pipeline.step_publish(cfg)
    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["flagged"] == {"AtoB": 0, "BtoA": 2}
    before = open_dataset(str(v2)).rows
    assert result.rows == {"AtoB": before["AtoB"], "BtoA": before["BtoA"] - 2}
    sources = set(open_dataset(str(tmp_path / "published")).to_pandas(["source_id"], direction="BtoA").source_id)
    assert not sources & {s for _, s in expected}
    assert "| BtoA | 25 | 0 | 2 |" in (tmp_path / "published" / "README.md").read_text()
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["published"]["flagged"] == {"AtoB": 0, "BtoA": 2}
    assert (tmp_path / "reports" / "history.png").is_file()
    assert len((tmp_path / "reports" / "history.tsv").read_text().splitlines()) == 3  # a header, two directions


def test_flag_and_unflag_on_the_command_line(tmp_path):
    flags = tmp_path / "flags.parquet"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"flags": str(flags)}}))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(params), *args], cwd=tmp_path,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                              timeout=120)

    r = cli("flag", "a1", "a2", "--direction", "AtoB")
    assert r.returncode == 1 and "needs a reason" in r.stderr
    assert cli("flag", "a1", "a2", "--direction", "AtoB", "--reason", "smudged").returncode == 0
    r = cli("unflag", "a2", "--direction", "AtoB")
    assert r.returncode == 0 and "1 flagged now" in r.stderr
    assert set(flagged(flags)) == {("AtoB", "a1")}


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/meta", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
