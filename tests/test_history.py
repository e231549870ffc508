"""Quality over time: reports/history.tsv gains one row per direction per publish; history.png draws them."""

from PIL import Image

from cyclegan_core.history import COLUMNS, append_history, history_chart, read_history


def test_three_publishes_give_three_points_per_figure(tmp_path):
    tsv, png = tmp_path / "history.tsv", tmp_path / "history.png"
    assert history_chart(tsv, png) is None
    for i in range(3):
        figures = {d: {"mean_cycle_psnr": 20.0 + i, "label_accuracy": 0.8 + 0.05 * i, "mean_realism": None}
                   for d in ("AtoB", "BtoA")}
        utility = {"AtoB": {"utility_gain": {"mean": 0.01 * i}}, "BtoA": {"skipped": "no labels"}}
        run = append_history(tsv, run_id=f"r{i}", published_at=f"2026-12-0{i + 1}T02:00:00+00:00", model="f" * 64,
                             rows={"AtoB": 10 + i, "BtoA": 9}, dropped={"AtoB": 1, "BtoA": 0}, figures=figures,
                             utility=utility)
        assert run == i + 1
    rows = read_history(tsv)
    assert len(rows) == 6 and list(rows[0]) == list(COLUMNS)
    atob = [r for r in rows if r["direction"] == "AtoB"]
    assert [float(r["mean_cycle_psnr"]) for r in atob] == [20.0, 21.0, 22.0]
    assert [r["rows"] for r in atob] == ["10", "11", "12"] and atob[0]["model"] == "f" * 12
    assert [r["utility_gain"] for r in rows if r["direction"] == "BtoA"] == ["", "", ""]
    assert history_chart(tsv, png) == png and Image.open(png).size[0] > 300
