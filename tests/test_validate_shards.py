"""Validation shard by shard: the merged sufficient statistics give the whole-set figures, the KID
reservoir is seeded and bounded, and a shard is decoded one batch at a time."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cyclegan_core import pipeline
from cyclegan_core.config import config_from_dict
from cyclegan_core.generate import GENERATED_SCHEMA
from cyclegan_core.images import decode_png, encode_png
from cyclegan_core.ingest import manifest_images, read_manifest
from cyclegan_core.judges import calibration_half, classify, judge_sample, load_judges
from cyclegan_core.metrics import frechet_distance, kernel_inception_distance
from cyclegan_core.storage import read_json, sha256_bytes
from cyclegan_core.streamstats import Moments, Reservoir, frechet_from_moments, load_stats
from cyclegan_core.validate import Scorer, prepare, read_validated, score_shard, validate
from tests.conftest import tiny_collections, tiny_settings


def test_merged_moments_give_the_whole_set_mean_covariance_and_frechet_distance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 6)) * [1, 2, 3, 1, 1, 5] + 100.0, rng.normal(size=(40, 6))
    parts = [x[:7], x[7:7], x[7:30], x[30:]]  # an empty shard too
    merged = Moments.empty(6)
    for p in parts:
        merged = merged.merge(Moments.of(p))
    assert merged.n == 50
    np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(merged.cov(), np.cov(x, rowvar=False), rtol=1e-11)
    assert frechet_from_moments(merged, Moments.of(y)) == pytest.approx(frechet_distance(x, y), rel=1e-10)
    assert frechet_from_moments(Moments.of(x[:1]), Moments.of(y)) is None  # as frechet_distance: 2 at least


def test_reservoir_is_seeded_bounded_and_independent_of_the_shards():
    ids = [f"sample-{i}" for i in range(100)]
    values = np.arange(100, dtype=np.float64)[:, None] * [1.0, -1.0]
    whole = Reservoir.of(values, ids, seed=3, size=10)
    assert len(whole.values) == 10 and whole.values.shape == (10, 2)
    # Rows kept in their original order; the same seed keeps the same rows, another seed others.
    assert list(whole.values[:, 0]) == sorted(whole.values[:, 0])
    assert np.array_equal(Reservoir.of(values, ids, seed=3, size=10).values, whole.values)
    assert not np.array_equal(Reservoir.of(values, ids, seed=4, size=10).values, whole.values)
    # Shards of any sizes, merged in shard order (each built batch by batch): the same rows in the same order.
    for cuts in ([0, 100], [0, 13, 13, 57, 100], [0, 1, 2, 99, 100]):
        merged = Reservoir.empty(10, 2)
        for pos, (a, b) in enumerate(pairwise(cuts)):
            shard = Reservoir.empty(10, 2)
            for start in range(a, b, 4):
                end = min(b, start + 4)
                shard = shard.merge(Reservoir.of(values[start:end], ids[start:end], 3, 10, 0, start - a))
            merged = merged.merge(shard.at_shard(pos))
            assert len(merged.values) <= 10
        assert np.array_equal(merged.values, whole.values) and np.array_equal(merged.keys, whole.keys)
    # A set no larger than the reservoir is kept whole, in order.
    assert np.array_equal(Reservoir.of(values[:10], ids[:10], 3, 10).values, values[:10])


def test_judge_sample_is_bounded_seeded_and_whole_when_small():
    ids = [f"s{i}" for i in range(50)]
    assert judge_sample(ids, 50, 0) == set(ids)
    small = judge_sample(ids, 20, 0)
    assert len(small) == 20 and small <= set(ids) and judge_sample(ids, 20, 0) == small
    assert judge_sample(ids, 20, 1) != small
    # A grown collection keeps most of the sample (a sample stays unless smaller keys push it out).
    assert len(judge_sample([*ids, *(f"t{i}" for i in range(10))], 20, 0) & small) >= 10


def _write_generated(cfg, root: Path, shards: int) -> None:
    """``root/<direction>/part-*.parquet`` as generate writes them: translations are the inverted sources,
    reconstructions the sources with seeded noise; rows go to shard ``i % shards``, sorted in it."""
    for direction, domain in (("AtoB", "A"), ("BtoA", "B")):
        man = read_manifest(pipeline.manifest_path(cfg, domain))
        src = manifest_images(man)
        rng = np.random.default_rng(1)
        rec = np.clip(src.astype(int) + rng.integers(-20, 21, src.shape), 0, 255).astype(np.uint8)
        rows = []
        for i, r in enumerate(man.to_pylist()):
            img = encode_png(255 - src[i])
            rows.append({"sample_id": sha256_bytes(img), "direction": direction, "source_id": r["sample_id"],
                         "source_relpath": r["relpath"], "source_uri": r["uri"], "split": r["split"],
                         "label": r["label"], "source_image": r["image"], "image": img,
                         "reconstruction": encode_png(rec[i]), "model_fingerprint": "f" * 64,
                         "created_at": "2026-01-01T00:00:00+00:00"})
        (root / direction).mkdir(parents=True, exist_ok=True)
        for k in range(shards):
            part = sorted(rows[k::shards], key=lambda r: r["source_id"])
            pq.write_table(pa.Table.from_pylist(part, schema=GENERATED_SCHEMA),
                           root / direction / f"part-{k:05d}.parquet")


def _close(a: dict, b: dict, kid: bool = True) -> None:
    """Figures equal but for float rounding; ``kid=False``: KID (random subsets of rows in shard order) left out."""
    assert a.keys() == b.keys()
    for k, v in a.items():
        if not kid and k.startswith("kid_domain"):
            continue
        if isinstance(v, float):
            assert b[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        else:
            assert b[k] == v, k


@pytest.fixture
def sharded(tmp_path):
    a, b = tiny_collections(tmp_path / "raw", n=60, n_test=30)
    cfg = config_from_dict(tiny_settings(tmp_path / "work", a, b))
    pipeline.step_ingest(cfg)
    for shards in (1, 3):
        _write_generated(cfg, tmp_path / f"gen{shards}", shards)
    return cfg, tmp_path


def test_merged_shard_statistics_equal_the_whole_set_figures(sharded):
    cfg, tmp = sharded
    args = (cfg, pipeline.manifest_path(cfg, "A"), pipeline.manifest_path(cfg, "B"))
    one = validate(*args, tmp / "gen1", tmp / "val1")
    three = validate(*args, tmp / "gen3", tmp / "val3")
    assert sorted(p.name for p in (tmp / "val3" / "AtoB").iterdir()) == [f"part-0000{k}.parquet" for k in range(3)]
    for d in ("AtoB", "BtoA"):
        rows1 = sorted(read_validated(tmp / "val1", d).to_pylist(), key=lambda r: r["sample_id"])
        assert rows1 == sorted(read_validated(tmp / "val3", d).to_pylist(), key=lambda r: r["sample_id"])
        # KID draws random subsets of the rows in shard order, so it moves with the sharding (as it did
        # with generate.shards before); below it is checked against the whole set in that order.
        _close(one.figures[d], three.figures[d], kid=False)

    # The figures against a direct computation on the whole held-out set (the judge's float32 features of
    # one image move in the last bits with the batch it is in: hence 1e-6 on the feature figures).
    prepared = prepare(*args)
    judges = load_judges(Path(prepared["judges"]), cfg.data.channels)
    for d, target in (("AtoB", "B"), ("BtoA", "A")):
        gen = pq.read_table(tmp / "gen3" / d)
        test = [r for r in gen.to_pylist() if r["split"] == "test"]
        out = np.stack([decode_png(r["image"]) for r in test])
        src = np.stack([decode_png(r["source_image"]) for r in test])
        real = manifest_images(calibration_half(read_manifest(pipeline.manifest_path(cfg, target), ("test",))))
        real_f = classify(judges.domain, real)[1]
        feats, src_f = classify(judges.domain, out)[1], classify(judges.domain, src)[1]
        fig = three.figures[d]
        assert fig["held_out"] == len(test) == 30 and fig["real_target_held_out"] == len(real)
        assert fig["fid_domain_features"] == pytest.approx(frechet_distance(feats, real_f), rel=1e-6)
        assert fig["fid_domain_untranslated"] == pytest.approx(frechet_distance(src_f, real_f), rel=1e-6)
        kid = kernel_inception_distance(feats, real_f, cfg.validate_.kid_subset_size, cfg.validate_.kid_subsets,
                                        cfg.validate_.classifier_seed)
        assert (fig["kid_domain_features"], fig["kid_domain_std"], fig["kid_subset_size"]) == pytest.approx(
            kid, rel=1e-6)
        val = [r for r in read_validated(tmp / "val3", d).to_pylist() if r["split"] == "test"]
        assert fig["mean_cycle_psnr"] == pytest.approx(np.mean([r["cycle_psnr"] for r in val]), rel=1e-12)
        assert fig["p10_cycle_psnr"] == np.percentile([r["cycle_psnr"] for r in val], 10)
        labels = [r["label"] for r in test]
        pred = classify(judges.label[target], out)[0].argmax(1)
        assert fig["label_accuracy"] == pytest.approx(np.mean(pred == np.asarray(labels)), rel=1e-12)
        assert fig["pass_rate"] == pytest.approx(np.mean([r["passed"] for r in val]), rel=1e-12)
    summary = read_json(three.summary)
    assert summary["directions"]["AtoB"]["fid_domain_features"] == pytest.approx(
        three.figures["AtoB"]["fid_domain_features"])

    # A reservoir smaller than the held-out sets: KID on a bounded sample (here used whole: the subset is
    # the reservoir), the same whatever the shards.
    small = config_from_dict(tiny_settings(tmp / "work", *(cfg.data.domain_a, cfg.data.domain_b),
                                           validate={"classifier_epochs": 1, "kid_reservoir": 8}))
    args = (small, *args[1:])
    r1, r3 = validate(*args, tmp / "gen1", tmp / "small1"), validate(*args, tmp / "gen3", tmp / "small3")
    for d in ("AtoB", "BtoA"):
        assert r1.figures[d]["kid_subset_size"] == 8 and r1.figures[d]["held_out"] == 30
        _close(r1.figures[d], r3.figures[d])
        for stats in (tmp / "small3" / "_stats" / d).glob("*.safetensors"):
            assert all(len(r.values) <= 8 for r in load_stats(stats)[2].values())


def test_a_shard_is_decoded_one_batch_at_a_time_with_the_same_rows(sharded):
    cfg, tmp = sharded
    prepared = prepare(cfg, pipeline.manifest_path(cfg, "A"), pipeline.manifest_path(cfg, "B"))
    scorer = Scorer(cfg, prepared)
    whole = score_shard(scorer, tmp / "gen1", "AtoB/part-00000.parquet", tmp / "big", batch=1000)
    small = score_shard(scorer, tmp / "gen1", "AtoB/part-00000.parquet", tmp / "small", batch=7)
    n = whole["rows"]
    assert n == 60 and whole["batches"] == 1
    assert small["largest_batch"] == 7 and small["batches"] == math.ceil(n / 7)
    assert pq.read_table(tmp / "small" / small["file"]).equals(pq.read_table(tmp / "big" / whole["file"]))
    big_meta, big_m, big_r, _ = load_stats(tmp / "big" / "_stats" / "AtoB" / "part-00000.safetensors")
    small_meta, small_m, small_r, _ = load_stats(tmp / "small" / "_stats" / "AtoB" / "part-00000.safetensors")
    assert big_meta["counts"] == small_meta["counts"]
    for name, m in big_m.items():  # float32 features: the last bits move with the batch
        assert small_m[name].n == m.n
        np.testing.assert_allclose(small_m[name].comoment, m.comoment, rtol=1e-5, atol=1e-6)
        assert np.array_equal(small_r[name].keys, big_r[name].keys)
        np.testing.assert_allclose(small_r[name].values, big_r[name].values, rtol=1e-5, atol=1e-6)
    # The default batch is generate.batch_size.
    default = score_shard(scorer, tmp / "gen1", "AtoB/part-00000.parquet", tmp / "default")
    assert default["largest_batch"] == cfg.generate.batch_size == 8 and default["batches"] == math.ceil(n / 8)


def test_torch_threads_are_the_host_share_and_restored():
    import torch

    from cyclegan_core.devices import host_cores, torch_threads

    before, cores = torch.get_num_threads(), host_cores()
    with torch_threads(2 * cores) as n:  # more torch tasks on the host than cores: one thread each
        assert n == 1 and torch.get_num_threads() == 1
        with torch_threads(1) as m:  # a second user in the same process sets the process-wide count
            assert m == cores == torch.get_num_threads()
        assert torch.get_num_threads() == cores  # restored only when the last user leaves
    assert torch.get_num_threads() == before
