"""Publish: the translations that passed, as Parquet shards any Parquet reader opens.

Image columns use the Hugging Face ``struct<bytes: binary, path: string>`` layout and the schema
carries ``huggingface`` feature metadata, so ``datasets`` decodes them with no code of ours; pandas
and pyarrow read the same files. Every per-sample column of the validated table (metrics and the
pass flag) is copied as it is typed there, so a new metric reaches the dataset with no edit here.

Shards are stable under growth: a row's shard is a prefix of its source's sha256 (a hex trie that
splits a prefix into 16 only when its rows outgrow ``max_shard_bytes``), rows are sorted within a
shard, PNG bytes are stored as they are (no second compression), and a row that is unchanged since
the previous version keeps that version's provenance values. So adding source images rewrites only
the shards their rows fall in; every other shard keeps its exact bytes and DVC stores and pushes
only what changed. Nothing time-varying is written into shards: the publication time lives in
``manifest.json``, which lists every shard with its sha256, size and row count. The version is
built under a temporary name and swapped in whole.

Shard by shard, in bounded memory: :func:`plan_publish` assigns rows to shards from their small
columns, :func:`write_planned_shard` writes one shard from only its rows (gathered from the generated
parts one part at a time, in record batches, and encoded 100 at a time), :func:`commit_publish` writes
the manifest and card and swaps the version in. A task runner maps the middle step over workers;
:func:`publish` runs all three here.
:func:`build_rows` and :func:`write_shards` are the same layout for a direction held as one table (the
reference the shard-by-shard writer is tested against, byte for byte).

Over 500 lines on purpose: the schema, the shard layout, the plan and writer that make it in bounded
memory, the provenance carried over from the last version and the dataset card describe one published
version, and the card must name the same columns and provenance the shards hold; split apart, each
piece would import the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import DIRECTIONS
from .figures import BY_NAME
from .generate import GENERATED_SCHEMA, read_generated
from .storage import atomic_dir, atomic_path, parquet_batches, sha256_file, write_json_atomic
from .validate import read_validated

FORMAT = "cycleaug-dataset-2"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGE_COLUMNS = ("image", "source_image", "reconstruction")
# Audio datasets: the translation, its source clip and the cycle as WAV in the Hugging Face ``Audio``
# layout (the same struct; the ``huggingface`` metadata names the feature). ``image`` and friends
# then hold the spectrogram pictures the model translated.
AUDIO_COLUMNS = ("audio", "source_audio", "reconstruction_audio")
BYTES_COLUMNS = IMAGE_COLUMNS + AUDIO_COLUMNS
# About 100 rows per row group is the Hugging Face practice for image Parquet: a reader (or the
# dataset viewer) fetches a page of rows without pulling hundreds of MB.
ROW_GROUP_ROWS = 100
DEFAULT_MAX_SHARD_BYTES = 256 * 2**20
# Validated columns that are not per-sample figures: the key, the split (taken from generate) and
# the reason a row failed (published rows all passed).
NOT_COPIED_FROM_VALIDATED = ("sample_id", "split", "fail_reason")
# Describe how a row was made; kept from the previous version when the row is otherwise the same.
PROVENANCE_COLUMNS = ("code_version", "params_hash", "seed", "flow_run_id", "created_at")
# Low-cardinality strings: dictionary encoding makes them almost free.
DICTIONARY_COLUMNS = ("direction", "split", "model_fingerprint", "code_version", "params_hash", "mode",
                      "flow_run_id", "created_at")
# The card's data dictionary (per-sample figures are described in cyclegan_core.figures).
COLUMN_DOCS = {
    "sample_id": "sha256 of the translation's PNG (or WAV): the row's key",
    "image": "the translation G(x), PNG bytes ({bytes, path})",
    "source_image": "the source x it was translated from, PNG bytes",
    "reconstruction": "F(G(x)), the translation brought back to the source domain, PNG bytes",
    "direction": "AtoB or BtoA; also the Hugging Face split of this card",
    "split": "whether the source was a training sample of the model (train) or held out (test); not a "
             "Hugging Face split",
    "label": "the source's class from its collection's labels.csv (null without one); the translation keeps "
             "it where label_ok is true",
    "pred_label": "the class a label judge (a classifier trained on real target samples, not the translation "
                  "model) reads in G(x); null without labels",
    "label_ok": "pred_label equals label: the judge reads the source's class in the translation",
    "passed": "passed every per-sample bound: always true here, since only passing rows are published",
    "source_id": "sha256 of the source file's bytes",
    "source_uri": "where the source was read, relative to its collection",
    "model_fingerprint": "the model that translated the row (paths.models/<fingerprint>)",
    "code_version": "sha256 of the library code of the run that first published the row",
    "params_hash": "sha256 of the settings of that run",
    "seed": "train.seed of that run",
    "flow_run_id": "the Prefect flow run that first published the row (null outside Prefect)",
    "created_at": "when the translation was made (UTC)",
    "width": "picture width, px", "height": "picture height, px", "mode": "PIL mode of the pictures",
    "audio": "the translation as sound, WAV bytes", "source_audio": "the source clip, WAV bytes",
    "reconstruction_audio": "the cycle's clip, WAV bytes", "sample_rate": "Hz of the clips",
    "duration_s": "clip length, seconds",
}
MAX_WRITER_THREADS = 4
ROW_OVERHEAD_BYTES = 256  # estimated non-image bytes of a row, for shard sizing only
_HEX64 = re.compile(r"[0-9a-f]{64}")

_HEAD = [("sample_id", pa.string()), *((c, IMAGE_TYPE) for c in IMAGE_COLUMNS), ("direction", pa.string()),
         ("split", pa.string()), ("label", pa.int64())]
_TAIL = [("source_id", pa.string()), ("source_uri", pa.string()), ("model_fingerprint", pa.string()),
         ("code_version", pa.string()), ("params_hash", pa.string()), ("seed", pa.int64()),
         ("flow_run_id", pa.string()), ("created_at", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
         ("mode", pa.string())]


_AUDIO_HEAD = [(c, IMAGE_TYPE) for c in AUDIO_COLUMNS]
_AUDIO_TAIL = [("sample_rate", pa.int32()), ("duration_s", pa.float64())]


def published_schema(validated: pa.Schema, audio: bool = False, label_names: list[str] | None = None) -> pa.Schema:
    """The shard schema: fixed columns, then every per-sample column of ``validated`` as typed there.

    ``audio``: the three WAV columns follow the pictures, and the sample rate and clip duration
    follow the provenance. ``label_names``: the class names by id (:mod:`cyclegan_core.labelnames`),
    which make ``label`` and ``pred_label`` Hugging Face ``ClassLabel`` features.
    """
    head = _HEAD[:1] + (_AUDIO_HEAD if audio else []) + _HEAD[1:]
    tail = _TAIL + (_AUDIO_TAIL if audio else [])
    fixed = {name for name, _ in head + tail}
    metrics = [f for f in validated if f.name not in NOT_COPIED_FROM_VALIDATED]
    clash = [f.name for f in metrics if f.name in fixed]
    if clash:
        raise ValueError(f"validated columns {clash} clash with published columns of the same name")
    schema = pa.schema([*(pa.field(n, t) for n, t in head), *metrics, *(pa.field(n, t) for n, t in tail)])
    return schema.with_metadata(hf_metadata(schema, label_names))


# Arrow type names that differ from the Hugging Face ``Value`` dtype names.
_HF_DTYPE = {"double": "float64", "float": "float32", "halffloat": "float16"}


def _hf_feature(t: pa.DataType) -> dict | None:
    if t == IMAGE_TYPE:
        return {"_type": "Image"}
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t) \
            or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_timestamp(t):
        return {"dtype": _HF_DTYPE.get(str(t), str(t)), "_type": "Value"}
    return None  # nested types: `datasets` infers them from the Arrow schema


CLASS_COLUMNS = ("label", "pred_label")  # class ids: ClassLabel features where the labels have names


def hf_metadata(schema: pa.Schema, label_names: list[str] | None = None) -> dict[bytes, bytes]:
    feats = {f.name: ({"_type": "Audio"} if f.name in AUDIO_COLUMNS and f.type == IMAGE_TYPE else feat)
             for f in schema if (feat := _hf_feature(f.type)) is not None}
    if label_names is not None:
        feats |= {c: {"names": list(label_names), "_type": "ClassLabel"} for c in CLASS_COLUMNS if c in feats}
    return {b"huggingface": json.dumps({"info": {"features": feats}}).encode()}


def class_names(schema: pa.Schema) -> list[str] | None:
    """The class names a published schema carries (its ``label`` ClassLabel), or None where labels are ids."""
    try:
        feats = json.loads((schema.metadata or {})[b"huggingface"])["info"]["features"]
    except (KeyError, ValueError, TypeError):
        return None
    label = feats.get("label") or {}
    return list(label["names"]) if label.get("_type") == "ClassLabel" else None


@dataclass(frozen=True)
class PublishResult:
    out_dir: str
    manifest: str
    rows: dict[str, int]
    dropped: dict[str, int]
    shards: int

    def to_dict(self) -> dict:
        return asdict(self)


def shard_key(source_id: str) -> str:
    """The hex key a row is sharded by: its source's sha256 (hashed again if it is not one)."""
    return source_id if _HEX64.fullmatch(source_id) else hashlib.sha256(source_id.encode()).hexdigest()


def assign_shards(keys: list[str], sizes: list[int], max_bytes: int) -> dict[str, list[int]]:
    """Row indices per shard prefix: the whole set under ``""`` if it fits, else split by the next hex digit.

    A prefix's shard depends only on the rows under that prefix, so adding rows changes only the
    shards they fall in (a prefix that outgrows ``max_bytes`` becomes 16 shards under it).
    """
    out: dict[str, list[int]] = {}

    def split(prefix: str, idx: list[int]) -> None:
        if not idx:
            return
        depth = len(prefix)
        if sum(sizes[i] for i in idx) <= max_bytes or len(idx) == 1 or depth >= len(keys[idx[0]]):
            out[prefix] = idx
            return
        children: dict[str, list[int]] = {}
        for i in idx:
            children.setdefault(keys[i][depth], []).append(i)
        for digit in sorted(children):
            split(prefix + digit, children[digit])

    split("", list(range(len(keys))))
    return out


def shard_name(direction: str, prefix: str) -> str:
    # ``<direction>-<prefix>``: the ``<split>-*`` pattern Hugging Face uses to find a split's files.
    return f"data/{direction}-{prefix or 'all'}.parquet"


class _FollowingHash:
    """sha256 of a file that is being written, read back from the page cache as it grows.

    pyarrow writes Parquet append-only, so another thread can hash each new stretch while the
    writer encodes the next row groups (both outside the GIL): the manifest's hash then costs
    almost no wall time on a machine with a spare core and never a second pass after the write.
    """

    CHUNK = 4 << 20

    def __init__(self, path: Path) -> None:
        self._path, self._done, self._error = path, threading.Event(), None
        self._sha, self.size = hashlib.sha256(), 0
        self._thread = threading.Thread(target=self._follow, name="shard-sha256", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            with open(self._path, "rb", buffering=0) as f:
                while True:
                    finished = self._done.is_set()  # set before this read: the read sees every byte
                    chunk = f.read(self.CHUNK)
                    if chunk:
                        self._sha.update(chunk)
                        self.size += len(chunk)
                    elif finished:
                        return
                    else:
                        self._done.wait(0.002)
        except BaseException as err:
            self._error = err

    def hexdigest(self) -> str:
        self._done.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()


def _writer_options(schema: pa.Schema) -> dict:
    """Parquet writer options of a shard: PNG bytes stored as they are, zstd on free-text strings."""
    names = _leaf_paths(schema)
    raw = {f"{c}.bytes" for c in BYTES_COLUMNS if c in schema.names}
    dictionary = [f.name for f in schema if f.name in DICTIONARY_COLUMNS or pa.types.is_integer(f.type)]
    # zstd only where it pays: free-text strings (hex ids, URIs, image paths). PNG is already
    # deflated (zstd saves ~1% and costs a decompression on every read); dictionary columns and
    # floats gain next to nothing, and with 100-row row groups every compressed column chunk costs
    # a codec call: compressing all of them made the writer ~25% slower for <0.1% smaller files.
    zstd = {n for n in names if n not in raw and n.split(".")[0] not in dictionary
            and pa.types.is_string(_leaf_type(schema, n))}
    return {"compression": {n: ("zstd" if n in zstd else "none") for n in names}, "use_dictionary": dictionary,
            # Min/max of image bytes help no filter and bloat the footer.
            "write_statistics": [n for n in names if n not in raw]}


def write_shard(table: pa.Table, path: str | Path) -> tuple[int, str]:
    """One shard: row groups of ~100 rows, PNG bytes stored as they are, zstd on free-text strings.

    A second thread hashes the file as it grows (see ``_FollowingHash``). Returns (bytes, sha256).
    """
    path = Path(path)
    path.write_bytes(b"")  # exists before the hashing thread opens it
    follower = _FollowingHash(path)
    try:
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, **_writer_options(table.schema))
    finally:
        digest = follower.hexdigest()
    return follower.size, digest


def _leaf_type(schema: pa.Schema, path: str) -> pa.DataType:
    name, _, sub = path.partition(".")
    t = schema.field(name).type
    return t.field(sub).type if sub else t


def _leaf_paths(schema: pa.Schema) -> list[str]:
    out = []
    for f in schema:
        if pa.types.is_struct(f.type):
            out += [f"{f.name}.{sub.name}" for sub in f.type]
        else:
            out.append(f.name)
    return out


def _image(data: pa.ChunkedArray | pa.Array, paths: pa.ChunkedArray | pa.Array) -> pa.Array:
    data = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    paths = paths.combine_chunks() if isinstance(paths, pa.ChunkedArray) else paths
    return pa.StructArray.from_arrays([data.cast(pa.binary()), paths.cast(pa.string())], fields=list(IMAGE_TYPE))


def _aligned(gen: pa.Table, val: pa.Table, direction: str) -> pa.Table:
    """``val`` in the row order of ``gen`` (validate writes them in that order; check, else match by id)."""
    gen_ids, val_ids = gen.column("sample_id"), val.column("sample_id")
    if gen_ids.equals(val_ids):
        return val
    ids = val_ids.to_pylist()
    if len(ids) != gen.num_rows or len(set(ids)) != len(ids):
        raise ValueError(f"validated rows of {direction} do not match the generated rows "
                         f"({len(ids)} against {gen.num_rows}); run validate again")
    where = {sid: i for i, sid in enumerate(ids)}
    try:
        return val.take(pa.array([where[s] for s in gen_ids.to_pylist()], pa.int64()))
    except KeyError as err:
        raise ValueError(f"generated sample {err} of {direction} was not validated; run validate again") from None


def build_rows(generated_dir: str | Path, validated_dir: str | Path, direction: str, *, provenance: dict,
               mode: str, size: int | tuple[int, int], sample_rate: int | None = None) -> tuple[pa.Table, int]:
    """The passing rows of one direction as a table of the published schema, and how many were dropped.

    ``size``: the pictures' side, or (height, width); ``sample_rate``: the rows are audio clips at that rate.
    """
    gen = read_generated(generated_dir, direction)
    val = _aligned(gen, read_validated(validated_dir, direction), direction)
    audio = sample_rate is not None
    schema = published_schema(val.schema, audio)
    height, width = (size, size) if isinstance(size, int) else size
    total = gen.num_rows
    # The passing rows, gathered once and already in the shards' order (key, then sample id), so the
    # shard writer can slice them instead of copying every image byte a second time.
    passing = [i for i, ok in enumerate(pc.fill_null(val.column("passed"), False).to_pylist()) if ok]
    keys = [shard_key(s) for s in gen.column("source_id").to_pylist()]
    ids = gen.column("sample_id").to_pylist()
    order = pa.array(sorted(passing, key=lambda i: (keys[i], ids[i])), pa.int64())
    gen, val = gen.take(order), val.take(order)
    n = gen.num_rows
    sid, src = gen.column("sample_id"), gen.column("source_id")
    cols: dict[str, pa.Array | pa.ChunkedArray] = {
        "sample_id": sid,
        "image": _image(gen.column("image"), pc.binary_join_element_wise(sid, ".png", "")),
        "source_image": _image(gen.column("source_image"), pc.binary_join_element_wise(src, ".png", "")),
        "reconstruction": _image(gen.column("reconstruction"), pc.binary_join_element_wise(sid, ".rec.png", "")),
        "direction": pa.repeat(pa.scalar(direction), n), "split": gen.column("split"), "label": gen.column("label"),
        "source_id": src, "source_uri": gen.column("source_uri"),
        "model_fingerprint": gen.column("model_fingerprint"), "created_at": gen.column("created_at"),
        "width": pa.repeat(pa.scalar(width, pa.int32()), n), "height": pa.repeat(pa.scalar(height, pa.int32()), n),
        "mode": pa.repeat(pa.scalar(mode), n),
    }
    if audio:
        for c, key, ext in (("audio", sid, ".wav"), ("source_audio", src, ".wav"),
                            ("reconstruction_audio", sid, ".rec.wav")):
            if gen.column(c).null_count:
                raise ValueError(f"generated rows of {direction} have no {c}: generate them again as audio")
            cols[c] = _image(gen.column(c), pc.binary_join_element_wise(key, ext, ""))
        lengths = [_wav_frames(b) for b in gen.column("audio").to_pylist()[:1]]
        cols["sample_rate"] = pa.repeat(pa.scalar(sample_rate, pa.int32()), n)
        cols["duration_s"] = pa.repeat(pa.scalar(lengths[0] / sample_rate if lengths else 0.0, pa.float64()), n)
    for k, v in provenance.items():
        cols[k] = pa.repeat(pa.scalar(v, schema.field(k).type), n)
    for f in schema:
        if f.name not in cols:
            cols[f.name] = val.column(f.name)
    missing = [f.name for f in schema if f.name not in cols]
    if missing:
        raise ValueError(f"no value for published columns {missing}")
    table = pa.table({f.name: pc.cast(cols[f.name], f.type) for f in schema}, schema=schema)
    return table, total - n


def _wav_frames(data: bytes) -> int:
    import io

    import soundfile as sf

    return int(sf.info(io.BytesIO(data)).frames)


def _content_columns(schema: pa.Schema) -> list[str]:
    """Columns that say what a row is. Image bytes are compared through ``sample_id`` (the translation's
    sha256), ``source_id`` and ``model_fingerprint``, from which source and reconstruction follow, so a
    previous version is read without its images."""
    return [f.name for f in schema if f.name not in PROVENANCE_COLUMNS and f.name not in BYTES_COLUMNS]


class _Provenance:
    """The provenance of a previous version's rows by their content: rows equal to a previous row in every
    non-provenance column take that row's provenance values (see :func:`keep_provenance`)."""

    def __init__(self, previous: pa.Table | None, schema: pa.Schema):
        self.content = _content_columns(schema)
        self.old: dict[tuple, tuple] = {}
        if previous is None or not previous.num_rows:
            return
        if any(c not in previous.column_names for c in (*self.content, *PROVENANCE_COLUMNS)):
            return  # an older layout: nothing is the same row
        old_rows = zip(*(previous.column(c).to_pylist() for c in self.content), strict=True)
        old_prov = zip(*(previous.column(c).to_pylist() for c in PROVENANCE_COLUMNS), strict=True)
        for row, prov in zip(old_rows, old_prov, strict=True):
            self.old[_freeze(row)] = prov

    def apply(self, table: pa.Table) -> pa.Table:
        if not self.old or not table.num_rows:
            return table
        prov_new = {c: table.column(c).to_pylist() for c in PROVENANCE_COLUMNS}
        changed = False
        for i, row in enumerate(zip(*(table.column(c).to_pylist() for c in self.content), strict=True)):
            prov = self.old.get(_freeze(row))
            if prov is not None:
                for c, v in zip(PROVENANCE_COLUMNS, prov, strict=True):
                    if prov_new[c][i] != v:
                        prov_new[c][i], changed = v, True
        if not changed:
            return table
        for c in PROVENANCE_COLUMNS:
            idx = table.schema.get_field_index(c)
            field = table.schema.field(idx)
            table = table.set_column(idx, field, pa.array(prov_new[c], field.type))
        return table


def keep_provenance(table: pa.Table, previous: pa.Table | None) -> pa.Table:
    """Rows equal to a previous row in every non-provenance column take that row's provenance values.

    A nightly run then rewrites no shard whose rows did not change (the flow run id and the code
    and params hashes describe the run that first published a row; ``manifest.json`` has this run's).
    """
    return _Provenance(previous, table.schema).apply(table)


def _freeze(row: Iterable) -> tuple:
    return tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v for v in row)


def write_shards(table: pa.Table, out_root: str | Path, direction: str, max_shard_bytes: int) -> list[dict]:
    """Write one direction's rows as hash-prefix shards under ``out_root/data``; their manifest entries."""
    out_root = Path(out_root)
    (out_root / "data").mkdir(parents=True, exist_ok=True)
    keys = [shard_key(s) for s in table.column("source_id").to_pylist()]
    sizes = [ROW_OVERHEAD_BYTES] * table.num_rows
    for c in (c for c in BYTES_COLUMNS if c in table.column_names):
        lengths = pc.binary_length(pc.struct_field(table.column(c), "bytes")).to_pylist()
        sizes = [s + (n or 0) for s, n in zip(sizes, lengths, strict=True)]
    sample_ids = table.column("sample_id").to_pylist()
    # An empty direction still gets one (empty) shard, so every reader sees its schema.
    plan = assign_shards(keys, sizes, max_shard_bytes) if table.num_rows else {"": []}
    # Sorted by key, then sample id: the same rows always make the same bytes. Rows that already come
    # in that order (as build_rows gives them) are a slice of the table: no image byte is copied.
    plan = {p: sorted(idx, key=lambda i: (keys[i], sample_ids[i])) for p, idx in plan.items()}
    contiguous = {p: not idx or idx == list(range(idx[0], idx[0] + len(idx))) for p, idx in plan.items()}
    if not all(contiguous.values()):
        table = table.combine_chunks()  # one chunk per column: take() below is several times faster

    def one(prefix: str, idx: list[int]) -> dict:
        name = shard_name(direction, prefix)
        part = (table.slice(idx[0] if idx else 0, len(idx)) if contiguous[prefix]
                else table.take(pa.array(idx, pa.int64())))
        size, digest = write_shard(part, out_root / name)
        return {"file": name, "direction": direction, "key_prefix": prefix, "rows": len(idx),
                "bytes": size, "sha256": digest}

    # Shards are independent files: encode and hash them on several threads (pyarrow and hashlib
    # release the GIL), which a single-file writer cannot do.
    workers = max(1, min(len(plan), os.cpu_count() or 1, MAX_WRITER_THREADS))
    if workers == 1:
        return [one(p, idx) for p, idx in plan.items()]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, plan.keys(), plan.values()))


# ------------------------------------------------------------------------------- shard by shard
# A version is made in three steps that an orchestrator can spread over workers: ``plan_publish``
# reads the small columns (ids, split, labels, the validated figures, byte sizes), assigns rows to
# shards and writes that plan beside the version; ``write_planned_shard`` writes one shard from only
# its rows; ``commit_publish`` writes manifest.json and the card and swaps the version in. Memory is
# set by the shard's size (``max_shard_bytes``) and one generated part (the Parquet reader holds a
# column chunk of a row group whole: measured, batches of a one-row-group part cost the part), plus
# the plan's small columns; never by the image bytes of a direction. The bytes are those the
# whole-table path (build_rows, keep_provenance, write_shards) writes for the same rows.
PLAN_DIR = "plan"
PLAN_ROWS = 1024  # row groups of a plan file: a shard reads only those holding its rows
PART_BATCH_ROWS = ROW_GROUP_ROWS  # generated rows decoded at a time from one generated part
SCHEMA_META = b"cycleaug.published_schema"
_GENERATED_SMALL = ("sample_id", "source_id", "split", "label", "source_uri", "model_fingerprint", "created_at")


def staging_dir(out_dir: str | Path) -> Path:
    """Where the shards of the version being made wait for the commit (beside ``out_dir``)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.staging"


def _generated_parts(generated_dir: str | Path, direction: str) -> list[Path]:
    return sorted((Path(generated_dir) / direction).glob("part-*.parquet"))


def _light_rows(files: list[Path], bytes_cols: tuple[str, ...]) -> pa.Table:
    """The small generated columns of every row in file order, its published size in bytes, whether each
    bytes column is null, and where its bytes are (``_part``, ``_row``). Read in record batches; of the
    bytes columns only their lengths are kept."""
    out = []
    for p, path in enumerate(files):
        offset = 0
        for batch in parquet_batches(path, [*_GENERATED_SMALL, *bytes_cols]):
            n = batch.num_rows
            size = np.full(n, ROW_OVERHEAD_BYTES, np.int64)
            cols = {c: batch.column(c) for c in _GENERATED_SMALL}
            for c in bytes_cols:
                size += pc.fill_null(pc.binary_length(batch.column(c)), 0).to_numpy(zero_copy_only=False)
                cols[f"_null_{c}"] = pc.is_null(batch.column(c))
            cols |= {"_size": pa.array(size), "_part": pa.array(np.full(n, p, np.int32)),
                     "_row": pa.array(np.arange(offset, offset + n, dtype=np.int64))}
            out.append(pa.table(cols))
            offset += n
    if out:
        return pa.concat_tables(out)
    cols = {c: GENERATED_SCHEMA.field(c).type for c in _GENERATED_SMALL}
    cols |= {f"_null_{c}": pa.bool_() for c in bytes_cols}
    cols |= {"_size": pa.int64(), "_part": pa.int32(), "_row": pa.int64()}
    return pa.schema(list(cols.items())).empty_table()


def _validated_index(light: pa.Table, val: pa.Table, direction: str) -> pa.Array:
    """Row of ``val`` for each generated row (as ``_aligned``: in order, else matched by id)."""
    gen_ids, val_ids = light.column("sample_id"), val.column("sample_id")
    if gen_ids.equals(val_ids):
        return pa.array(np.arange(light.num_rows, dtype=np.int64))
    if val.num_rows != light.num_rows or pc.count_distinct(val_ids).as_py() != val.num_rows:
        raise ValueError(f"validated rows of {direction} do not match the generated rows "
                         f"({val.num_rows} against {light.num_rows}); run validate again")
    where = pc.index_in(gen_ids, value_set=val_ids.combine_chunks())
    if where.null_count:
        missing = gen_ids.filter(pc.is_null(where))[0].as_py()
        raise ValueError(f"generated sample {missing!r} of {direction} was not validated; run validate again")
    return where.combine_chunks() if isinstance(where, pa.ChunkedArray) else where


def _shard_keys(source_ids: pa.ChunkedArray) -> pa.Array:
    if pc.all(pc.match_substring_regex(source_ids, r"^[0-9a-f]{64}$")).as_py() is not False:
        return source_ids.combine_chunks()
    return pa.array([shard_key(s) for s in source_ids.to_pylist()], pa.string())


def _previous_shards(out_dir: Path, direction: str) -> list[dict] | None:
    """The previous version's shard entries of ``direction`` (None when there is none or it is unreadable)."""
    try:
        shards = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))["shards"]
        return [{"file": str(out_dir / s["file"]), "key_prefix": s["key_prefix"]} for s in shards
                if s["direction"] == direction]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plan_direction(generated_dir: str | Path, validated_dir: str | Path, direction: str, plan_file: str | Path, *,
                   provenance: dict, mode: str, size: int | tuple[int, int], max_shard_bytes: int,
                   sample_rate: int | None = None, out_dir: str | Path | None = None,
                   flagged: set[str] | None = None, label_names: list[str] | None = None) -> dict:
    """Plan one direction: its passing rows in shard order, written without their bytes to ``plan_file``,
    and one spec per output shard (:func:`write_planned_shard`). Reads the generated parts by small
    columns in record batches and the validated table whole (its scalar columns). Rows whose source id
    is in ``flagged`` (flagged by an analyst, :mod:`cyclegan_core.flags`) are left out and counted."""
    audio = sample_rate is not None
    bytes_cols = IMAGE_COLUMNS + (AUDIO_COLUMNS if audio else ())
    files = _generated_parts(generated_dir, direction)
    light = _light_rows(files, bytes_cols)
    # The one read of the validated output: whole, but its columns are small per-sample scalars.
    val = read_validated(validated_dir, direction)
    schema = published_schema(val.schema, audio, label_names)
    where = _validated_index(light, val, direction)
    total = light.num_rows
    passed = pc.fill_null(val.column("passed").take(where), False)
    light = light.append_column("_val", where).filter(passed)
    n_flagged = 0
    if flagged:
        keep = pa.array([sid not in flagged for sid in light.column("source_id").to_pylist()], pa.bool_())
        n_flagged = light.num_rows - pc.sum(keep.cast(pa.int64())).as_py() if light.num_rows else 0
        light = light.filter(keep)
    light = light.append_column("_key", _shard_keys(light.column("source_id")))
    light = light.sort_by([("_key", "ascending"), ("sample_id", "ascending")])  # stable, as build_rows sorts
    n = light.num_rows
    height, width = (size, size) if isinstance(size, int) else size
    cols: dict[str, pa.Array | pa.ChunkedArray] = {c: light.column(c) for c in _GENERATED_SMALL}
    cols |= {"direction": pa.repeat(pa.scalar(direction), n), "width": pa.repeat(pa.scalar(width, pa.int32()), n),
             "height": pa.repeat(pa.scalar(height, pa.int32()), n), "mode": pa.repeat(pa.scalar(mode), n)}
    if audio:
        for c in AUDIO_COLUMNS:
            if pc.any(light.column(f"_null_{c}")).as_py():
                raise ValueError(f"generated rows of {direction} have no {c}: generate them again as audio")
        first = _row_bytes(files[light.column("_part")[0].as_py()], light.column("_row")[0].as_py(), "audio") \
            if n else None
        cols["sample_rate"] = pa.repeat(pa.scalar(sample_rate, pa.int32()), n)
        cols["duration_s"] = pa.repeat(pa.scalar(_wav_frames(first) / sample_rate if n else 0.0, pa.float64()), n)
    for k, v in provenance.items():
        cols[k] = pa.repeat(pa.scalar(v, schema.field(k).type), n)
    taken = val.take(light.column("_val"))
    small = [f for f in schema if f.name not in BYTES_COLUMNS]
    for f in small:
        if f.name not in cols:
            cols[f.name] = taken.column(f.name)
    table = pa.table({f.name: pc.cast(cols[f.name], f.type) for f in small}
                     | {"_part": light.column("_part"), "_row": light.column("_row")})
    meta = {SCHEMA_META: schema.serialize().to_pybytes()}
    plan_file = Path(plan_file)
    with atomic_path(plan_file) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, row_group_size=PLAN_ROWS)
    keys = light.column("_key").to_pylist()
    plan = assign_shards(keys, light.column("_size").to_pylist(), max_shard_bytes) if n else {"": []}
    previous = _previous_shards(Path(out_dir), direction) if out_dir is not None else None
    specs = []
    for prefix, idx in plan.items():
        # Rows come sorted, so each shard is a run of the plan; its previous rows are in the previous
        # version's shards on the same branch of the trie (an ancestor, itself, or descendants).
        assert not idx or idx[-1] - idx[0] + 1 == len(idx), prefix
        prev = None if previous is None else [s["file"] for s in previous
                                              if prefix.startswith(s["key_prefix"]) or
                                              s["key_prefix"].startswith(prefix)]
        specs.append({"direction": direction, "prefix": prefix, "file": shard_name(direction, prefix),
                      "start": idx[0] if idx else 0, "stop": idx[-1] + 1 if idx else 0, "plan": str(plan_file),
                      "parts": [str(f) for f in files], "previous": prev})
    splits = {k: int(v) for k, v in sorted(_value_counts(light.column("split")).items())} if n else {}
    return {"direction": direction, "rows": n, "dropped": total - n - n_flagged, "flagged": n_flagged,
            "splits": splits, "shards": specs, "plan": str(plan_file)}


def _row_bytes(path: Path, row: int, column: str) -> bytes:
    """The value of ``column`` in row ``row`` of a generated part, read in record batches."""
    offset = 0
    for batch in parquet_batches(path, [column]):
        if row < offset + batch.num_rows:
            return batch.column(0)[row - offset].as_py()
        offset += batch.num_rows
    raise IndexError(f"{path}: no row {row}")


def _shard_bytes(spec: dict, parts: np.ndarray, where: np.ndarray, columns: list[str]) -> dict[int, pa.Table]:
    """The bytes columns of a shard's rows, per generated part, in row order. Parts are read one after
    the other in record batches and only this shard's rows are kept, so memory is the shard's rows plus
    what the Parquet reader holds of one part (it reads a column chunk of a row group whole)."""
    out = {}
    for p in np.unique(parts):
        needed = np.unique(where[parts == p])
        pieces, offset = [], 0
        for batch in parquet_batches(spec["parts"][p], columns, PART_BATCH_ROWS):
            here = np.arange(offset, offset + batch.num_rows)
            pos = np.minimum(np.searchsorted(needed, here), len(needed) - 1)
            keep = needed[pos] == here
            if keep.any():
                pieces.append(pa.Table.from_batches([batch]).replace_schema_metadata(None).filter(pa.array(keep)))
            offset += batch.num_rows
            if offset > needed[-1]:
                break
        out[int(p)] = pa.concat_tables(pieces).combine_chunks()
    return out


def _planned_rows(spec: dict) -> tuple[pa.Schema, pa.Table]:
    """The published schema and the shard's rows of the plan (small columns and locators)."""
    plan = pq.ParquetFile(spec["plan"])
    schema = pa.ipc.read_schema(pa.py_buffer(plan.schema_arrow.metadata[SCHEMA_META]))
    start, stop = spec["start"], spec["stop"]
    if stop <= start:
        return schema, plan.schema_arrow.empty_table()
    groups = list(range(start // PLAN_ROWS, (stop - 1) // PLAN_ROWS + 1))
    return schema, plan.read_row_groups(groups).slice(start - groups[0] * PLAN_ROWS, stop - start)


def planned_chunks(spec: dict, provenance: _Provenance | None = None) -> Iterator[pa.Table]:
    """The rows of one planned shard as published tables of at most ROW_GROUP_ROWS rows, in order, their
    bytes gathered by :func:`_shard_bytes`."""
    schema, rows = _planned_rows(spec)
    bytes_cols = [f.name for f in schema if f.name in BYTES_COLUMNS]
    parts = rows.column("_part").to_numpy()
    where = rows.column("_row").to_numpy()
    held = _shard_bytes(spec, parts, where, bytes_cols)
    needed = {p: np.unique(where[parts == p]) for p in held}
    if not rows.num_rows:
        yield schema.empty_table()
    for s in range(0, rows.num_rows, ROW_GROUP_ROWS):
        chunk = rows.slice(s, ROW_GROUP_ROWS)
        cp, cw = parts[s:s + ROW_GROUP_ROWS], where[s:s + ROW_GROUP_ROWS]
        pieces, order, offset = [], np.zeros(len(cp), np.int64), 0
        for p in np.unique(cp):
            sel = np.flatnonzero(cp == p)
            pieces.append(held[int(p)].take(pa.array(np.searchsorted(needed[int(p)], cw[sel]))))
            order[sel] = offset + np.arange(len(sel))
            offset += len(sel)
        gen = pa.concat_tables(pieces).take(pa.array(order))
        sid, src = chunk.column("sample_id"), chunk.column("source_id")
        paths = {"image": (sid, ".png"), "source_image": (src, ".png"), "reconstruction": (sid, ".rec.png"),
                 "audio": (sid, ".wav"), "source_audio": (src, ".wav"), "reconstruction_audio": (sid, ".rec.wav")}
        cols = {c: _image(gen.column(c), pc.binary_join_element_wise(paths[c][0], paths[c][1], ""))
                for c in bytes_cols}
        table = pa.table({f.name: pc.cast(cols[f.name] if f.name in cols else chunk.column(f.name), f.type)
                          for f in schema}, schema=schema)
        yield table if provenance is None else provenance.apply(table)


def _previous_for(spec: dict, schema: pa.Schema) -> pa.Table | None:
    """The previous version's rows under this shard's prefix, content and provenance columns only,
    read shard by shard in record batches (None if there is none or it is unusable)."""
    if spec.get("previous") is None:
        return None
    columns = [*_content_columns(schema), *PROVENANCE_COLUMNS]
    prefix = spec["prefix"]
    try:
        tables = []
        for f in spec["previous"]:
            if not Path(f).exists():
                continue
            for batch in parquet_batches(f, columns, PLAN_ROWS):
                keep = [shard_key(s).startswith(prefix) for s in batch.column("source_id").to_pylist()]
                tables.append(pa.Table.from_batches([batch]).filter(pa.array(keep, pa.bool_())))
        return pa.concat_tables(tables, promote_options="permissive") if tables else None
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None  # another layout or a damaged version: rows just take this run's provenance


def write_planned_shard(spec: dict, staging: str | Path) -> dict:
    """Write one planned shard to ``staging/<file>`` from only its rows; its manifest entry.

    Rows are encoded ROW_GROUP_ROWS at a time into one Parquet writer (a row group each, as
    ``write_shard`` makes them) and the file is hashed as it grows.
    """
    schema = _planned_rows(spec)[0]
    provenance = _Provenance(_previous_for(spec, schema), schema)
    target = Path(staging) / spec["file"]
    rows = 0
    with atomic_path(target) as tmp:
        follower = _FollowingHash(tmp)
        try:
            with pq.ParquetWriter(tmp, schema, **_writer_options(schema)) as writer:
                for table in planned_chunks(spec, provenance):
                    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                    rows += table.num_rows
        finally:
            digest = follower.hexdigest()
    return {"file": spec["file"], "direction": spec["direction"], "key_prefix": spec["prefix"], "rows": rows,
            "bytes": follower.size, "sha256": digest}


def plan_publish(generated_dir: str | Path, validated_dir: str | Path, out_dir: str | Path, *, provenance: dict,
                 mode: str, size: int | tuple[int, int], max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                 sample_rate: int | None = None, flagged: dict[str, set[str]] | None = None,
                 label_names: list[str] | None = None) -> dict:
    """Plan a version of both directions under a fresh :func:`staging_dir`; a small JSON-able dict whose
    ``shards`` are the specs to hand to :func:`write_planned_shard` (in any order, on any worker that
    sees these folders) before :func:`commit_publish`. ``flagged``: per direction, the source ids an
    analyst flagged; their rows are left out and counted as ``flagged``. ``label_names``: the class names
    by id, for the ClassLabel features."""
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir).resolve()  # specs name absolute paths: a worker may run elsewhere
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted run's leftovers
    (staging / PLAN_DIR).mkdir(parents=True)
    try:
        plans = [plan_direction(Path(generated_dir).resolve(), validated_dir, d, staging / PLAN_DIR / f"{d}.parquet",
                                provenance=provenance, mode=mode, size=size, max_shard_bytes=max_shard_bytes,
                                sample_rate=sample_rate, out_dir=out_dir.resolve(),
                                flagged=(flagged or {}).get(d), label_names=label_names) for d in DIRECTIONS]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-made stays beside the version
        raise
    return {"out_dir": str(out_dir), "staging": str(staging), "provenance": provenance,
            "max_shard_bytes": max_shard_bytes, "rows": {p["direction"]: p["rows"] for p in plans},
            "dropped": {p["direction"]: p["dropped"] for p in plans},
            "flagged": {p["direction"]: p["flagged"] for p in plans},
            "splits": {p["direction"]: p["splits"] for p in plans},
            "shards": [s for p in plans for s in p["shards"]], "schema_from": plans[-1]["plan"]}


def staged_shard_in_place(plan: dict, entry: dict) -> bool:
    """Whether a shard's manifest entry (perhaps from a cache) is staged, or in the current version, with its sha256."""
    for root in (Path(plan["staging"]), Path(plan["out_dir"])):
        path = root / entry["file"]
        if path.exists() and path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]:
            return True
    return False


def commit_publish(plan: dict, entries: list[dict], *, card_info: dict | None = None,
                   published_at: str | None = None) -> PublishResult:
    """Swap in the planned version: its shards (staged, or unchanged in the current version), manifest.json
    listing them in plan order and the card. The previous version stays whole until then."""
    out_dir, staging = Path(plan["out_dir"]), Path(plan["staging"])
    by_file = {e["file"]: e for e in entries}
    if sorted(by_file) != sorted(s["file"] for s in plan["shards"]):
        raise ValueError(f"commit needs every planned shard once; got {sorted(by_file)}")
    listing = [by_file[s["file"]] for s in plan["shards"]]
    schema = pa.ipc.read_schema(pa.py_buffer(pq.read_schema(plan["schema_from"]).metadata[SCHEMA_META]))
    with atomic_dir(out_dir) as tmp:
        (tmp / "data").mkdir()
        for e in listing:
            staged, current = staging / e["file"], out_dir / e["file"]
            if staged.exists() and staged.stat().st_size == e["bytes"]:  # written by this run: hashed then
                os.replace(staged, tmp / e["file"])
            elif current.exists() and sha256_file(current) == e["sha256"]:  # a cached shard, unchanged
                shutil.copyfile(current, tmp / e["file"])
            else:
                raise FileNotFoundError(f"{e['file']}: shard missing or changed since it was written; publish again")
        manifest = {
            "format": FORMAT,
            "published_at": published_at or datetime.now(UTC).replace(microsecond=0).isoformat(),
            "rows": plan["rows"], "dropped": plan["dropped"],
            "flagged": plan.get("flagged", {d: 0 for d in DIRECTIONS}), "splits": plan["splits"], "shards": listing,
            "provenance": plan["provenance"], "max_shard_bytes": plan["max_shard_bytes"],
            "columns": {f.name: str(f.type) for f in schema},
        }
        write_json_atomic(tmp / "manifest.json", manifest)
        (tmp / "README.md").write_text(dataset_card(manifest, schema, **(card_info or {})), encoding="utf-8")
    shutil.rmtree(staging, ignore_errors=True)
    return PublishResult(str(out_dir), str(out_dir / "manifest.json"), plan["rows"], plan["dropped"], len(listing))


def write_planned_shards(plan: dict, workers: int | None = None) -> list[dict]:
    """Every planned shard, on up to ``workers`` threads (pyarrow and hashlib release the GIL); memory
    is a few row groups a thread."""
    specs = plan["shards"]
    n = workers or max(1, min(len(specs), os.cpu_count() or 1, MAX_WRITER_THREADS))
    if n == 1:
        return [write_planned_shard(s, plan["staging"]) for s in specs]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(write_planned_shard, specs, [plan["staging"]] * len(specs)))


def publish(generated_dir: str | Path, validated_dir: str | Path, out_dir: str | Path, *, provenance: dict,
            mode: str, size: int | tuple[int, int], max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
            card_info: dict | None = None, published_at: str | None = None,
            sample_rate: int | None = None) -> PublishResult:
    """Write the passing rows to ``out_dir/data/<direction>-<prefix>.parquet``, ``manifest.json`` and a card.

    ``provenance`` holds the run's ``code_version``, ``params_hash``, ``seed`` and ``flow_run_id``;
    ``card_info`` optional extras for the card (``figures`` per direction, ``model``, ``sources``).
    Plan, every shard, commit: what a task runner maps over shards, here in one process.
    """
    plan = plan_publish(generated_dir, validated_dir, out_dir, provenance=provenance, mode=mode, size=size,
                        max_shard_bytes=max_shard_bytes, sample_rate=sample_rate)
    try:
        return commit_publish(plan, write_planned_shards(plan), card_info=card_info, published_at=published_at)
    finally:
        shutil.rmtree(plan["staging"], ignore_errors=True)


def _value_counts(arr: pa.ChunkedArray) -> dict[str, int]:
    return {d["values"]: d["counts"] for d in pc.value_counts(arr).to_pylist()}


def _card_dtype(t: pa.DataType, name: str = "") -> str:
    feat = _hf_feature(t)
    if feat is None:
        return str(t)
    if name in AUDIO_COLUMNS and t == IMAGE_TYPE:
        return "audio"
    return "image" if feat["_type"] == "Image" else feat["dtype"]


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _column_doc(name: str) -> str:
    f = BY_NAME.get(name)
    return (f.doc if f is not None and f.doc else COLUMN_DOCS.get(name, "")).replace("|", "/")


def dataset_card(manifest: dict, schema: pa.Schema, *, figures: dict | None = None, model: dict | None = None,
                 sources: dict | None = None, utility: dict | None = None, bounds: list[str] | None = None) -> str:
    """README with YAML front matter (features, splits, counts) and the version's model and figures."""
    rows, splits, figures = manifest["rows"], manifest["splits"], figures or {}
    by_dir: dict[str, int] = {}
    for s in manifest["shards"]:
        by_dir[s["direction"]] = by_dir.get(s["direction"], 0) + s["bytes"]
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for d in rows:
        lines += [f"  - split: {d}", f"    path: data/{d}-*.parquet"]
    lines += ["dataset_info:", "  features:"]
    classes = class_names(schema)
    for f in schema:
        if classes is not None and f.name in CLASS_COLUMNS:  # the card's form of a ClassLabel
            lines += [f"  - name: {f.name}", "    dtype:", "      class_label:", "        names:"]
            lines += [f"          '{i}': {json.dumps(n)}" for i, n in enumerate(classes)]
            continue
        lines += [f"  - name: {f.name}", f"    dtype: {_card_dtype(f.type, f.name)}"]
    lines += ["  splits:"]
    for d, n in rows.items():
        lines += [f"  - name: {d}", f"    num_examples: {n}", f"    num_bytes: {by_dir.get(d, 0)}"]
    lines += [f"  dataset_size: {sum(by_dir.values())}", "tags:", "- cycleaug", "- cyclegan", "- augmentation",
              "---", "", "# CycleAug augmented dataset", ""]
    total = sum(rows.values())
    src = sources or {}
    intro = f"{total} translations in {len(manifest['shards'])} Parquet shards"
    if src and src.get("kind") == "audio":
        intro += (f", between collection A (`{src.get('A')}`) and collection B (`{src.get('B')}`): "
                  f"{src.get('duration_s')} s clips at {src.get('sample_rate')} Hz, translated as "
                  f"{src.get('bins')} x {src.get('frames')} log-magnitude spectrograms ({src.get('representation')}) "
                  f"and turned back into sound by {src.get('inversion')}")
    elif src:
        intro += (f", between collection A (`{src.get('A')}`) and collection B (`{src.get('B')}`), "
                  f"{src.get('size')}x{src.get('size')} `{src.get('mode')}` images")
    lines += [intro + ". Only translations that passed the per-sample bounds are included, and the run passed "
              "the run-level bounds in force (listed below). Hugging Face splits are the directions (`AtoB`, "
              "`BtoA`); the `split` column says whether the source was a training or held-out sample.", ""]
    names = sorted({s for v in splits.values() for s in v})
    lines += ["| direction | rows | dropped by the gate | flagged by analysts | " + " | ".join(names) + " |"]
    lines += ["|---|---|---|---|" + "---|" * len(names)]
    for d, n in rows.items():
        lines.append(f"| {d} | {n} | {manifest['dropped'].get(d, 0)} | {manifest.get('flagged', {}).get(d, 0)} | "
                     + " | ".join(str(splits[d].get(s, 0)) for s in names) + " |")
    if figures:
        keys = sorted({k for f in figures.values() for k, v in f.items() if isinstance(v, int | float | None)})
        lines += ["", "Figures of this version (held-out samples unless the name says otherwise):", "",
                  "| figure | " + " | ".join(figures) + " |", "|---|" + "---|" * len(figures)]
        lines += [f"| {k} | " + " | ".join(_fmt(figures[d].get(k)) for d in figures) + " |" for k in keys]
    if bounds is not None:
        lines += ["", "Bounds in force when this version was published (`params.yaml`, `validate`; null ones are off):",
                  ""]
        lines += [f"- {b}" for b in bounds] or ["- none: no per-sample or run-level bound was set"]
    if utility:
        from .report import utility_markdown

        lines += ["", utility_markdown(utility).replace("![utility.png](utility.png)", "").rstrip()]
    lines += ["", "## Features", "", "| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{f.name}` | {_card_dtype(f.type, f.name)} | {_column_doc(f.name)} |" for f in schema]
    lines += ["", "`image`, `source_image` and `reconstruction` are PNG bytes (`{bytes, path}`); `sample_id` is "
              "the sha256 of the translation's PNG, `source_id` that of the source. Provenance columns "
              f"({', '.join(f'`{c}`' for c in PROVENANCE_COLUMNS)}) describe the run that first published a "
              "row; rows unchanged since then keep them, so unchanged shards keep their bytes.", ""]
    lines += ["## Model and provenance", ""]
    lines += [f"- {k}: `{v}`" for k, v in {**(model or {}), **manifest["provenance"]}.items()]
    lines += [f"- published_at: `{manifest['published_at']}`", "",
              "## Reading it", "", "```python",
              "from cyclegan_core.reader import open_dataset",
              "ds = open_dataset(\"data/augmented\")                       # or repo=..., rev=\"v3\"",
              "df = ds.to_pandas(direction=\"AtoB\", split=\"test\")",
              "import datasets                                           # Hugging Face splits: the directions",
              "hf = datasets.load_dataset(\"data/augmented\")               # this card's configs: AtoB, BtoA",
              "held_out = hf[\"AtoB\"].filter(lambda r: r[\"split\"] == \"test\")  # sources held out of training",
              "import pandas as pd                                       # the shards are under data/",
              "df = pd.read_parquet(\"data/augmented/data\")",
              "```", ""]
    return "\n".join(lines)


def verify(out_dir: str | Path) -> list[str]:
    """Problems found checking a published dataset against its manifest (empty when sound)."""
    from .reader import open_dataset

    return open_dataset(str(out_dir)).verify()
