"""Caption-oracle accuracy on generated scenes: how often the augmented caption still says what the
transformed ground truth says, per family of geometric ops, with the bundled text policy and with
the same policy less its ``objects`` rules (crop removals, places, relations, orders), with the
reasons for each miss; the share of draws the alignment checks rejected, per check; and the point
cloud checked against the transformed ground truth (3D op on, mirrors included).

    PYTHONPATH=$PWD python benchmarks/scene_oracle.py [--scenes 256 --size 64]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from cyclegan_core.paired.augment import SyncAugmenter
from cyclegan_core.paired.oracle import check_caption, check_cloud, check_colours
from cyclegan_core.paired.scenes import make_scenes
from cyclegan_core.paired.settings import PairedConfig
from cyclegan_core.paired.text import DEFAULT_POLICY

FAMILIES = {
    "flip (p=1)": {"hflip_p": 1.0, "crop": False, "affine_p": 0.0},
    "resized crop": {"hflip_p": 0.0, "affine_p": 0.0},
    "tight crop": {"hflip_p": 0.0, "affine_p": 0.0, "crop_scale": (0.15, 0.4)},
    "affine (p=1)": {"hflip_p": 0.0, "crop": False, "affine_p": 1.0},
    "rotate +-90": {"hflip_p": 0.0, "crop": False, "affine_p": 1.0, "degrees": 90.0},
    "defaults": {},
}
ALIGNMENT = {"checks off": {"enabled": False}, "checks on": {},
             "+kp 0.5": {"min_keypoint_fraction": 0.5}}  # the keypoint check on as well


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=256)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    scenes = make_scenes(args.scenes, seed=args.seed, size=args.size, frames=1)
    print(f"{args.scenes} generated scenes {args.size}x{args.size}; default paired settings except the geometry shown")
    raw = yaml.safe_load(DEFAULT_POLICY.read_text())
    raw.pop("objects")
    no_objects = Path(tempfile.mkdtemp()) / "policy-without-object-rules.yaml"
    no_objects.write_text(yaml.safe_dump(raw))
    policies = {"bundled": None, "no obj rules": str(no_objects)}
    print(f"{'geometry':<14} {'policy':<13} {'alignment':<10} {'checked':>7} {'correct':>8} {'accuracy':>9}  "
          "misses / rejected draws (share of all draws)")
    for name, geometry in FAMILIES.items():
        for pol_name, policy in policies.items():
            for al_name, alignment in ALIGNMENT.items():
                if policy is not None and al_name == "+kp 0.5":
                    continue  # the rejected draws do not depend on the text policy
                cfg = PairedConfig(geometry=geometry, alignment=alignment, mixup={"p": 0.0},
                                   dropout={"caption": 0.0}, text_policy=policy, cloud={"p": 0.0})
                outs = SyncAugmenter.from_config(cfg).augment(scenes, args.seed)
                checks = [c for o, r in outs if o is not None and (c := check_caption(o, r)) is not None]
                ok = sum(c.ok for c in checks)
                misses = Counter(c.reason for c in checks if not c.ok)
                rejected: Counter[str] = Counter()
                for _, r in outs:
                    rejected.update(r.get("alignment", {}).get("rejected", {}))
                # A draw failing two checks counts once among the draws, once under each check.
                draws = sum(r.get("alignment", {}).get("draws", 1) for _, r in outs)
                share = {k: f"{v}/{draws} = {v / draws:.3f}" for k, v in rejected.items()}
                print(f"{name:<14} {pol_name:<13} {al_name:<10} {len(checks):>7} {ok:>8} {ok / len(checks):>9.3f}  "
                      f"{dict(misses) or ''} {share if alignment.get('enabled', True) else ''}")

    # Point clouds: the 3D op (rotation, scale, translation, mirror p=0.5) then each geometry family.
    print("point cloud vs transformed ground truth (3D op p=1, mirror_p=0.5; alignment checks off):")
    for name, geometry in FAMILIES.items():
        cfg = PairedConfig(geometry=geometry, alignment={"enabled": False}, mixup={"p": 0.0},
                           dropout={"caption": 0.0}, cloud={"p": 1.0, "mirror_p": 0.5})
        outs = SyncAugmenter.from_config(cfg).augment(scenes, args.seed)
        cc = [c for src, (o, r) in zip(scenes, outs, strict=True) if (c := check_cloud(src, o, r)) is not None]
        caps = [c for o, r in outs if (c := check_caption(o, r)) is not None]
        inside = sum(c.in_frame for c in cc)
        on = sum(c.on_object * c.in_frame for c in cc) / max(inside, 1)
        near = sum(c.near_object * c.in_frame for c in cc) / max(inside, 1)
        print(f"  {name:<14} max world error {max(c.world_error for c in cc):.2e}, max projection error "
              f"{max(c.pixel_error for c in cc):.2e} px, points in frame on their object's pixels {on:.3f} "
              f"(within 1 px {near:.3f}), caption accuracy {sum(c.ok for c in caps) / len(caps):.3f}")

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
