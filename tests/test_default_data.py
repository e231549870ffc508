import csv

import numpy as np
import pytest

from cyclegan_core.config import DefaultDataConfig
from cyclegan_core.default_data import make_default_data, render_digit, typed_fonts


def test_every_face_draws_every_digit_with_ink():
    rng = np.random.default_rng(0)
    for font in typed_fonts():
        glyphs = [render_digit(d, font, 16, rng) for d in range(10)]
        assert all(g.max() > 100 for g in glyphs), font.name
        assert len({g.tobytes() for g in glyphs}) == 10, font.name


def test_default_collections_are_written_once(tmp_path):
    cfg = DefaultDataConfig(typed_per_digit=2, typed_size=16)
    a, b = tmp_path / "A", tmp_path / "B"
    made = make_default_data(a, b, cfg)
    assert made == {"A": 1797, "B": 20}
    rows = list(csv.DictReader((b / "labels.csv").read_text().splitlines()))
    assert len(rows) == 20 and {r["label"] for r in rows} == {str(d) for d in range(10)}
    assert len(list((a / "test").glob("*.png"))) == round(1797 * 0.2)
    assert make_default_data(a, b, cfg) == {}  # same settings: nothing to do


def test_foreign_folder_is_left_alone(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "mine.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not CycleAug's default data"):
        make_default_data(tmp_path / "A", tmp_path / "B", DefaultDataConfig(typed_per_digit=1))
    assert (tmp_path / "A" / "mine.png").read_bytes() == b"x"
