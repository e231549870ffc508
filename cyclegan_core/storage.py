"""File helpers: fsspec URLs for inputs and published copies, retries with backoff on transient
storage errors, atomic local writes, path confinement, credential redaction, content hashes."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import posixpath
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import fsspec

T = TypeVar("T")
log = logging.getLogger(__name__)
_sleep = time.sleep  # looked up at each retry, so a test can record the waits

LOCAL_PROTOCOLS = frozenset({"file", "local"})


class StorageError(ValueError):
    """A storage URL cannot be used at all (unknown scheme, missing package); the message says why."""


class RetriesExhausted(OSError):
    """A storage call kept failing with transient errors until the retries ran out (after ``attempts`` tries)."""

    attempts: int = 0


class PathEscape(ValueError):
    """A path from a config or manifest points outside the folder it must stay in."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(path: Path, mode: int) -> None:
    """mkstemp/mkdtemp make private (0600/0700) entries; give them the usual umask modes."""
    os.chmod(path, mode & ~_umask())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- URLs -------------------------------------------------------------------------------------

def protocol_of(url: str) -> str:
    """``s3`` for ``s3://b/x``, ``file`` for a plain path; the first of a chained URL."""
    first = str(url).split("::", 1)[0]
    return first.split("://", 1)[0] if "://" in first else "file"


def is_remote(url: str | Path) -> bool:
    return protocol_of(str(url)) not in LOCAL_PROTOCOLS


def check_url(url: str) -> None:
    """Raise :class:`StorageError` if no installed fsspec filesystem serves ``url``'s scheme.

    Called when the config is read, so a typo in a scheme stops the run before any work.
    """
    proto = protocol_of(url)
    if proto in LOCAL_PROTOCOLS:
        return
    known = set(fsspec.available_protocols()) | set(fsspec.registry)
    if proto not in known:
        common = ", ".join(p for p in ("file", "memory", "s3", "gcs", "az", "http", "https") if p in known)
        raise StorageError(f"unknown storage scheme {proto}:// in {redact_url(url)!r}; "
                           f"use a local path or one of {common}, ... (fsspec protocols)")
    try:
        fsspec.get_filesystem_class(proto)
    except ImportError as err:
        raise StorageError(f"storage scheme {proto}:// needs a package that is not installed: {err}") from None


def open_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root path of a folder or fsspec URL (``s3://b/x``, ``memory://x``)."""
    check_url(url)
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root


_SECRET_QUERY_KEYS = ("signature", "secret", "token", "password", "credential", "key", "sig", "auth")


def redact_url(url: str) -> str:
    """``url`` without user, password or secret-looking query values, safe for logs and metadata."""
    url = str(url)
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    head, sep, tail = rest.partition("/")
    if "@" in head:
        head = "***@" + head.rsplit("@", 1)[1]
    out = f"{scheme}://{head}{sep}{tail}"
    if "?" in out:
        base, query = out.split("?", 1)
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(any(k_ in k.lower() for k_ in _SECRET_QUERY_KEYS) for k, _ in pairs):
            out = base + "?" + urlencode(
                [(k, "***" if any(k_ in k.lower() for k_ in _SECRET_QUERY_KEYS) else v) for k, v in pairs])
    return out


# --- retries ----------------------------------------------------------------------------------

# Errors that say "this will not get better by waiting": never retried.
_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
                               errno.ECONNREFUSED, errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH,
                               errno.ENETDOWN, errno.EBUSY, errno.EINTR})
_TRANSIENT_NAMES = frozenset({"ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError",
                              "ConnectionClosedError", "ServerDisconnectedError", "ClientOSError",
                              "ClientPayloadError", "IncompleteReadError", "ResponseStreamingError"})
_TRANSIENT_WORDS = ("slowdown", "slow down", "throttl", "internalerror", "serviceunavailable",
                    "service unavailable", "requesttimeout", "timed out", "timeout", "temporarily",
                    "connection reset", "too many requests", "503", "500 internal", "429")


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` looks like a passing storage fault (network, throttling, 5xx) worth a retry."""
    if isinstance(err, _PERMANENT):
        return False
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    for e in (err, err.__cause__, err.__context__):
        if e is None:
            continue
        if type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
    text = str(err).lower()
    return isinstance(err, OSError) and any(w in text for w in _TRANSIENT_WORDS)


def backoff_delays(retries: int, base_s: float, max_s: float = 30.0, rng: random.Random | None = None) -> list[float]:
    """Exponential delays with full jitter: the k-th wait is uniform in [d/2, d], d = base * 2**k."""
    rng = rng or random.Random()
    out = []
    for k in range(retries):
        d = min(max_s, base_s * 2**k)
        out.append(d / 2 + rng.random() * d / 2)
    return out


def with_retries(fn: Callable[[], T], *, what: str, retries: int = 4, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, sleep: Callable[[float], None] | None = None) -> T:
    """``fn()``, retried up to ``retries`` times on transient errors with exponential backoff.

    A permanent error (missing file, permission) is raised at once; the last transient one is
    raised after the final attempt, its message saying how many attempts were made.
    """
    delays = backoff_delays(retries, backoff_s, max_backoff_s)
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            if attempt == retries:
                exhausted = RetriesExhausted(f"{redact_url(what)}: gave up after {retries + 1} attempts: "
                                             f"{type(err).__name__}: {err}")
                exhausted.attempts = retries + 1
                raise exhausted from err
            log.warning("transient error on %s (attempt %d of %d), retrying in %.2f s: %s", redact_url(what),
                        attempt + 1, retries + 1, delays[attempt], type(err).__name__)
            (sleep or _sleep)(delays[attempt])
    raise AssertionError("unreachable")


class ReadTimeout(TimeoutError):
    """A storage read did not finish within its time limit (a transient error: it is retried)."""


def within(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """``fn()``, or :class:`ReadTimeout` once ``timeout_s`` seconds pass without it returning.

    ``fn`` runs on a daemon thread. Python cannot stop a thread blocked in a read, so a stalled one is
    left behind (its result, if it ever comes, is dropped); being a daemon, it never holds up the
    interpreter's exit. A ``concurrent.futures`` executor is not used to run it because its worker
    threads are joined at exit, which would turn one stalled read into a hang at the end of the run.
    """
    done: Future[T] = Future()

    def call() -> None:
        try:
            result = fn()
        except BaseException as err:  # handed to the caller, raised there
            done.set_exception(err)
        else:
            done.set_result(result)

    threading.Thread(target=call, name=f"read {redact_url(what)}"[:60], daemon=True).start()
    try:
        return done.result(timeout=timeout_s)
    except FutureTimeout:
        raise ReadTimeout(f"read timed out after {timeout_s:.3g} s") from None


# --- path confinement -------------------------------------------------------------------------

def escapes(rel: str) -> bool:
    """Whether a relative path climbs out of its base with ``..`` (after normalizing)."""
    norm = posixpath.normpath(str(rel).replace("\\", "/"))
    return norm == ".." or norm.startswith("../")


def confined(root: str | Path, rel: str, what: str = "path") -> Path:
    """``root / rel``, refused with :class:`PathEscape` if ``rel`` is absolute or leaves ``root``.

    Used for every path read from a manifest or config that must stay inside a known folder;
    symlinks are resolved, so a link inside ``root`` pointing out is refused too.
    """
    rel_s = str(rel)
    if not rel_s or PurePosixPath(rel_s.replace("\\", "/")).is_absolute() or os.path.isabs(rel_s) \
            or escapes(rel_s):
        raise PathEscape(f"{what} {rel_s!r} is not a relative path inside {root}: '../' escapes and absolute "
                         f"paths are refused")
    base = Path(root).resolve()
    full = (base / rel_s).resolve()
    if full != base and base not in full.parents:
        raise PathEscape(f"{what} {rel_s!r} resolves to {full}, outside {base}")
    return full


# --- atomic local writes ----------------------------------------------------------------------

@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    A reader never sees a half-written file: either the old one or the complete new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publishable(tmp_path, 0o666)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: str | Path, obj: Any) -> None:
    write_bytes_atomic(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2``); False where not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name, then swap it in for ``target``.

    The previous folder stays whole until the new one is complete. Where the kernel can swap two
    folders in one step (Linux ``renameat2``), a reader finds ``target`` at every instant, old or
    new; elsewhere there is a moment between two renames when it is absent, and a crash in that
    moment is repaired by the next call, which puts the old folder back. A crash leaves at most
    ``.tmp`` folders behind, which the next call removes.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.parent / f".{target.name}.old.tmp"
    if old.exists() and not target.exists():
        os.replace(old, target)  # killed between the two renames of the fallback swap
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _publishable(tmp, 0o777)
        if target.exists() and _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # now holds the previous version
        else:
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def folder_lock(target: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a local output folder while the block runs (``.<name>-writer.lock`` beside it).

    Another process or thread locking the same folder waits until this block ends; the kernel frees the
    lock when its process dies, so a crashed writer never leaves it held. The lock file stays (removing it
    would race a waiter). POSIX ``flock`` only: where ``fcntl`` is missing the block runs unguarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(target.parent / f".{target.name}-writer.lock", "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s: another run is writing it", target)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- copies to fsspec URLs --------------------------------------------------------------------

def upload_dir(local: str | Path, url: str, *, commit_file: str = "manifest.json", retries: int = 4,
               backoff_s: float = 0.5, sleep: Callable[[float], None] | None = None) -> list[str]:
    """Copy a finished local folder to an fsspec URL, ``commit_file`` last; returns the keys written.

    Object stores write each object whole, so a reader sees an old or a new shard, never part of
    one; ``commit_file`` (the manifest listing every shard) goes up only after all shards, so a
    reader following it finds every file it names. Files of an earlier version that the new one
    does not have are removed after the commit. Every call is retried on transient errors.
    """
    local = Path(local)
    fs, root = open_fs(url)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    if commit_file in files:
        files.remove(commit_file)
        files.append(commit_file)
    with_retries(lambda: fs.makedirs(root, exist_ok=True), what=url, retries=retries, backoff_s=backoff_s,
                 sleep=sleep)
    before: set[str] = set()
    with suppress(FileNotFoundError):
        before = {posixpath.relpath(p, root) for p in fs.find(root)}
    for rel in files:
        dest = posixpath.join(root, rel)
        data = (local / rel).read_bytes()
        with_retries(lambda d=dest, b=data: fs.pipe_file(d, b), what=f"{url}/{rel}", retries=retries,
                     backoff_s=backoff_s, sleep=sleep)
    for rel in sorted(before - set(files)):
        with_retries(lambda r=rel: fs.rm_file(posixpath.join(root, r)), what=f"{url}/{rel}", retries=retries,
                     backoff_s=backoff_s, sleep=sleep)
    return files


def download_dir(url: str, local: str | Path, *, commit_file: str, retries: int = 4, backoff_s: float = 0.5,
                 sleep: Callable[[float], None] | None = None) -> bool:
    """Copy a folder written by :func:`upload_dir` from an fsspec URL to ``local`` (swapped in whole).

    Returns False, touching nothing, when ``commit_file`` is not there: the upload never finished or
    never happened. Object names are confined to ``local`` (a key with ``..`` is refused).
    """
    fs, root = open_fs(url)
    marker = posixpath.join(root, commit_file)
    if not with_retries(lambda: fs.exists(marker), what=f"{url}/{commit_file}", retries=retries,
                        backoff_s=backoff_s, sleep=sleep):
        return False
    keys = with_retries(lambda: fs.find(root), what=url, retries=retries, backoff_s=backoff_s, sleep=sleep)
    with atomic_dir(local) as tmp:
        for key in keys:
            rel = posixpath.relpath(key, root)
            dest = confined(tmp, rel, "stored object")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(with_retries(lambda k=key: fs.cat_file(k), what=f"{url}/{rel}", retries=retries,
                                          backoff_s=backoff_s, sleep=sleep))
    return True



# --- Parquet in bounded pieces ----------------------------------------------------------------

PARQUET_READ_BUFFER = 1 << 20


def parquet_batches(path: str | Path, columns: list[str], rows: int = 100) -> Iterator[Any]:
    """Record batches of at most ``rows`` rows of a local Parquet file, in file order, with memory set by
    ``rows`` and the page size rather than the row group's or the file's: pages are streamed through a read
    buffer and decoded on this thread (with threads, pyarrow reads whole column chunks ahead), by a reader
    per row group (one reader over a whole file keeps its binary columns' buffers: with pyarrow 26, about
    the whole image column by the last batch, 845 MB on a 750 MB manifest). A batch never spans two row
    groups."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, buffer_size=PARQUET_READ_BUFFER) as f:
        for g in range(f.num_row_groups):
            yield from f.iter_batches(rows, row_groups=[g], columns=columns, use_threads=False)
