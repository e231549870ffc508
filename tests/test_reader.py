"""The analysts' reader against real libraries: pandas, pyarrow datasets, Hugging Face ``datasets``,
a torch DataLoader with 2 workers (and DDP ranks), and fsspec URLs."""

from __future__ import annotations

import collections
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem
from torch.utils.data import DataLoader

from cyclegan_core.publish import publish
from cyclegan_core.reader import DatasetError, ShardedParquetDataset, open_dataset
from tests._published import grown_versions, synthetic_inputs

pytestmark = pytest.mark.slow  # shares the pipeline fixture of test_publish (made once per session)


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> Path:
    return grown_versions(tmp_path_factory.getbasetemp() / "published-versions")["v2"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A published version with 64x64 RGB noise images (about 37 KB of PNG per row), 120 rows a direction
    (about 100 pass) in one shard of two row groups per direction."""
    root = tmp_path_factory.mktemp("photos")
    gen, val = synthetic_inputs(root, 120)
    publish(gen, val, root / "published", provenance={"code_version": "c", "params_hash": "p", "seed": 0,
                                                      "flow_run_id": "r"}, mode="RGB", size=64,
            max_shard_bytes=8 * 2**20)
    return root / "published"


def _key(direction: str, source_id: str) -> tuple[str, str]:
    return (direction, source_id)


def test_pandas_and_selection(v2):
    dataset = open_dataset(str(v2))
    everything = pd.read_parquet(v2 / "data")
    df = dataset.to_pandas()
    assert len(df) == len(everything) == sum(dataset.rows.values()) == 55
    held = dataset.to_pandas(["source_id", "split", "cycle_psnr"], direction="AtoB", split="test")
    expected = everything[(everything.direction == "AtoB") & (everything.split == "test")]
    assert sorted(held.source_id) == sorted(expected.source_id) and list(held.columns) == [
        "source_id", "split", "cycle_psnr"]
    assert len(dataset.to_pandas(["sample_id"], passed=False)) == 0
    assert dataset.to_table(["sample_id"], direction=["AtoB", "BtoA"], split=["train", "test"]).num_rows == 55
    with pytest.raises(ValueError, match="no direction"):
        dataset.files("CtoD")
    with pytest.raises(DatasetError, match="no manifest.json"):
        open_dataset(str(v2 / "data"))


class CountingFS(LocalFileSystem):
    """A local filesystem that counts the bytes read through it (pyarrow wraps it, as any fsspec one)."""

    bytes_read = 0

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        fs = self
        read = f.read

        def counted(n=-1):
            data = read(n)
            fs.bytes_read += len(data)
            return data

        f.read = counted
        return f


def test_pyarrow_filter_reads_no_image_bytes(photos):
    fs = CountingFS(skip_instance_cache=True)
    dataset = open_dataset(str(photos), filesystem=fs)
    image_bytes = sum(
        pq.read_metadata(f).row_group(i).column(j).total_compressed_size
        for f in (photos / "data").glob("*.parquet") for i in range(pq.read_metadata(f).num_row_groups)
        for j in range(pq.read_metadata(f).num_columns)
        if pq.read_metadata(f).row_group(i).column(j).path_in_schema.endswith(".bytes"))
    fs.bytes_read = 0
    table = dataset.to_table(["sample_id", "cycle_psnr"], direction="AtoB", split="test", passed=True)
    # 120 rows, every 5th held out, every 7th failed (dropped at publish) -> 24 - 4 (i % 35 == 0) rows.
    assert table.num_rows == 20
    assert image_bytes > 7_000_000 and fs.bytes_read < image_bytes / 20, (fs.bytes_read, image_bytes)
    # The same through pyarrow.dataset directly, with a filter expression.
    arrow = dataset.arrow()
    assert isinstance(arrow, ds.Dataset)
    n = arrow.count_rows(filter=(ds.field("direction") == "BtoA") & (ds.field("split") == "train"))
    assert n == sum(1 for i in range(120) if i % 5 and i % 7)


def test_huggingface_datasets_decodes_images(v2, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    plain = datasets.load_dataset("parquet", data_dir=str(v2 / "data"), cache_dir=str(tmp_path / "cache"))
    (split,) = plain.values()
    assert split.num_rows == 55 and isinstance(split.features["image"], datasets.Image)
    row = split[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (16, 16)
    assert isinstance(row["reconstruction"], Image.Image) and isinstance(row["cycle_psnr"], float)
    # The card's front matter names the directions as splits.
    by_card = datasets.load_dataset(str(v2), cache_dir=str(tmp_path / "cache2"))
    assert {k: v.num_rows for k, v in by_card.items()} == {"AtoB": 28, "BtoA": 27}


def _loader_keys(dataset: ShardedParquetDataset, workers: int) -> list[tuple[str, str]]:
    # Workers come from a fork server, not a fork of this process: once a Prefect flow has run in a
    # process (other tests here do), Prefect's at-fork handlers make forked children exit with 1.
    keys = []
    context = "forkserver" if workers else None
    for batch in DataLoader(dataset, batch_size=4, num_workers=workers, multiprocessing_context=context):
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (1, 16, 16)
        keys += [_key(d, s) for d, s in zip(batch["direction"], batch["source_id"], strict=True)]
    return keys


def test_torch_dataloader_two_workers_every_row_once(v2):
    dataset = open_dataset(str(v2))
    expected = collections.Counter(_key(d, s) for d, s in zip(
        *dataset.to_table(["direction", "source_id"]).to_pydict().values(), strict=True))
    cols = ["direction", "source_id", "image", "label"]
    torch_ds = dataset.torch(cols)
    assert len(torch_ds.units) > 2 and torch_ds.num_rows == 55
    got = collections.Counter(_loader_keys(torch_ds, workers=2))
    assert got == expected and set(got.values()) == {1}

    # Two DDP ranks with two workers each: disjoint, and together every row once.
    ranks = [collections.Counter(_loader_keys(dataset.torch(cols, rank=r, world_size=2), workers=2))
             for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and ranks[0] + ranks[1] == expected
    assert all(r.total() > 10 for r in ranks)
    # len() is what a rank yields, whatever the number of workers (a DataLoader's len() reads it).
    assert len(torch_ds) == 55 and len(DataLoader(torch_ds, batch_size=4)) == 14
    for r in (0, 1):
        one_rank = dataset.torch(cols, rank=r, world_size=2)
        assert len(one_rank) == ranks[r].total() == len(_loader_keys(one_rank, workers=0))

    # Selections apply; shuffling changes the order per epoch, not the rows.
    held = dataset.torch(cols, direction="BtoA", split="test", shuffle=True, seed=1)
    first = [(r["direction"], r["source_id"]) for r in held]
    held.set_epoch(1)
    second = [(r["direction"], r["source_id"]) for r in held]
    assert sorted(first) == sorted(second) and first != second and len(first) == 9 == len(held)
    assert {d for d, _ in first} == {"BtoA"}
    pil = next(iter(dataset.torch(["image"], decode="pil")))["image"]
    assert pil.size == (16, 16)


def test_torch_dataset_takes_rank_from_torch_distributed(v2, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        dataset = open_dataset(str(v2))
        assert dataset.torch(["sample_id"])._dist_slot() == (0, 1)
        assert sum(1 for _ in dataset.torch(["sample_id"])) == 55
    finally:
        dist.destroy_process_group()
    with pytest.raises(ValueError, match="rank 2"):
        next(iter(open_dataset(str(v2)).torch(["sample_id"], rank=2, world_size=2)))


def _ddp_rank(rank: int, v2: str, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        dataset = open_dataset(v2).torch(["direction", "source_id", "image", "label"])
        keys = _loader_keys(dataset, workers=2)
        Path(out, f"rank{rank}.txt").write_text("\n".join(f"{d} {s}" for d, s in keys))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_torch_ddp_two_ranks_split_the_rows(v2, tmp_path):
    # Two real gloo ranks, each with a 2-worker DataLoader and no rank given by hand.
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_rank, args=(str(v2), str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2,
                       start_method="forkserver")
    ranks = [collections.Counter(tuple(line.split()) for line in (tmp_path / f"rank{r}.txt").read_text().splitlines())
             for r in (0, 1)]
    expected = collections.Counter(_key(d, s) for d, s in zip(
        *open_dataset(str(v2)).to_table(["direction", "source_id"]).to_pydict().values(), strict=True))
    assert not set(ranks[0]) & set(ranks[1]) and ranks[0] + ranks[1] == expected
    assert all(r.total() > 10 for r in ranks)


def test_any_fsspec_url(v2):
    mem = fsspec.filesystem("memory")
    for p in v2.rglob("*"):
        if p.is_file():
            mem.pipe(f"/v2copy/{p.relative_to(v2).as_posix()}", p.read_bytes())
    try:
        dataset = open_dataset("memory://v2copy")
        assert dataset.verify() == []
        assert len(dataset.to_pandas(["sample_id"], direction="AtoB")) == 28
        assert sum(1 for _ in DataLoader(dataset.torch(["sample_id", "image"]), batch_size=None)) == 55
        assert "dataset_info" in dataset.card
    finally:
        mem.rm("/v2copy", recursive=True)
