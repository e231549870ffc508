"""The run's summary for people, built once (cyclegan_core.overview): the CLI's lines, the flow's
Markdown report and metrics table all show the same figures, in FIGURES' order."""

from pathlib import Path

import pytest

from cyclegan_core import overview
from cyclegan_core.config import DIRECTIONS
from cyclegan_core.figures import summary_line
from cyclegan_core.storage import read_json
from tests._published import grown_versions

pytestmark = pytest.mark.slow  # shares the pipeline fixture of test_publish (made once per session)


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict:
    return grown_versions(tmp_path_factory.getbasetemp() / "published-versions")


def test_summary_report_and_table_agree(versions):
    cfg = versions["cfg"]
    metrics = read_json(Path(cfg.paths.reports) / "metrics.json")
    lines = overview.summary_lines(cfg)
    for d in DIRECTIONS:
        line = next(x for x in lines if x.startswith(f"{d}: published"))
        assert line.endswith(summary_line(metrics[d])) and f"published {metrics['published']['rows'][d]}," in line

    run = {"ingest": {d: {"samples": n} for d, n in versions["ingested"].items()},
           "train": {"fingerprint": "f" * 64, "steps": 6, "reused": True, "seconds": 0.0, "reason": "same data"},
           "generate": {"translated": {"AtoB": 4, "BtoA": 3}, "reused": {"AtoB": 24, "BtoA": 24}},
           "cached": {"generate": False, "validate": False, "publish": False}, "timings": {"train": 1.0}}
    rows = overview.metrics_rows(cfg, run)
    assert [r["direction"] for r in rows] == list(DIRECTIONS)
    shown = [f.summary_key for f in overview.columns(cfg.data.kind)]
    assert "mean_cycle_psnr" in shown and "mean_cycle_si_sdr" not in shown  # audio figures on audio runs only
    for r in rows:
        d = r["direction"]
        assert r["published"] == metrics["published"]["rows"][d] and r["translated_now"] == run["generate"][
            "translated"][d]
        assert set(shown) <= set(r)
        assert r["mean_cycle_psnr"] == pytest.approx(metrics[d]["mean_cycle_psnr"], rel=1e-3)

    text = overview.run_markdown(cfg, run)
    assert text.startswith("# CycleAug run") and f"samples: A {versions['ingested']['A']}" in text
    assert all(line in text for line in lines)  # the CLI's lines, word for word
    table = [x for x in text.splitlines() if x.startswith("| ")]
    assert len(table) == 1 + len(DIRECTIONS) and "cycle PSNR dB" in table[0]
    assert all(x.count("|") == table[0].count("|") for x in table)
