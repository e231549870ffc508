"""A generated corpus of every kind of bad or awkward input, and what the user sees for each.

Each file either becomes a sample (normalized correctly: the pixels are checked) or gets a
quarantine entry with its reason while the run goes on; whole-input problems (empty collection,
unknown URL scheme, malformed params.yaml) are clear errors before any work starts.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cyclegan_core.config import ConfigError, DataConfig, load_config
from cyclegan_core.images import decode_png
from cyclegan_core.ingest import CollectionError, check_collections, ingest_collection, read_manifest
from tests.conftest import tiny_settings

ROOT = Path(__file__).resolve().parents[1]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads through chmod 000
LATIN1_NAME = os.fsdecode(b"caf\xe9 latin-1.png")  # not UTF-8: Python holds the byte as a surrogate escape


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, rows_of_zeros: int = 0) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (8-bit gray); ``rows_of_zeros`` real rows of data.

    With all rows present it is a real decompression bomb: a few hundred KB that inflate to
    width * height bytes.
    """
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    data = b"".join(comp.compress(row) for _ in range(rows_of_zeros)) + comp.flush()
    return head + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png_rgb48(color: tuple[int, int, int], side: int = 16) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow does not write these, so the chunks are made here)."""
    arr = np.empty((side, side, 3), dtype=">u2")
    arr[...] = color
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(side))
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 2, 0, 0, 0))
    return head + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _rgb(seed: int, size: int = 24) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def make_corpus(root: Path, outside: Path) -> dict[str, str]:
    """Write the corpus under ``root``; returns ``{relpath: expectation}`` ('ok' or a reason fragment)."""
    root.mkdir(parents=True)
    expect: dict[str, str] = {}

    def put(rel: str, data: bytes, what: str) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        expect[rel] = what

    good = _save(_rgb(1), "PNG")
    put("ok_rgb.png", good, "ok")
    put("ok_rgb2.png", _save(_rgb(2), "PNG"), "ok")
    # Corrupt: a flipped byte inside the image data (CRC mismatch); truncated: cut mid-stream.
    broken = bytearray(good)
    broken[len(broken) // 2] ^= 0xFF
    put("corrupt.png", bytes(broken), "corrupt or truncated")
    photo = _save(_rgb(3, 64), "JPEG", quality=90)
    put("truncated.jpg", photo[: len(photo) // 2], "corrupt or truncated")
    put("truncated.png", good[:-30], "corrupt or truncated")
    put("zero_bytes.png", b"", "empty file (0 bytes)")
    put("text_named.jpg", b"just some text, certainly not a JPEG\n", "not an image")
    put("page.png", b"<!doctype html><html><body>404 Not Found</body></html>", "not an image")
    put("cmyk.jpg", _save(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), "JPEG", quality=95), "ok")
    g16 = Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100)
    put("gray16.png", _save(g16, "PNG"), "ok")
    put("rgb48.png", png_rgb48((65535, 32768, 0)), "ok")
    pal = Image.new("P", (24, 24), 0)
    pal.putpalette([0, 0, 0] + [10, 200, 30] * 255)
    pal.paste(1, (0, 0, 12, 24))  # left half opaque green, right half transparent index 0
    put("palette_transparent.png", _save(pal, "PNG", transparency=0), "ok")
    put("rgba.png", _save(Image.new("RGBA", (24, 24), (255, 0, 0, 0)), "PNG"), "ok")
    put("gray_among_rgb.png", _save(Image.new("L", (24, 24), 77), "PNG"), "ok")
    # EXIF orientation 6 ("rotate 90 clockwise to display"): the dark quadrant stored top-left
    # must end up top-right.
    stored = np.full((32, 32, 3), 255, np.uint8)
    stored[:16, :16] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    put("exif_rotated.jpg", _save(Image.fromarray(stored), "JPEG", quality=95, exif=exif), "ok")
    put("one_pixel.png", _save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "too small: 1x1")
    put("bomb_header_100000x100000.png", png_claiming(100_000, 100_000), "decompression bomb")
    put("bomb_real_10000x10000.png", png_claiming(10_000, 10_000, 10_000), "decompression bomb")
    put("over_limit_7000x7000.png", png_claiming(7_000, 7_000), "too large: 7000x7000")
    put("zz duplicate of ok_rgb.png", good, "duplicate content of ok_rgb.png")
    put("name with spaces.png", _save(_rgb(4), "PNG"), "ok")
    put("ñandú 日本語 (2).png", _save(_rgb(5), "PNG"), "ok")
    put("ünïcödé broken.png", b"\x89PNG\r\n\x1a\n garbage", "corrupt or truncated")
    put("sub/folder/nested.webp", _save(_rgb(6), "WEBP", lossless=True), "ok")
    # A sparse 300 MiB file: refused from its listed size, never read.
    with open(root / "huge_sparse.tif", "wb") as f:
        f.truncate(300 * 2**20)
    expect["huge_sparse.tif"] = "file too large"
    # Symlinks: loops, a folder link (fsspec's local find lists it as a file), escapes.
    os.symlink("self_loop.png", root / "self_loop.png")
    expect["self_loop.png"] = "symlink loop"
    os.symlink("loop_b.png", root / "loop_a.png")
    os.symlink("loop_a.png", root / "loop_b.png")
    expect["loop_a.png"] = expect["loop_b.png"] = "symlink loop"
    os.symlink("..", root / "sub" / "up")
    expect["sub/up"] = "symlink to a folder, not followed"
    (outside / "secret.png").write_bytes(good)
    os.symlink(outside / "secret.png", root / "escape.png")
    expect["escape.png"] = "symlink pointing outside the collection"
    os.symlink(root / "does-not-exist.png", root / "dangling.png")
    expect["dangling.png"] = "broken symlink"
    put("notes.txt", b"not an image extension: ignored, not quarantined", "ignored")
    # Entries that are not regular files: never opened (a pipe would block the read forever).
    os.mkfifo(root / "pipe.png")
    expect["pipe.png"] = "named pipe (FIFO): not a regular file, not read"
    os.symlink("pipe.png", root / "link_to_pipe.png")
    expect["link_to_pipe.png"] = "symlink to a named pipe (FIFO): not a regular file"
    os.mkfifo(root / "pipe_without_an_image_name")
    expect["pipe_without_an_image_name"] = "ignored"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "socket.jpg"))
    server.close()  # the socket file stays
    expect["socket.jpg"] = "socket: not a regular file"
    try:
        os.mknod(root / "device.png", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        expect["device.png"] = "character device: not a regular file"
    except OSError:  # not root, or a container without the capability
        pass
    # Names that are not UTF-8: ingested (shown with \x escapes) or quarantined under that shown name.
    put(LATIN1_NAME, _save(_rgb(7), "PNG"), "ok")
    expect["caf\\xe9 latin-1.png"] = expect.pop(LATIN1_NAME)
    put(os.fsdecode(b"\xff\xfe broken.png"), b"\x89PNG\r\n\x1a\n garbage", "corrupt or truncated")
    expect["\\xff\\xfe broken.png"] = expect.pop(os.fsdecode(b"\xff\xfe broken.png"))
    # The same name in its two Unicode normalizations: two files, both kept.
    put(unicodedata.normalize("NFC", "é.png"), _save(_rgb(8), "PNG"), "ok")
    put(unicodedata.normalize("NFD", "é.png"), _save(_rgb(9), "PNG"), "ok")
    if not AS_ROOT:  # root reads these anyway; test_unreadable_folders_and_files_remote covers it there
        put("locked/inside.png", _save(_rgb(10), "PNG"), "ignored")
        (root / "locked").chmod(0)
        expect["locked"] = "folder not listed, its files left out: PermissionError"
        put("no_read_permission.png", _save(_rgb(11), "PNG"), "unreadable: PermissionError")
        (root / "no_read_permission.png").chmod(0)
    return expect


def _quarantine(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["path"]: row["reason"] for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str], object, dict[str, str]]:
    base = tmp_path_factory.mktemp("corpus")
    (base / "outside").mkdir()
    expect = make_corpus(base / "coll", base / "outside")
    cfg = DataConfig(image_size=16, mode="RGB", test_fraction=0.01)
    result = ingest_collection(str(base / "coll"), "A", base / "out", cfg)
    return base, expect, result, _quarantine(Path(result.quarantine))


def test_every_bad_file_is_quarantined_with_its_reason(corpus):
    _, expect, result, quarantined = corpus
    bad = {k: v for k, v in expect.items() if v not in ("ok", "ignored")}
    assert set(quarantined) == set(bad), "each bad file exactly once in quarantine.csv"
    for rel, fragment in bad.items():
        assert fragment in quarantined[rel], f"{rel}: {quarantined[rel]!r}"
    ok = {k for k, v in expect.items() if v == "ok"}
    assert result.samples == len(ok) and result.quarantined == len(bad)
    table = read_manifest(result.manifest)
    assert set(table.column("relpath").to_pylist()) == ok  # non-ASCII and spaced names kept verbatim
    assert len(set(table.column("sample_id").to_pylist())) == len(ok)


def test_awkward_but_valid_images_are_normalized(corpus):
    _, _, result, _ = corpus
    rows = {r["relpath"]: r for r in read_manifest(result.manifest).to_pylist()}
    px = {k: decode_png(r["image"]).astype(int) for k, r in rows.items()}
    assert all(a.shape == (16, 16, 3) for a in px.values())
    assert rows["cmyk.jpg"]["orig_mode"] == "CMYK" and np.abs(px["cmyk.jpg"] - [255, 0, 0]).max() < 8
    g = px["gray16.png"]
    assert rows["gray16.png"]["orig_mode"].startswith("I;16") and g.min() < 20 and g.max() > 235
    assert (px["rgb48.png"] == [255, 128, 0]).all()  # 16 bits per channel, scaled to 8
    pal = px["palette_transparent.png"]
    assert np.abs(pal[8, 2] - [10, 200, 30]).max() < 3 and (pal[8, 14] == 255).all()  # transparent -> white
    assert (px["rgba.png"] == 255).all()
    gray = px["gray_among_rgb.png"]
    assert (gray == 77).all()  # replicated into three equal channels
    ex = px["exif_rotated.jpg"]
    quads = {"tl": ex[:8, :8].mean(), "tr": ex[:8, 8:].mean(), "bl": ex[8:, :8].mean(), "br": ex[8:, 8:].mean()}
    assert quads["tr"] < 40 and min(quads["tl"], quads["bl"], quads["br"]) > 215, quads


def test_reasons_are_what_a_person_reads(corpus):
    _, _, _, q = corpus
    assert q["zero_bytes.png"] == "empty file (0 bytes)"
    assert q["one_pixel.png"] == "too small: 1x1, a side under data.min_image_side=8 px"
    assert q["over_limit_7000x7000.png"].startswith(
        "too large: 7000x7000 = 49000000 pixels > data.max_image_pixels=40000000, refused before decoding")
    assert q["zz duplicate of ok_rgb.png"] == "duplicate content of ok_rgb.png"
    assert q["huge_sparse.tif"].startswith("file too large: 314572800 bytes > data.max_file_bytes=")


BOMB_PROBE = """
import resource, sys
from pathlib import Path
from cyclegan_core.images import BadImage, decode_image
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
before = rss()
for name in sys.argv[1:]:
    try:
        decode_image(Path(name).read_bytes(), "RGB", 16, 40_000_000)
        print("DECODED", name)
    except BadImage as err:
        print("REFUSED", err)
print("MB", rss() - before)
"""


def test_decompression_bombs_are_refused_without_allocating(corpus):
    base, _, _, _ = corpus
    names = [str(base / "coll" / n) for n in ("bomb_header_100000x100000.png", "bomb_real_10000x10000.png",
                                               "over_limit_7000x7000.png")]
    assert Path(names[1]).stat().st_size < 1_000_000  # inflates to 100 MB
    r = subprocess.run([sys.executable, "-c", BOMB_PROBE, *names], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("REFUSED") == 3 and "DECODED" not in r.stdout
    # Peak resident memory grows by less than 20 MB while refusing 10 GB, 100 MB and 49 MB of pixels.
    assert int(r.stdout.split("MB")[-1]) < 20, r.stdout


def test_empty_and_one_image_collections(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = DataConfig(image_size=16)
    with pytest.raises(CollectionError, match="empty, no files ending in .png"):
        check_collections({"A": str(tmp_path / "empty")}, cfg)
    with pytest.raises(CollectionError, match="no usable images"):
        ingest_collection(str(tmp_path / "empty"), "A", tmp_path / "out", cfg)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "a.png").write_bytes(b"")
    with pytest.raises(CollectionError, match=r"no usable images .*1 file\(s\) quarantined"):
        ingest_collection(str(only_bad), "A", tmp_path / "out2", cfg)
    # One image: it must land in train (training needs one), whatever its hash says.
    for seed in range(4):
        one = tmp_path / f"one{seed}"
        one.mkdir()
        (one / "only.png").write_bytes(_save(_rgb(seed), "PNG"))
        r = ingest_collection(str(one), "A", tmp_path / f"out_one{seed}", DataConfig(image_size=16, test_fraction=0.9))
        assert (r.samples, r.train) == (1, 1)


def test_unknown_scheme_and_missing_collection_fail_before_work(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.domain_a=sftpp://host/photos"])
    assert "data.domain_a: unknown storage scheme sftpp://" in str(err.value)
    with pytest.raises(CollectionError, match="unknown storage scheme nope://"):
        ingest_collection("nope://bucket/x", "A", tmp_path / "out", DataConfig())
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "x.png").write_bytes(_save(_rgb(0), "PNG"))
    with pytest.raises(CollectionError, match="typo: collection not found"):
        check_collections({"A": str(tmp_path / "A"), "B": str(tmp_path / "typo")}, DataConfig())
    assert not (tmp_path / "out").exists()


def test_bad_labels_file_is_a_clear_error(tmp_path):
    coll = tmp_path / "c"
    coll.mkdir()
    (coll / "x.png").write_bytes(_save(_rgb(0), "PNG"))
    (coll / "labels.csv").write_text("path,class\nx.png,7\n")
    with pytest.raises(CollectionError, match=r"labels.csv, line 2: expected columns path,label"):
        ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16))
    (coll / "labels.csv").write_text("path,label\nx.png,\n")
    with pytest.raises(CollectionError, match=r"labels.csv, line 2: empty label"):
        ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16))
    # A class name alone: names map over both collections, so one collection by itself is refused.
    (coll / "labels.csv").write_text("path,label\nx.png,seven\n")
    with pytest.raises(CollectionError, match=r"labels.csv, line 2: label 'seven' is not an integer"):
        ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16))
    (coll / "labels.csv").write_text("path,label\n../../etc/passwd,1\n")
    with pytest.raises(CollectionError, match="leaves the collection"):
        ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16))


MALFORMED = [
    ("data:\n  mode: CMYK\n", "data.mode: Input should be 'L' or 'RGB' (got 'CMYK')"),
    ("data:\n  imgsize: 32\n", "data.imgsize: unknown key; allowed keys here: kind, domain_a, domain_b, image_size"),
    ("model:\n  norm: group\n", "model.norm: Input should be 'instance', 'batch' or 'none' (got 'group')"),
    ("train:\n  steps: many\n", "train.steps: Input should be a valid integer"),
    ("data: 5\n", "data: expected a section (mapping) with keys kind, domain_a, domain_b"),
    ("data:\n  image_size: 30\n", "multiple of 4"),
    ("generate:\n  splits: [train, dev]\n", "generate.splits.1: Input should be 'train' or 'test' (got 'dev')"),
    ("validate:\n  sample:\n    CtoD: {}\n", "validate.sample: key 'CtoD': Input should be 'AtoB' or 'BtoA'"),
    ("paths:\n  published: ../../elsewhere\n", "paths.published: '../../elsewhere' leaves the project folder"),
    ("data:\n  domain_a: ftpp://x/y\n", "data.domain_a: unknown storage scheme ftpp://"),
    ("data: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "the top level must be a mapping of sections"),
]


@pytest.mark.parametrize(("text", "shown"), MALFORMED)
def test_malformed_params_name_the_key_and_allowed_values(tmp_path, text, shown):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert shown in str(err.value), str(err.value)


@pytest.mark.slow
def test_cli_reports_bad_input_without_a_traceback(tmp_path, corpus):
    """The whole corpus through ``cycleaug ingest``: exit 0, quarantine counted; then unusable inputs."""
    base, expect, _, _ = corpus
    params = tmp_path / "params.yaml"
    raw = tiny_settings(tmp_path, base / "coll", base / "coll" / "sub", data={"mode": "RGB"})
    params.write_text(yaml.safe_dump(raw, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(params), *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    r = cli("ingest")
    assert r.returncode == 0, r.stderr
    bad = [k for k, v in expect.items() if v not in ("ok", "ignored")]
    assert len(_quarantine(tmp_path / "ingest" / "A" / "quarantine.csv")) == len(bad)
    assert f'"quarantined": {len(bad)}' in r.stdout
    (tmp_path / "empty").mkdir()
    raw["data"]["domain_b"] = str(tmp_path / "empty")
    params.write_text(yaml.safe_dump(raw, allow_unicode=True))
    r = cli("ingest")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cycleaug ingest: collection B ({tmp_path / 'empty'}): empty, no files ending in .png" in r.stderr
    raw["data"]["domain_b"] = "nope://x"
    params.write_text(yaml.safe_dump(raw, allow_unicode=True))
    r = cli("ingest")
    assert r.returncode == 2 and "data.domain_b: unknown storage scheme nope://" in r.stderr


def test_a_listing_that_never_ends_is_a_clear_error(tmp_path):
    """A filesystem that follows folder links into a loop recurses until Python stops it."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class LoopingFS(MemoryFileSystem):
        protocol = ("loopy8",)

        @classmethod
        def _strip_protocol(cls, path):
            return super()._strip_protocol(path.replace("loopy8://", "memory://", 1))

        def ls(self, path, detail=True, **kw):  # every folder holds one more
            return [{"name": path.rstrip("/") + "/loop", "type": "directory", "size": 0}]

    fsspec.register_implementation("loopy8", LoopingFS, clobber=True)
    fsspec.filesystem("memory").pipe_file("/loopy8/x.png", b"x")
    try:
        with pytest.raises(CollectionError, match=r"loopy8://loopy8: listing never ends \(a folder symlink loop\?\)"):
            ingest_collection("loopy8://loopy8", "A", tmp_path / "out", DataConfig())
    finally:
        fsspec.filesystem("memory").rm("/loopy8", recursive=True)


def test_names_that_are_not_utf8_are_kept_losslessly(corpus):
    _, _, result, quarantined = corpus
    rows = {r["relpath"]: r for r in read_manifest(result.manifest).to_pylist()}
    latin = rows["caf\\xe9 latin-1.png"]  # shown escaped; the exact bytes beside it give the file back
    assert latin["relpath_bytes"] == b"caf\xe9 latin-1.png" and os.fsdecode(latin["relpath_bytes"]) == LATIN1_NAME
    assert latin["uri"].endswith("coll/caf\\xe9 latin-1.png")
    assert rows["ok_rgb.png"]["relpath_bytes"] is None  # a UTF-8 name needs no second copy
    assert "\\xff\\xfe broken.png" in quarantined
    nfc, nfd = unicodedata.normalize("NFC", "é.png"), unicodedata.normalize("NFD", "é.png")
    assert rows[nfc]["sample_id"] != rows[nfd]["sample_id"]


def test_lookalike_names_are_both_kept_with_a_warning(tmp_path, caplog):
    coll = tmp_path / "c"
    coll.mkdir()
    for i, form in enumerate(("NFC", "NFD")):
        (coll / unicodedata.normalize(form, "Zoë.png")).write_bytes(_save(_rgb(i), "PNG"))
    with caplog.at_level(logging.WARNING, logger="cyclegan_core.ingest"):
        r = ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16))
    assert r.samples == 2
    assert "differ only in Unicode normalization (NFC/NFD), kept as 2 files" in caplog.text


def _memory_fs(protocol: str, **methods):
    """A memory:// filesystem under ``protocol`` with some methods replaced (a store that misbehaves)."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    def strip(cls, path):
        return MemoryFileSystem._strip_protocol(path.replace(f"{protocol}://", "memory://", 1))

    cls = type(f"FS_{protocol}", (MemoryFileSystem,), {"protocol": (protocol,), "_strip_protocol": classmethod(strip),
                                                        **methods})
    fsspec.register_implementation(protocol, cls, clobber=True)
    return fsspec.filesystem("memory")


def test_a_stalled_remote_read_times_out_is_retried_then_quarantined(tmp_path):
    """A read (and a folder listing) that never returns: the run goes on after the time limit, per attempt."""
    from fsspec.implementations.memory import MemoryFileSystem

    release = threading.Event()
    attempts: list[str] = []

    def cat_file(self, path, *args, **kw):
        if path.endswith("stuck.png"):
            attempts.append(path)
            release.wait(30)  # a connection that stops sending; the test lets it go at the end
        return MemoryFileSystem.cat_file(self, path, *args, **kw)

    def ls(self, path, detail=True, **kw):
        if path.rstrip("/").endswith("slow"):
            release.wait(30)
        return MemoryFileSystem.ls(self, path, detail=detail, **kw)

    mem = _memory_fs("stall8", cat_file=cat_file, ls=ls)
    for i, name in enumerate(("a.png", "b.png", "stuck.png", "slow/c.png")):
        mem.pipe_file(f"/stall8/A/{name}", _save(_rgb(i), "PNG"))
    cfg = DataConfig(image_size=16, read_timeout_s=0.3, retries=1, retry_backoff_s=0.0)
    start = time.monotonic()
    try:
        r = ingest_collection("stall8://stall8/A", "A", tmp_path / "out", cfg)
    finally:
        release.set()
        mem.rm("/stall8", recursive=True)
    took = time.monotonic() - start
    assert r.samples == 2 and len(attempts) == 2  # retried once, as data.retries=1 says
    q = _quarantine(Path(r.quarantine))
    assert q["stuck.png"] == "read timed out after 0.3 s (gave up after 2 attempts)"
    assert q["slow"] == "folder not listed, its files left out: read timed out after 0.3 s (gave up after 2 attempts)"
    assert took < 10, took


def test_unreadable_folders_and_files_remote(tmp_path):
    """Permission denied on a folder's listing and on a file (a store's answer, whoever runs the test)."""
    from fsspec.implementations.memory import MemoryFileSystem

    def ls(self, path, detail=True, **kw):
        if path.rstrip("/").endswith("locked"):
            raise PermissionError(f"access denied: {path}")
        listing = MemoryFileSystem.ls(self, path, detail=detail, **kw)
        return [i | {"type": "other"} if i["name"].endswith("odd.png") else i for i in listing]

    def cat_file(self, path, *args, **kw):
        if path.endswith("private.png"):
            raise PermissionError(f"access denied: {path}")
        return MemoryFileSystem.cat_file(self, path, *args, **kw)

    mem = _memory_fs("deny8", ls=ls, cat_file=cat_file)
    for i, name in enumerate(("a.png", "private.png", "odd.png", "locked/b.png")):
        mem.pipe_file(f"/deny8/A/{name}", _save(_rgb(i), "PNG"))
    try:
        r = ingest_collection("deny8://deny8/A", "A", tmp_path / "out", DataConfig(image_size=16))
    finally:
        mem.rm("/deny8", recursive=True)
    q = _quarantine(Path(r.quarantine))
    assert r.samples == 1 and set(q) == {"locked", "private.png", "odd.png"}
    assert q["locked"] == "folder not listed, its files left out: PermissionError: access denied: /deny8/A/locked"
    assert q["private.png"] == "unreadable: PermissionError: access denied: /deny8/A/private.png"
    assert q["odd.png"] == "other: not a regular file, not read"


def test_a_collection_that_changes_during_ingest(tmp_path):
    """After the listing (and the first file's read), a file vanishes, one grows, one turns into a pipe."""
    coll = tmp_path / "c"
    coll.mkdir()
    for i, name in enumerate(("a.png", "b_becomes_pipe.png", "c_vanishes.png", "d_grows.png", "e.png")):
        (coll / name).write_bytes(_save(_rgb(i), "PNG"))

    def meddle(done: int, total: int) -> None:
        if done == 1:
            (coll / "b_becomes_pipe.png").unlink()
            os.mkfifo(coll / "b_becomes_pipe.png")
            (coll / "c_vanishes.png").unlink()
            with open(coll / "d_grows.png", "ab") as f:
                f.write(b"more")

    r = ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16), progress=meddle)
    q = _quarantine(Path(r.quarantine))
    assert r.samples == 2 and set(read_manifest(r.manifest).column("relpath").to_pylist()) == {"a.png", "e.png"}
    assert q["b_becomes_pipe.png"] == "named pipe (FIFO): not a regular file, not read"
    assert q["c_vanishes.png"].startswith("vanished after the listing: FileNotFoundError")
    assert q["d_grows.png"].startswith("changed while being ingested (listed at ")


def test_labels_file_that_is_a_pipe_or_has_a_negative_label(tmp_path):
    coll = tmp_path / "c"
    coll.mkdir()
    (coll / "x.png").write_bytes(_save(_rgb(0), "PNG"))
    (coll / "labels.csv").write_text("path,label\nx.png,-1\n")
    with pytest.raises(CollectionError, match=r"labels.csv, line 2: label -1 for 'x.png' is negative; labels are "
                                              r"class numbers 0, 1, 2"):
        ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16))
    (coll / "labels.csv").unlink()
    os.mkfifo(coll / "labels.csv")
    with pytest.raises(CollectionError, match=r"labels.csv: cannot read it: named pipe \(FIFO\): not a regular file"):
        ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16))


def test_labels_match_names_that_are_not_utf8(tmp_path):
    coll = tmp_path / "c"
    coll.mkdir()
    (coll / LATIN1_NAME).write_bytes(_save(_rgb(0), "PNG"))
    (coll / "plain.png").write_bytes(_save(_rgb(1), "PNG"))
    (coll / "labels.csv").write_bytes(b"path,label\ncaf\xe9 latin-1.png,3\nplain.png,1\n")  # the name's own bytes
    r = ingest_collection(str(coll), "A", tmp_path / "out", DataConfig(image_size=16))
    labels = dict(zip(*read_manifest(r.manifest, columns=["relpath", "label"]).to_pydict().values(), strict=True))
    assert labels == {"caf\\xe9 latin-1.png": 3, "plain.png": 1}
