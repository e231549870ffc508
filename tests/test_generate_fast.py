"""The generation fast path (the runtime's device/precision/channels_last/compile, generate.workers), small, on a
CPU."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cyclegan_core import generate as gen
from cyclegan_core import pipeline
from cyclegan_core.config import GenerateConfig, config_from_dict
from cyclegan_core.generate import GENERATION_META, Translator, generate_shard, generation_key
from cyclegan_core.images import decode_png, encode_png, to_tensor, to_uint8
from cyclegan_core.ingest import read_manifest
from cyclegan_core.models import load_generators
from cyclegan_core.runtime import StepRuntime
from cyclegan_core.storage import sha256_file
from tests.conftest import tiny_collections, tiny_settings


@pytest.fixture
def trained(tiny_cfg):
    pipeline.step_ingest(tiny_cfg)
    result = pipeline.step_train(tiny_cfg)
    sources = read_manifest(pipeline.manifest_path(tiny_cfg, "A")).column("image").to_pylist()
    return tiny_cfg, Path(result.model_dir), sources


def plain_translation(model_dir: Path, sources: list[bytes], batch_size: int) -> list[tuple[bytes, bytes]]:
    """The straightforward path: decode, eager fp32 forward on the CPU, encode, one batch at a time."""
    gens, _ = load_generators(model_dir)
    out = []
    with torch.inference_mode():
        for i in range(0, len(sources), batch_size):
            x = to_tensor([decode_png(b) for b in sources[i:i + batch_size]])
            fake = gens["G_AB"](x)
            rec = gens["G_BA"](fake)
            out += [(encode_png(f), encode_png(r)) for f, r in zip(to_uint8(fake), to_uint8(rec), strict=True)]
    return out


CPU = StepRuntime(device="cpu")


def split(settings: dict) -> tuple[GenerateConfig, StepRuntime]:
    """Keyword settings as the generate section and the generate step's runtime (on the CPU)."""
    runtime = {k: v for k, v in settings.items() if k in StepRuntime.model_fields}
    return (GenerateConfig(**{k: v for k, v in settings.items() if k not in runtime}),
            CPU.model_copy(update=runtime))


def run(model_dir: Path, sources: list[bytes], **settings) -> list[tuple[bytes, bytes]]:
    gens, _ = load_generators(model_dir)
    with Translator(gens["G_AB"], gens["G_BA"], *split(settings)) as translator:
        return translator(sources)


def pixels(pairs: list[tuple[bytes, bytes]]) -> np.ndarray:
    return np.stack([np.stack([decode_png(a), decode_png(b)]) for a, b in pairs]).astype(np.int16)


def test_worker_threads_change_nothing(trained):
    _, model_dir, sources = trained
    expected = plain_translation(model_dir, sources, 5)
    assert len(expected) == 24
    # 24 sources in batches of 5: four full batches and a short one, decoded and encoded on threads.
    for workers in (0, 1, 3):
        assert run(model_dir, sources, batch_size=5, workers=workers) == expected, workers

    # A faster zlib level: other bytes, the same pixels.
    fast_zlib = run(model_dir, sources, batch_size=5, workers=2, png_compress_level=1)
    assert fast_zlib != expected and np.array_equal(pixels(fast_zlib), pixels(expected))


def test_bf16_channels_last_and_compiled_forwards_run_on_cpu(trained):
    _, model_dir, sources = trained
    ref = pixels(plain_translation(model_dir, sources, 8))
    fast = run(model_dir, sources, batch_size=8, precision="bf16", channels_last=True, workers=2)
    assert len(fast) == 24 and pixels(fast).shape == ref.shape
    # bf16 keeps 8 significant bits: a few grey levels off at most, not different pictures.
    diff = np.abs(pixels(fast) - ref)
    assert diff.any() and diff.mean() < 2.0 and diff.max() <= 16, (diff.mean(), diff.max())

    # Compiled (aot_eager: cheap to build, the same graph capture as inductor): 24 = 2 full batches
    # of 10 and a short batch of 4, padded to the compiled shape and cut back.
    compiled = run(model_dir, sources, batch_size=10, compile=True, compile_backend="aot_eager", workers=2)
    assert len(compiled) == 24
    assert np.abs(pixels(compiled) - pixels(plain_translation(model_dir, sources, 10))).max() <= 1


def test_generation_key_follows_what_changes_bytes():
    key = generation_key(*split({}))
    assert generation_key(*split({"workers": 7})) == key  # threads never change bytes
    assert generation_key(GenerateConfig(), StepRuntime(device="auto")) == key or torch.cuda.is_available()
    for change in ({"precision": "bf16"}, {"channels_last": True}, {"compile": True}, {"batch_size": 32},
                   {"png_compress_level": 1}, {"compile": True, "compile_mode": "max-autotune"},
                   {"compile": True, "compile_backend": "aot_eager"}):
        assert generation_key(*split(change)) != key, change
    compiled = generation_key(*split({"compile": True}))
    assert generation_key(*split({"compile": True, "compile_mode": "max-autotune"})) != compiled
    # Compile settings without compile change nothing.
    assert generation_key(*split({"compile_mode": "max-autotune", "compile_backend": "aot_eager"})) == key


def test_a_shard_made_in_bf16_is_regenerated_in_fp32(trained, tmp_path):
    cfg, model_dir, _ = trained
    manifest = pipeline.manifest_path(cfg, "A")
    out = tmp_path / "gen"
    fast, bf16 = split({"shards": 1, "batch_size": 8, "precision": "bf16", "channels_last": True})
    first = generate_shard(manifest, "AtoB", 0, model_dir, out, fast, bf16)
    assert first.rows == 24 and first.translated == 24
    staged = out / ".staging" / first.file
    assert pq.read_schema(staged).metadata[GENERATION_META].decode() == generation_key(fast, bf16)
    meta = pq.read_metadata(staged)  # row groups of one translation batch: readers take a part in bounded pieces
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [8, 8, 8]
    (out / first.file).parent.mkdir(parents=True)
    staged.rename(out / first.file)

    again = generate_shard(manifest, "AtoB", 0, model_dir, out, fast.model_copy(update={"workers": 0}), bf16)
    assert again.reused == 24 and again.sha256 == first.sha256  # other thread count: same key, reused
    plain = generate_shard(manifest, "AtoB", 0, model_dir, out, fast, CPU)
    assert plain.translated == 24 and plain.reused == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(trained):
    _, model_dir, _ = trained
    gens, _ = load_generators(model_dir)
    with pytest.raises(RuntimeError, match=r"runtime.device=cuda:1 but torch sees no CUDA device"):
        Translator(gens["G_AB"], gens["G_BA"], GenerateConfig(), StepRuntime(device="cuda:1"))
    with pytest.raises(RuntimeError, match="runtime.device=cuda"):
        generation_key(GenerateConfig(), StepRuntime(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_translation_matches_cpu(trained):
    _, model_dir, sources = trained
    gens, _ = load_generators(model_dir)
    with Translator(gens["G_AB"], gens["G_BA"], GenerateConfig(batch_size=8), StepRuntime(device="cuda")) as translator:
        on_gpu = translator(sources)
    assert np.abs(pixels(on_gpu) - pixels(plain_translation(model_dir, sources, 8))).max() <= 1


@pytest.fixture
def trained48(tmp_path):
    """48 sources a domain (8 of them test), ingested, and a model."""
    cfg = config_from_dict(tiny_settings(tmp_path / "work", *tiny_collections(tmp_path / "raw", n=48, n_test=8)))
    pipeline.step_ingest(cfg)
    return cfg, Path(pipeline.step_train(cfg).model_dir)


def test_a_shard_streams_a_few_batches_at_a_time(trained48, tmp_path, monkeypatch):
    """Issue 19: memory is set by generate.batch_size, not by the shard. Rows are fetched a batch at a time,
    a few batches ahead of the writer at most, and the file is the one the whole shard written at once makes."""
    cfg, model_dir = trained48
    manifest = pipeline.manifest_path(cfg, "A")
    out = tmp_path / "gen"
    size = 4
    monkeypatch.setattr(gen, "SOURCE_BATCH_ROWS", 8)  # bytes columns are read 8 rows at a time
    monkeypatch.setattr(gen, "INDEX_BATCH_ROWS", 16)
    test_only = GenerateConfig(batch_size=size, shards=1, splits=("test",), workers=2)
    first = generate_shard(manifest, "AtoB", 0, model_dir, out, test_only, CPU, "2026-01-01T00:00:00+00:00")
    assert (first.rows, first.translated) == (8, 8)
    (out / "AtoB").mkdir()
    (out / ".staging" / first.file).rename(out / first.file)
    before = pq.read_table(out / first.file).to_pylist()

    reads, fetched, written, ahead = [], {"sources.arrow": 0, "previous.arrow": 0}, [0], [0]
    batches, rows_of = gen.row_group_batches, gen._Spill.rows
    write_table = pq.ParquetWriter.write_table

    def spy_batches(path, columns, rows):
        reads.append((Path(path).name, tuple(columns), rows))
        return batches(path, columns, rows)

    def spy_rows(self, positions):
        fetched[self.path.name] += len(positions)
        assert len(positions) <= size, "rows are fetched a translation batch at a time"
        ahead[0] = max(ahead[0], fetched["sources.arrow"] - written[0])
        return rows_of(self, positions)

    def spy_write(self, table, row_group_size=None):
        assert table.num_rows <= size, "the shard is written a row group at a time, never held whole"
        written[0] += table.num_rows
        return write_table(self, table, row_group_size=row_group_size)

    every = test_only.model_copy(update={"splits": ("train", "test")})
    with monkeypatch.context() as spied:
        spied.setattr(gen, "row_group_batches", spy_batches)
        spied.setattr(gen._Spill, "rows", spy_rows)
        spied.setattr(pq.ParquetWriter, "write_table", spy_write)
        r = generate_shard(manifest, "AtoB", 0, model_dir, out, every, CPU, "2026-01-02T00:00:00+00:00")
    assert (r.rows, r.translated, r.reused) == (48, 40, 8)
    assert fetched == {"sources.arrow": 48, "previous.arrow": 8} and written[0] == 48
    # Sources read from the spill but not yet written: the translator's look-ahead and one output batch, not
    # the shard (the whole-shard code held all 48 at once).
    assert 0 < ahead[0] <= 5 * size < r.rows, ahead
    # Pictures are read from the manifest and the old parts a bounded batch at a time; the index passes read
    # small columns only.
    for name, columns, rows in reads:
        assert rows <= 8 or not {"image", "source_image", "reconstruction", "audio"} & set(columns), (name, columns)
    assert {name for name, *_ in reads} == {"manifest.parquet", "part-00000.parquet"}
    assert sorted(p.name for p in (out / ".staging" / "AtoB").iterdir()) == ["part-00000.parquet"]  # scratch gone

    # The bytes a whole-table write of the same rows makes (the code before streaming): same order, schema,
    # metadata and row groups of batch_size.
    staged = out / ".staging" / r.file
    rows = pq.read_table(staged).to_pylist()
    assert [x["source_id"] for x in rows] == sorted(x["source_id"] for x in rows)
    reference = tmp_path / "reference.parquet"
    schema = gen.GENERATED_SCHEMA.with_metadata({GENERATION_META: generation_key(every, CPU).encode()})
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), reference, row_group_size=size)
    assert r.sha256 == sha256_file(staged) == sha256_file(reference)
    assert [pq.read_metadata(staged).row_group(i).num_rows for i in range(12)] == [size] * 12
    # The new rows translated as before: in batches of batch_size over the new sources by id.
    new = [x for x in rows if x["created_at"].startswith("2026-01-02")]
    assert [(x["image"], x["reconstruction"]) for x in new] == run(
        model_dir, [x["source_image"] for x in new], batch_size=size, workers=0)
    # The reused rows are the old ones.
    assert [x for x in rows if x["created_at"].startswith("2026-01-01")] == before


def test_the_last_old_row_of_a_source_is_reused(trained48, tmp_path):
    """An old row for the same source in two parts: the later part's is kept, as a dict by source id keeps."""
    cfg, model_dir = trained48
    manifest = pipeline.manifest_path(cfg, "A")
    out = tmp_path / "gen"
    settings = GenerateConfig(batch_size=5, shards=1, workers=0)
    first = generate_shard(manifest, "AtoB", 0, model_dir, out, settings, CPU, "2026-01-01T00:00:00+00:00")
    (out / "AtoB").mkdir()
    (out / ".staging" / first.file).rename(out / first.file)
    table = pq.read_table(out / first.file)
    later = table.slice(10, 20)
    later = later.set_column(later.schema.get_field_index("created_at"), "created_at",
                             pa.array(["2000-01-01T00:00:00+00:00"] * len(later)))
    pq.write_table(later.replace_schema_metadata(table.schema.metadata), out / "AtoB" / "part-00003.parquet",
                   row_group_size=3)
    (out / "AtoB" / "part-00004.parquet").write_bytes(b"not parquet")  # unreadable: ignored
    again = generate_shard(manifest, "AtoB", 0, model_dir, out, settings, CPU, "2026-01-02T00:00:00+00:00")
    assert (again.translated, again.reused) == (0, 48)
    stamps = pq.read_table(out / ".staging" / again.file, columns=["created_at"]).column(0).to_pylist()
    assert stamps == ["2026-01-01T00:00:00+00:00"] * 10 + ["2000-01-01T00:00:00+00:00"] * 20 + \
        ["2026-01-01T00:00:00+00:00"] * 18
