"""A collection larger than the memory the pipeline may use, processed end to end (issue 19).

Makes two unpaired collections of RGB photo crops (``--size`` px squares, default 128, from the photos that
ship with scikit-learn and matplotlib; B in the warm film look of ``photo_style.py``; every crop has its own
position, scale, flip and a little noise, so every file is new and PNG cannot squeeze it), then runs each
step command (``cycleaug ingest``, ``train``, ``generate``, ``validate``, ``publish``) in its own process
inside a memory cgroup limited to ``--limit-mb`` (default 1,024 MB; Linux cgroup v1 ``memory.limit_in_bytes``
or v2 ``memory.max``, so it needs root, as this project's machines and CI run). The collection's files and
its decoded pixels at ``--size`` both exceed the limit, so no step could hold either in memory: training
streams its batches from the manifests (the decoded set is over ``runtime.cache_mb``), every other step
reads and writes bounded pieces. Small networks (ngf/ndf 8, 2 residual blocks), a short training and small
judges keep the run to minutes of CPU: the figures are about memory, not quality, so the gate is off.

Per step: wall seconds, the process's peak RSS, the cgroup's peak usage (page cache included, which the
kernel reclaims under the limit) and its count of OOM kills (must be 0). Prints a table and writes
``benchmarks/results/over-memory-<date>.json``.

    PYTHONPATH=. python benchmarks/over_memory.py --work /tmp/overmem [--per-domain 12000] [--limit-mb 1024]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_style import film_style, shipped_photos  # the photo task's data recipe
from scale import MEASURED, gate_off, sig3

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("ingest", "train", "generate", "validate", "publish")
TINY = ["model.ngf=8", "model.ndf=8", "model.n_blocks=2", "train.steps=20", "train.batch_size=4",
        "validate.judge_max_samples=500", "validate.classifier_epochs=2", "generate.batch_size=32",
        "data.mode=RGB"]


def make_collection(root: Path, per_domain: int, size: int, seed: int = 0) -> dict[str, int]:
    """``per_domain`` crops a domain under ``root/{A,B}/{train,test}``; returns file and decoded byte counts."""
    rng = np.random.default_rng(seed)
    photos = list(shipped_photos().values())
    files = raw = 0
    for d in ("A", "B"):
        for i in range(per_domain):
            split = "test" if i % 5 == 0 else "train"
            photo = photos[int(rng.integers(len(photos)))]
            side = int(rng.integers(size, min(photo.shape[:2])))
            y, x = (int(rng.integers(0, photo.shape[k] - side + 1)) for k in (0, 1))
            crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
            im = np.asarray(crop).astype(np.int16)
            if rng.random() < 0.5:
                im = im[:, ::-1]
            im = np.clip(im + rng.integers(-6, 7, im.shape), 0, 255).astype(np.uint8)
            if d == "B":
                im = film_style(im)
            out = root / d / split / f"{i:06d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(out)
            files += 1
            raw += out.stat().st_size
    return {"files": files, "file_bytes": raw, "decoded_bytes": files * size * size * 3}


class MemoryCgroup:
    """A memory cgroup of ``limit`` bytes (v1 or v2) that child processes join before they exec."""

    def __init__(self, name: str, limit: int):
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        base = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")
        if not os.access(base, os.W_OK):
            raise SystemExit(f"{base} is not writable: this benchmark needs root and a memory cgroup")
        self.v2, self.path = v2, base / name
        self.path.mkdir(exist_ok=True)
        self._write("memory.max" if v2 else "memory.limit_in_bytes", str(limit))
        if not v2:
            self._write("memory.memsw.limit_in_bytes", str(limit), optional=True)  # no swap past the limit

    def _write(self, name: str, value: str, optional: bool = False) -> None:
        try:
            (self.path / name).write_text(value)
        except OSError:
            if not optional:
                raise

    def join(self) -> None:  # runs in the child, before exec
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def reset_peak(self) -> None:
        if not self.v2:
            self._write("memory.max_usage_in_bytes", "0", optional=True)

    def peak(self) -> int | None:
        f = self.path / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        return int(f.read_text()) if f.exists() else None

    def oom_kills(self) -> int:
        f = self.path / ("memory.events" if self.v2 else "memory.oom_control")
        words = dict(line.split() for line in f.read_text().splitlines() if len(line.split()) == 2)
        return int(words.get("oom_kill", 0))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def run_step(group: MemoryCgroup, cwd: Path, args: list[str]) -> dict:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    group.reset_peak()
    kills = group.oom_kills()
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, preexec_fn=group.join)
    seconds = time.perf_counter() - t0
    kb = {w[0]: int(w[1]) for w in (line.split() for line in done.stderr.splitlines())
          if len(w) == 2 and w[0] == "maxrss_kb" and w[1].isdigit()}
    row = {"seconds": seconds, "rc": done.returncode, "rss_mb": kb.get("maxrss_kb", 0) / 1024,
           "cgroup_peak_mb": (group.peak() or 0) / 2**20, "oom_kills": group.oom_kills() - kills}
    if done.returncode:
        row["error"] = done.stderr[-2000:]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (collections and every output)")
    p.add_argument("--per-domain", type=int, default=12000, help="crops per domain (a fifth held out)")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels (data.image_size)")
    p.add_argument("--limit-mb", type=int, default=1024, help="the memory cgroup's limit for every step")
    p.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps to run (a later step reuses "
                   "the work folder's earlier outputs)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the JSON")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    raw = a.work / "raw"
    stats_file = a.work / "collection.json"
    if not stats_file.exists():
        stats = make_collection(raw, a.per_domain, a.size)
        stats_file.write_text(json.dumps(stats))
    stats = json.loads(stats_file.read_text())
    limit = a.limit_mb * 2**20
    print(f"collection: {stats['files']:,} files, {sig3(stats['file_bytes'] / 2**20)} MB of files, "
          f"{sig3(stats['decoded_bytes'] / 2**20)} MB decoded; limit {a.limit_mb:,} MB", flush=True)
    params = gate_off(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (a.work / "params.yaml").write_text(yaml.safe_dump(params))
    sets = [f"data.domain_a={raw / 'A'}", f"data.domain_b={raw / 'B'}", f"data.image_size={a.size}", *TINY]
    args = [w for s in sets for w in ("--set", s)]
    group = MemoryCgroup(f"cycleaug-overmem-{os.getpid()}", limit)
    rows = {}
    try:
        for step in a.steps.split(","):
            rows[step] = run_step(group, a.work, [*args, step])
            r = rows[step]
            print(f"{step}: rc {r['rc']}, {sig3(r['seconds'])} s, peak RSS {sig3(r['rss_mb'])} MB, cgroup peak "
                  f"{sig3(r['cgroup_peak_mb'])} MB, OOM kills {r['oom_kills']}", flush=True)
            if r["rc"]:
                print(r["error"], file=sys.stderr)
                break
    finally:
        group.remove()
    summary = json.loads((a.work / "data" / "validated" / "summary.json").read_text()) \
        if (a.work / "data" / "validated" / "summary.json").exists() else {}
    generated = sum(v.get("generated", 0) for v in summary.get("directions", {}).values())
    print("\n| step | seconds | peak RSS | cgroup peak (page cache included) | OOM kills |\n|---|---|---|---|---|")
    for step, r in rows.items():
        print(f"| {step} | {sig3(r['seconds'])} | {sig3(r['rss_mb'])} MB | {sig3(r['cgroup_peak_mb'])} MB | "
              f"{r['oom_kills']} |")
    print(f"generated and validated rows: {generated:,}")
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    out = a.out / f"over-memory-{stamp:%Y%m%d-%H%M}.json"
    doc = {"date": stamp.isoformat(timespec="seconds"), "machine": f"{platform.node()}: {os.cpu_count()} CPUs",
           "limit_mb": a.limit_mb, "size": a.size, "collection": stats, "settings": sets, "steps": rows,
           "generated_rows": generated}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)


if __name__ == "__main__":
    main()
