"""Generate: translate ingested samples A->B and B->A in batches, with their cycle reconstructions.

Each direction is written as Parquet shards, a source sample going to shard
``int(source_id[:8], 16) % shards`` so the same source always lands in the same shard. A shard is
made by :func:`generate_shard`, alone (so an orchestrator can map over shards on several workers),
into a staging folder; :func:`commit_shards` then moves the staged shards into place. Rows made
before for the same source by the same model, under the same pixel settings, are reused, not
translated again: a nightly run over a grown collection translates only its new samples, and a
source that left the collection leaves the shards.

For audio (``audio`` settings given) the pictures are spectrograms: each translation and cycle is
also turned back into a waveform (Griffin-Lim, or the source clip's phase; ``data.audio.inversion``)
and stored as WAV beside the source clip.

A shard is streamed (issue 19): memory holds a few batches of ``generate.batch_size`` rows and a small
index (about a hundred bytes a source row), never the shard's pictures; the file is byte for byte the
one a whole-shard write makes. Over 500 lines on purpose, because the translation key
(``inputs.KEYS["translation"]``) names its code by module: the translator and the streaming that decides
which rows are translated, in which batches and order, stay in this one module so that a change to any of
them changes the key.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from . import inputs
from .config import DIRECTIONS, AudioConfig, GenerateConfig
from .devices import autocast, resolve_device
from .images import decode_png, encode_png, to_uint8
from .models import load_generators
from .runtime import StepRuntime
from .storage import PARQUET_READ_BUFFER, atomic_path, parquet_batches, sha256_bytes, sha256_file

Progress = Callable[[int, int], None]

GENERATED_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("direction", pa.string()),
        ("source_id", pa.string()),
        ("source_relpath", pa.string()),
        ("source_uri", pa.string()),
        ("split", pa.string()),
        ("label", pa.int64()),
        ("source_image", pa.binary()),
        ("image", pa.binary()),
        ("reconstruction", pa.binary()),
        # Audio only (null for images): the source clip, the translation and the cycle as WAV.
        ("source_audio", pa.binary()),
        ("audio", pa.binary()),
        ("reconstruction_audio", pa.binary()),
        ("model_fingerprint", pa.string()),
        ("created_at", pa.string()),
    ]
)
GENERATION_META = b"cycleaug.generation"
STAGING = ".staging"
SOURCE_BATCH_ROWS = 256  # manifest or generated rows decoded at a time while picking a shard's rows
INDEX_BATCH_ROWS = 16384  # rows of the small columns (ids, splits, fingerprints) decoded at a time
SOURCE_COLUMNS = ("sample_id", "relpath", "uri", "split", "label", "image", "audio")
SOURCE_DOMAIN = {"AtoB": "A", "BtoA": "B"}


@dataclass(frozen=True)
class ShardResult:
    """One generated shard: where it is staged, its content hash and how many rows were new."""

    direction: str
    shard: int
    file: str
    rows: int
    translated: int
    reused: int
    sha256: str
    model_fingerprint: str
    generation_key: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GenerateResult:
    out_dir: str
    model_fingerprint: str
    rows: dict[str, int]
    shards: dict[str, list[dict]]
    seconds: float
    translated: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def shard_of(key: str, shards: int) -> int:
    return int(key[:8], 16) % shards


def shard_name(direction: str, shard: int) -> str:
    return f"{direction}/part-{shard:05d}.parquet"


def generation_key(cfg: GenerateConfig, runtime: StepRuntime, audio: AudioConfig | None = None) -> str:
    """What a translation's bytes depend on besides the model and the source: the ``translation`` key's
    settings and code, the rounding of the generate step's ``runtime`` (precision, memory format,
    compiled kernels) and the device type where it is not the CPU (other kernels, other rounding)."""
    tree = {"generate": cfg.model_dump(mode="json"), "data": {"audio": None if audio is None else
                                                             audio.model_dump(mode="json")}}
    device = resolve_device(runtime.device, "runtime.device").type
    return inputs.key_of(tree, "translation", runtime=runtime.rounding(),
                         **({"device": device} if device != "cpu" else {}))


def now_stamp() -> str:
    """The time stamp for new rows: ``SOURCE_DATE_EPOCH`` when set (reproducible builds), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return when.replace(microsecond=0).isoformat()


def _in_shard(batch: pa.RecordBatch, cfg: GenerateConfig, shard: int) -> pa.Array:
    """Which rows of a manifest batch are of the configured splits and go to ``shard``."""
    ids, splits = batch.column("sample_id").to_pylist(), batch.column("split").to_pylist()
    return pa.array([sp in cfg.splits and shard_of(s, cfg.shards) == shard for s, sp in zip(ids, splits, strict=True)],
                    type=pa.bool_())


def shard_sources(manifest: str | Path, cfg: GenerateConfig, shard: int) -> pa.Table:
    """The manifest rows (configured splits) whose translations go to ``shard``, by source id, as one table.

    Reads the manifest a bounded batch at a time, but the table holds the whole shard: for small shards
    and checks. :func:`generate_shard` streams instead (memory set by ``generate.batch_size``)."""
    names = pq.read_schema(manifest).names
    kept = [pa.Table.from_batches([b]).filter(_in_shard(b, cfg, shard))
            for b in parquet_batches(manifest, names, SOURCE_BATCH_ROWS)]
    table = pa.concat_tables(kept) if kept else pq.read_schema(manifest).empty_table()
    return table.replace_schema_metadata(None).sort_by("sample_id")


def count_sources(manifest: str | Path, splits: tuple[str, ...]) -> int:
    """Rows of ``splits`` in a manifest, counted from its split column a batch at a time."""
    return sum(int(pc.sum(pc.is_in(b.column(0), value_set=pa.array(list(splits), pa.string()))).as_py() or 0)
               for b in parquet_batches(manifest, ["split"], 65536))


def shard_digest(manifest: str | Path, cfg: GenerateConfig, shard: int) -> str:
    """Content hash of what a shard is made from: its source samples, their splits and labels.

    Reads only the small columns (the sample id is the sha256 of the source's bytes), so a cache
    check costs milliseconds even for large collections.
    """
    cols = ["sample_id", "split", "label", "relpath", "uri"]
    items = []
    for batch in parquet_batches(manifest, cols, 65536):  # a batch at a time, keeping this shard's rows only
        items += [row for row in zip(*(batch.column(i).to_pylist() for i in range(len(cols))), strict=True)
                  if row[1] in cfg.splits and shard_of(row[0], cfg.shards) == shard]
    return sha256_bytes(json.dumps(sorted(items)).encode())


class _Inline:
    """An executor running each call at once in the calling thread (``generate.workers: 0``)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self) -> None:
        pass


def _encode_pair(fake: np.ndarray, rec: np.ndarray, level: int) -> tuple[bytes, bytes]:
    return encode_png(fake, level), encode_png(rec, level)


class Translator:
    """A forward and a backward generator on ``runtime.device``, fed PNG bytes and returning PNG bytes.

    The forwards run under ``runtime.precision`` autocast, in channels_last and compiled when asked. PNG
    decoding of the next batch and encoding of the last one run on ``cfg.workers`` threads (Pillow's
    zlib work releases the GIL) while the device translates; on a GPU the uint8 batch is copied from
    pinned memory and converted there. Results do not depend on ``workers``.
    """

    def __init__(self, forward: torch.nn.Module, backward: torch.nn.Module, cfg: GenerateConfig,
                 runtime: StepRuntime):
        self.cfg, self.rt = cfg, runtime
        self.device = resolve_device(runtime.device, "runtime.device")
        nets = []
        for net in (forward, backward):
            net = net.to(self.device).eval()
            if runtime.channels_last:
                net = net.to(memory_format=torch.channels_last)
            if runtime.compile:
                net = torch.compile(net, mode=runtime.compile_mode, backend=runtime.compile_backend, dynamic=False)
            nets.append(net)
        self.forward, self.backward = nets
        workers = min(32, os.cpu_count() or 1) if cfg.workers is None else cfg.workers
        self.pool: ThreadPoolExecutor | _Inline = (
            ThreadPoolExecutor(workers, thread_name_prefix="cycleaug-png") if workers else _Inline())

    def close(self) -> None:
        self.pool.shutdown()

    def __enter__(self) -> Translator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, H, W, C) -> uint8 translations and cycle reconstructions."""
        n = len(batch)
        if self.rt.compile and n < self.cfg.batch_size:  # one shape for the compiled graph
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.cfg.batch_size - n, axis=0)])
        raw = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            raw = raw.pin_memory()
        # As images.to_tensor, but converted to float on the device: a quarter of the bytes to copy.
        x = raw.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if self.rt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.rt.compile and self.rt.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # last batch's outputs were copied out: reuse their memory
        with autocast(self.device, self.rt.precision):
            fake = self.forward(x)
            rec = self.backward(fake)
        return to_uint8(fake[:n]), to_uint8(rec[:n])

    def batches(self, sources: Iterable[bytes]) -> Iterator[list[tuple[bytes, bytes]]]:
        """PNG bytes of ``forward(x)`` and ``backward(forward(x))`` for each source PNG, one list per
        batch of ``cfg.batch_size``, in order. The next batch is decoded, and the last one encoded,
        while the device works. ``sources`` is taken a batch at a time (one batch ahead), so an
        iterator reading sources as asked keeps memory to a few batches."""
        size, rest = self.cfg.batch_size, iter(sources)
        pool = self.pool

        def decode() -> list[Future]:  # the next batch, sent to the decoding threads
            return [pool.submit(decode_png, b) for b in itertools.islice(rest, size)]

        pending: deque[list[Future]] = deque()
        upcoming = decode()
        while upcoming:
            batch = np.stack([f.result() for f in upcoming])
            upcoming = decode() if len(upcoming) == size else []
            fake, rec = self._run(batch)
            level = self.cfg.png_compress_level
            pending.append([pool.submit(_encode_pair, f, r, level) for f, r in zip(fake, rec, strict=True)])
            if len(pending) > 1:
                yield [f.result() for f in pending.popleft()]
        while pending:
            yield [f.result() for f in pending.popleft()]

    def __call__(self, sources: list[bytes]) -> list[tuple[bytes, bytes]]:
        return [pair for batch in self.batches(sources) for pair in batch]


def translate(forward: torch.nn.Module, backward: torch.nn.Module, sources: list[bytes],
              cfg: GenerateConfig, runtime: StepRuntime) -> list[tuple[bytes, bytes]]:
    """PNG bytes of ``forward(x)`` and ``backward(forward(x))`` for each source PNG."""
    with Translator(forward, backward, cfg, runtime) as run:
        return run(sources)


def invert_audio(pictures: list[bytes], source_wavs: list[bytes], audio: AudioConfig,
                 device: torch.device | str = "cpu") -> list[bytes]:
    """WAV bytes of spectrogram PNGs, with the source clips' phase or Griffin-Lim (``audio.inversion``),
    the STFTs run on ``device``."""
    from .audio import Spectrogram, decode_wav, encode_wav, uint8_to_picture

    spec = Spectrogram(audio, device)
    pics = uint8_to_picture(np.stack([decode_png(b) for b in pictures]))
    phase = None
    if audio.inversion == "source_phase":
        phase = np.stack([decode_wav(b)[0] for b in source_wavs])
    waves = spec.invert(pics, phase_from=phase)
    return [encode_wav(w, audio.sample_rate) for w in waves]


def _previous_parts(out_dir: str | Path, direction: str, key: str) -> list[Path]:
    """The readable parts of ``direction`` under ``out_dir`` made under generation key ``key``, in name order."""
    parts = []
    for path in sorted((Path(out_dir) / direction).glob("part-*.parquet")):
        try:
            meta = pq.read_schema(path).metadata or {}
        except (OSError, pa.ArrowInvalid):
            continue  # an unreadable old shard is regenerated, not trusted
        if meta.get(GENERATION_META, b"").decode() == key:
            parts.append(path)
    return parts


def previous_rows(out_dir: str | Path, direction: str, source_ids: set[str], fingerprint: str,
                  key: str) -> dict[str, dict]:
    """Rows already generated for these sources by this model under this generation key, all at once (for
    small sets and checks; :func:`generate_shard` reads them a chunk at a time)."""
    found: dict[str, dict] = {}
    if not source_ids:
        return found
    wanted = pa.array(sorted(source_ids), type=pa.string())
    for path in _previous_parts(out_dir, direction, key):
        names = pq.read_schema(path).names
        for batch in parquet_batches(path, names, SOURCE_BATCH_ROWS):  # one bounded batch of the part at a time
            mask = pc.and_(pc.is_in(batch.column(names.index("source_id")), value_set=wanted),
                           pc.equal(batch.column(names.index("model_fingerprint")), fingerprint))
            for row in batch.filter(mask).to_pylist():
                found[row["source_id"]] = row
    return found


# --- streaming a shard ---------------------------------------------------------------------------
# A shard's sources are spread over the manifest in file order and written sorted by source id; the
# rows to reuse sit in old parts in their own order. Rather than hold the shard, generate_shard keeps
# an index of a few bytes a row (the sort order and where each reusable row is, from the small columns),
# copies the rows it needs once, in file order and a bounded batch at a time, into local scratch files
# of one row per record batch, and reads them back by position, a batch at a time in source-id order:
# each file is read once in order plus one read a row, never a row group a row (no N^2 reads).


def row_group_batches(path: str | Path, columns: list[str], rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``rows`` rows of a local Parquet file, a reader a row group, in file order.

    As :func:`~cyclegan_core.storage.parquet_batches`, but one reader over a whole file keeps buffers of
    its binary columns (pyarrow 26: by the last batch, about the whole column), a reader a row group does
    not: memory is set by ``rows`` and the file's row groups, not by the file."""
    with pq.ParquetFile(path, buffer_size=PARQUET_READ_BUFFER) as f:
        for g in range(f.num_row_groups):
            yield from f.iter_batches(rows, row_groups=[g], columns=columns, use_threads=False)


class _Spill:
    """Rows on local disk, one Arrow IPC record batch each, read back by position: a row costs one read
    whatever the order asked, and memory holds the rows asked for (and the file's index, 24 bytes a row)."""

    def __init__(self, path: Path):
        self.path, self.count = path, 0
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._file: pa.NativeFile | None = None
        self._reader: pa.ipc.RecordBatchFileReader | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if self._writer is None:
            self._sink = pa.BufferedOutputStream(pa.OSFile(str(self.path), "wb"), buffer_size=1 << 20)
            self._writer = pa.ipc.new_file(self._sink, batch.schema)
        self._writer.write_table(pa.Table.from_batches([batch]), max_chunksize=1)  # one record batch a row
        self.count += batch.num_rows

    def _seal(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()  # type: ignore[union-attr]
            self._writer = None

    def rows(self, positions: np.ndarray) -> list[dict]:
        """The rows at ``positions`` (numbered in the order added), as dicts, in the order asked."""
        if not len(positions):
            return []
        if self._reader is None:
            self._seal()
            self._file = pa.OSFile(str(self.path))
            self._reader = pa.ipc.open_file(self._file)
            if self._reader.num_record_batches != self.count:  # a row each, or positions would be wrong
                raise RuntimeError(f"{self.path}: {self._reader.num_record_batches} batches for {self.count} rows")
        return pa.concat_batches([self._reader.get_batch(int(i)) for i in positions]).to_pylist()

    def close(self) -> None:
        self._seal()
        if self._file is not None:
            self._file.close()
        self._file = self._reader = None


def _chunked(spill: _Spill, positions: np.ndarray, size: int) -> Iterator[dict]:
    """The rows of ``spill`` at ``positions``, read ``size`` at a time."""
    for i in range(0, len(positions), size):
        yield from spill.rows(positions[i:i + size])


def _shard_ids(manifest: str | Path, cfg: GenerateConfig, shard: int) -> pa.Array:
    """The source ids of ``shard``, in manifest order; reads the id and split columns only."""
    kept = [b.column("sample_id").filter(_in_shard(b, cfg, shard)).cast(pa.large_string())
            for b in row_group_batches(manifest, ["sample_id", "split"], INDEX_BATCH_ROWS)]
    return pa.concat_arrays(kept) if kept else pa.array([], pa.large_string())


def _reusable(parts: list[Path], ids: pa.Array, fingerprint: str, cfg: GenerateConfig, shard: int) -> pa.Table:
    """Where the rows of ``parts`` made by this model for ``ids`` (this shard's sources) are (``source_id``,
    ``part``, ``row``): one a source, the last found (as :func:`previous_rows` keeps), by part and row. Reads two
    small columns, keeps the rows of this shard's hash, and looks them up in ``ids`` once (not once a batch)."""
    found = [pa.table({"source_id": pa.array([], pa.large_string()), "part": pa.array([], pa.int32()),
                       "row": pa.array([], pa.int64())})]
    for p, path in enumerate(parts):
        start = 0
        for b in row_group_batches(path, ["source_id", "model_fingerprint"], INDEX_BATCH_ROWS):
            same = pc.fill_null(pc.equal(b.column("model_fingerprint"), fingerprint), False)
            sids = b.column("source_id").to_pylist()
            at = np.array([i for i in np.flatnonzero(same.to_numpy(zero_copy_only=False))
                           if sids[i] is not None and shard_of(sids[i], cfg.shards) == shard], dtype=np.int64)
            found.append(pa.table({"source_id": b.column("source_id").take(at).cast(pa.large_string()),
                                   "part": pa.array(np.full(len(at), p, np.int32)), "row": pa.array(at + start)}))
            start += b.num_rows
    table = pa.concat_tables(found)
    table = table.filter(pc.is_in(table.column("source_id"), value_set=ids))
    table = table.append_column("seq", pa.array(np.arange(len(table), dtype=np.int64)))
    last = table.group_by("source_id", use_threads=False).aggregate([("seq", "max")]).column("seq_max")
    return table.take(np.sort(last.to_numpy())).drop_columns(["seq"])  # seq order is part and row order


def _spill_sources(manifest: str | Path, cfg: GenerateConfig, shard: int, translate: np.ndarray,
                   spill: _Spill) -> None:
    """Copy the shard's manifest rows (in manifest order, as :func:`_shard_ids` lists them) to ``spill``, a
    bounded batch at a time; the pixels and clip only of those to ``translate``."""
    names = pq.read_schema(manifest).names
    changed = f"{manifest}: the manifest changed while shard {shard} was generated; generate it again"
    for b in row_group_batches(manifest, [c for c in SOURCE_COLUMNS if c in names], SOURCE_BATCH_ROWS):
        b = b.filter(_in_shard(b, cfg, shard))
        if spill.count + b.num_rows > len(translate):
            raise RuntimeError(changed)
        keep = translate[spill.count:spill.count + b.num_rows]
        for name in ("image", "audio") if not keep.all() else ():  # a reused row's old row has its source bytes
            if name in b.schema.names:
                i = b.schema.get_field_index(name)
                col = b.column(i)
                b = b.set_column(i, name, pc.if_else(pa.array(keep), col, pa.nulls(len(keep), col.type)))
        spill.add(b)
    if spill.count != len(translate):
        raise RuntimeError(changed)


def _spill_previous(parts: list[Path], where: pa.Table, spill: _Spill) -> None:
    """Copy the old rows ``where`` lists (by part and row) to ``spill`` in that order, a bounded batch at a time,
    as :data:`GENERATED_SCHEMA` columns (a column a part lacks is null, as :func:`previous_rows` makes it)."""
    schema = GENERATED_SCHEMA
    in_part, at_row = where.column("part").to_numpy(), where.column("row").to_numpy()
    for p, path in enumerate(parts):
        wanted = at_row[in_part == p]
        if not len(wanted):
            continue
        names = [n for n in schema.names if n in pq.read_schema(path).names]
        start = 0
        for b in row_group_batches(path, names, SOURCE_BATCH_ROWS):
            lo, hi = np.searchsorted(wanted, [start, start + b.num_rows])
            if hi > lo:
                rows = b.take(pa.array(wanted[lo:hi] - start))
                spill.add(pa.RecordBatch.from_arrays([rows.column(f.name).cast(f.type) if f.name in names
                                                      else pa.nulls(rows.num_rows, f.type) for f in schema],
                                                     schema=schema))
            start += b.num_rows
            if hi == len(wanted):
                break
    if spill.count != len(where):
        raise RuntimeError("an old part changed while a shard was generated; generate it again")


def _translations(rows: Iterator[dict], total: int, model_dir: Path, direction: str, cfg: GenerateConfig,
                  runtime: StepRuntime, audio: AudioConfig | None, progress: Progress | None,
                  ) -> Iterator[tuple[dict, dict]]:
    """Each source row of ``rows`` with its translation and cycle (and their WAVs for audio), in order, in
    batches of ``cfg.batch_size``. ``rows`` is read as the translator asks for it, a batch ahead."""
    gens, _ = load_generators(model_dir)
    fwd, bwd = (gens["G_AB"], gens["G_BA"]) if direction == "AtoB" else (gens["G_BA"], gens["G_AB"])
    taken: deque[dict] = deque()

    def images() -> Iterator[bytes]:
        for r in rows:
            taken.append(r)
            yield r["image"]

    done = 0
    with Translator(fwd, bwd, cfg, runtime) as run:
        for pairs in run.batches(images()):
            chunk = [taken.popleft() for _ in pairs]
            outs = [{"image": img, "reconstruction": rec} for img, rec in pairs]
            if audio is not None:
                wavs = [r["audio"] for r in chunk]
                for kind in ("image", "reconstruction"):
                    name = "audio" if kind == "image" else "reconstruction_audio"
                    waves = invert_audio([o[kind] for o in outs], wavs, audio, run.device)
                    for o, w in zip(outs, waves, strict=True):
                        o[name] = w
            done += len(chunk)
            if progress:
                progress(done, total)
            yield from zip(chunk, outs, strict=True)


def generate_shard(manifest: str | Path, direction: str, shard: int, model_dir: str | Path,
                   out_dir: str | Path, cfg: GenerateConfig, runtime: StepRuntime, created_at: str | None = None,
                   progress: Progress | None = None, audio: AudioConfig | None = None) -> ShardResult:
    """Make shard ``shard`` of ``direction`` under ``out_dir/.staging/``; reuse rows made before.

    ``manifest`` is the source collection's manifest (A for AtoB, B for BtoA). Only sources missing
    from the current shards (new samples, or a new model or generation key) are translated.
    ``runtime``: the generate step's (``Config.runtime.step("generate")``). ``audio``: the collections
    are audio; translations and cycles are also written as WAV.

    Streams: memory holds a few batches of ``generate.batch_size`` rows and ~100 bytes of index a source row,
    whatever the shard's size; the rows it needs are copied once to a scratch folder beside the staged shard
    (removed after). The file is the one the whole shard written at once would make: rows by source id,
    row groups of ``generate.batch_size`` rows, the new ones translated in batches of that size in order.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not 0 <= shard < cfg.shards:
        raise ValueError(f"shard {shard} is outside 0..{cfg.shards - 1} (generate.shards={cfg.shards})")
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    fingerprint = meta["fingerprint"]
    key = generation_key(cfg, runtime, audio)
    created_at = created_at or now_stamp()
    ids = _shard_ids(manifest, cfg, shard)
    parts = _previous_parts(out_dir, direction, key)
    where = _reusable(parts, ids, fingerprint, cfg, shard)
    old_at = pc.fill_null(pc.index_in(ids, value_set=where.column("source_id")), -1).to_numpy()
    order = pc.sort_indices(ids).to_numpy()  # sorted by source id, so the same rows always make the same bytes
    del ids
    where = where.drop_columns(["source_id"])  # the walk needs positions only
    todo = int((old_at < 0).sum())
    name = shard_name(direction, shard)
    target = Path(out_dir) / STAGING / name
    target.parent.mkdir(parents=True, exist_ok=True)
    schema = GENERATED_SCHEMA.with_metadata({GENERATION_META: key.encode()})
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{target.stem}.", dir=target.parent)))
        src = stack.enter_context(closing(_Spill(scratch / "sources.arrow")))
        old = stack.enter_context(closing(_Spill(scratch / "previous.arrow")))
        _spill_sources(manifest, cfg, shard, old_at < 0, src)
        _spill_previous(parts, where, old)
        made: Iterator[tuple[dict, dict]] = iter(())
        if todo:
            new = _chunked(src, order[old_at[order] < 0], cfg.batch_size)
            made = stack.enter_context(closing(_translations(new, todo, model_dir, direction, cfg, runtime, audio,
                                                             progress)))
        writer = stack.enter_context(pq.ParquetWriter(stack.enter_context(atomic_path(target)), schema))
        for lo in range(0, len(order), cfg.batch_size):  # one row group a translation batch, as one write makes
            at = order[lo:lo + cfg.batch_size]
            kept = at[old_at[at] >= 0]
            reused = zip(src.rows(kept), old.rows(old_at[kept]), strict=True)
            rows = []
            for i in at:
                if old_at[i] >= 0:
                    r, prev = next(reused)
                    # Provenance of the source can change (a file moved or relabelled) without a new translation.
                    rows.append(prev | {"source_relpath": r["relpath"], "source_uri": r["uri"], "split": r["split"],
                                        "label": r["label"]})
                    continue
                r, o = next(made)
                rows.append({
                    "sample_id": sha256_bytes(o.get("audio") or o["image"]), "direction": direction,
                    "source_id": r["sample_id"], "source_relpath": r["relpath"], "source_uri": r["uri"],
                    "split": r["split"], "label": r["label"], "source_image": r["image"], "image": o["image"],
                    "reconstruction": o["reconstruction"],
                    "source_audio": r.get("audio") if audio is not None else None, "audio": o.get("audio"),
                    "reconstruction_audio": o.get("reconstruction_audio"),
                    "model_fingerprint": fingerprint, "created_at": created_at,
                })
            writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=cfg.batch_size)
        if not len(order):  # an empty shard is one empty row group, as a whole-table write makes
            writer.write_table(schema.empty_table(), row_group_size=cfg.batch_size)
    return ShardResult(direction, shard, name, len(order), todo, len(order) - todo, sha256_file(target),
                       fingerprint, key)


def commit_shards(out_dir: str | Path, results: list[ShardResult | dict], shards: int,
                  seconds: float = 0.0) -> GenerateResult:
    """Move staged shards into place, drop shards beyond ``shards``, and describe the result.

    A shard listed but not staged (an orchestrator's cache said it is unchanged) must already be
    in place with the listed sha256; otherwise this raises, naming it. Each file is swapped in by
    a rename, so a reader sees an old or a new shard, never half of one.
    """
    out = Path(out_dir)
    res = [r if isinstance(r, ShardResult) else ShardResult(**r) for r in results]
    expected = {shard_name(d, k) for d in DIRECTIONS for k in range(shards)}
    if {r.file for r in res} != expected:
        raise ValueError(f"commit needs every shard of both directions once; got {sorted(r.file for r in res)}")
    for r in res:
        staged, final = out / STAGING / r.file, out / r.file
        if staged.exists() and sha256_file(staged) == r.sha256:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
        elif not final.exists() or sha256_file(final) != r.sha256:
            raise FileNotFoundError(f"{final}: shard missing or changed since it was generated; generate it again")
    for d in DIRECTIONS:
        for stale in (out / d).glob("part-*.parquet"):
            if f"{d}/{stale.name}" not in expected:
                stale.unlink()
    shutil.rmtree(out / STAGING, ignore_errors=True)
    fps = {r.model_fingerprint for r in res}
    return GenerateResult(
        str(out), fps.pop() if len(fps) == 1 else ",".join(sorted(fps)),
        {d: sum(r.rows for r in res if r.direction == d) for d in DIRECTIONS},
        {d: [{"file": r.file, "rows": r.rows, "sha256": r.sha256}
             for r in sorted(res, key=lambda r: r.shard) if r.direction == d] for d in DIRECTIONS},
        round(seconds, 2),
        {d: sum(r.translated for r in res if r.direction == d) for d in DIRECTIONS},
        {d: sum(r.reused for r in res if r.direction == d) for d in DIRECTIONS},
    )


def generate(manifest_a: str | Path, manifest_b: str | Path, model_dir: str | Path, out_dir: str | Path,
             cfg: GenerateConfig, runtime: StepRuntime, progress: Progress | None = None,
             created_at: str | None = None, audio: AudioConfig | None = None) -> GenerateResult:
    """Translate the configured splits of both collections; write ``out_dir/<direction>/*.parquet``."""
    t0 = time.perf_counter()
    manifests = {"AtoB": manifest_a, "BtoA": manifest_b}
    created_at = created_at or now_stamp()
    total = sum(count_sources(m, cfg.splits) for m in manifests.values())
    done = 0
    results = []
    for direction in DIRECTIONS:
        for k in range(cfg.shards):
            r = generate_shard(manifests[direction], direction, k, model_dir, out_dir, cfg, runtime, created_at,
                               audio=audio)
            results.append(r)
            done += r.rows
            if progress:
                progress(done, total)
    return commit_shards(out_dir, results, cfg.shards, time.perf_counter() - t0)


def read_generated(out_dir: str | Path, direction: str, columns: list[str] | None = None) -> pa.Table:
    files = sorted((Path(out_dir) / direction).glob("part-*.parquet"))
    if not files:
        return GENERATED_SCHEMA.empty_table() if columns is None else GENERATED_SCHEMA.empty_table().select(columns)
    # Shards carry their generation key as metadata; drop it so shards of other keys concatenate.
    return pa.concat_tables([pq.read_table(f, columns=columns).replace_schema_metadata(None) for f in files])
