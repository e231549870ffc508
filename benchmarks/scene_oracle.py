"""Caption-oracle accuracy on generated scenes: how often the augmented caption still says what the
transformed ground truth says, per family of geometric ops, with the reasons for each miss; and the
share of draws the alignment checks rejected, per check.

    PYTHONPATH=$PWD python benchmarks/scene_oracle.py [--scenes 256 --size 64]
"""

from __future__ import annotations

import argparse
from collections import Counter

from cyclegan_core.config import PairedConfig
from cyclegan_core.paired.augment import SyncAugmenter
from cyclegan_core.paired.oracle import check_caption, check_colours
from cyclegan_core.paired.scenes import make_scenes

FAMILIES = {
    "flip (p=1)": {"hflip_p": 1.0, "crop": False, "affine_p": 0.0},
    "resized crop": {"hflip_p": 0.0, "affine_p": 0.0},
    "affine (p=1)": {"hflip_p": 0.0, "crop": False, "affine_p": 1.0},
    "defaults": {},
}
ALIGNMENT = {"checks off": {"enabled": False}, "checks on": {}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=256)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    scenes = make_scenes(args.scenes, seed=args.seed, size=args.size, frames=1)
    print(f"{args.scenes} generated scenes {args.size}x{args.size}; default paired settings except the geometry shown")
    print(f"{'geometry':<14} {'alignment':<10} {'checked':>7} {'correct':>8} {'accuracy':>9}  misses / rejected draws")
    for name, geometry in FAMILIES.items():
        for al_name, alignment in ALIGNMENT.items():
            cfg = PairedConfig(geometry=geometry, alignment=alignment, mixup={"p": 0.0}, dropout={"caption": 0.0})
            outs = SyncAugmenter.from_config(cfg).augment(scenes, args.seed)
            checks = [c for o, r in outs if o is not None and (c := check_caption(o, r)) is not None]
            ok = sum(c.ok for c in checks)
            misses = Counter(c.reason for c in checks if not c.ok)
            rejected: Counter[str] = Counter()
            for _, r in outs:
                rejected.update(r.get("alignment", {}).get("rejected", {}))
            draws = len(outs) + sum(rejected.values())  # every rejection cost one more draw
            share = {k: f"{v}/{draws} = {v / draws:.3f}" for k, v in rejected.items()}
            print(f"{name:<14} {al_name:<10} {len(checks):>7} {ok:>8} {ok / len(checks):>9.3f}  "
                  f"{dict(misses) or ''} {share if alignment.get('enabled', True) else ''}")

    # Colour words under large hue shifts (geometry off, so captions keep their order).
    cfg = PairedConfig(geometry={"hflip_p": 0.0, "crop": False, "affine_p": 0.0}, mixup={"p": 0.0},
                       dropout={"caption": 0.0}, photometric={"jitter_p": 1.0, "brightness": 0.0, "contrast": 0.0,
                                                              "saturation": 0.0, "hue": 0.5})
    outs = SyncAugmenter.from_config(cfg).augment(scenes, args.seed)
    pairs = [p for o, _ in outs if o is not None for p in check_colours(o)]
    ok = sum(a == b for a, b in pairs)
    print(f"hue shift up to +-180 deg: {ok}/{len(pairs)} colour words name the colour the object now has "
          f"({ok / len(pairs):.3f}); misses {Counter(f'{a}->{b}' for a, b in pairs if a != b).most_common(4)}")


if __name__ == "__main__":
    main()
