"""The quality gate: per-sample bounds (which rows are published) and run-level bounds (whether
anything is), with messages that name the figure, its value, the bound and its config key.
"""

from __future__ import annotations

from .config import RunThresholds, SampleThresholds


class GateFailed(RuntimeError):
    """A run-level threshold failed; nothing is published. The message names every failure."""


def sample_failures(m: dict, t: SampleThresholds) -> list[str]:
    """Each per-sample bound the row fails, as '<figure> <value> <op> <bound>'."""
    out = []
    if m["cycle_psnr"] < t.min_cycle_psnr:
        out.append(f"cycle_psnr {m['cycle_psnr']:.2f} < {t.min_cycle_psnr}")
    if m["cycle_l1"] > t.max_cycle_l1:
        out.append(f"cycle_l1 {m['cycle_l1']:.4f} > {t.max_cycle_l1}")
    if m["cycle_ssim"] < t.min_cycle_ssim:
        out.append(f"cycle_ssim {m['cycle_ssim']:.3f} < {t.min_cycle_ssim}")
    if m.get("identity_l1") is not None and m["identity_l1"] > t.max_identity_l1:
        out.append(f"identity_l1 {m['identity_l1']:.4f} > {t.max_identity_l1}")
    if m["realism"] < t.min_realism:
        out.append(f"realism {m['realism']:.3f} < {t.min_realism}")
    if t.require_label_ok and m.get("label_ok") is False:
        out.append("label_ok false (require_label_ok)")
    if t.max_cycle_lsd is not None and m.get("cycle_lsd") is not None and m["cycle_lsd"] > t.max_cycle_lsd:
        out.append(f"cycle_lsd {m['cycle_lsd']:.2f} > {t.max_cycle_lsd}")
    if t.min_cycle_si_sdr is not None and m.get("cycle_si_sdr") is not None \
            and m["cycle_si_sdr"] < t.min_cycle_si_sdr:
        out.append(f"cycle_si_sdr {m['cycle_si_sdr']:.2f} < {t.min_cycle_si_sdr}")
    if t.min_robust_cycle_psnr is not None:
        robust = m.get("cycle_psnr_robust")
        if robust is None:  # a set bound is never passed unmeasured
            out.append(f"cycle_psnr_robust not measured (validate had no model), bound {t.min_robust_cycle_psnr}")
        elif robust < t.min_robust_cycle_psnr:
            out.append(f"cycle_psnr_robust {robust:.2f} < {t.min_robust_cycle_psnr}")
    return out


def reason_key(reason: str) -> str:
    return reason.split(" ", 1)[0]


def run_failures(direction: str, fig: dict, t: RunThresholds) -> list[str]:
    """Each failed run-level bound as '<direction>.<figure> = <value> <op> <bound> (<key>)'."""
    checks = [
        ("mean_cycle_psnr", t.min_mean_cycle_psnr, "min_mean_cycle_psnr", "min"),
        ("mean_cycle_ssim", t.min_mean_cycle_ssim, "min_mean_cycle_ssim", "min"),
        ("mean_realism", t.min_mean_realism, "min_mean_realism", "min"),
        ("label_accuracy", t.min_label_accuracy, "min_label_accuracy", "min"),
        ("pass_rate", t.min_pass_rate, "min_pass_rate", "min"),
        ("fid_domain_features", t.max_fid_domain, "max_fid_domain", "max"),
        ("kid_domain_features", t.max_kid_domain, "max_kid_domain", "max"),
        ("fid_inception", t.max_fid_inception, "max_fid_inception", "max"),
        ("kid_inception", t.max_kid_inception, "max_kid_inception", "max"),
        ("mean_cycle_lsd", t.max_mean_cycle_lsd, "max_mean_cycle_lsd", "max"),
        ("mean_cycle_si_sdr", t.min_mean_cycle_si_sdr, "min_mean_cycle_si_sdr", "min_or_off"),
        ("mean_cycle_psnr_robust", t.min_mean_robust_cycle_psnr, "min_mean_robust_cycle_psnr", "min_or_off"),
    ]
    out = []
    for figure, bound, key, kind in checks:
        # Lower bounds at their floor and unset upper bounds are off.
        off = bound is None or (kind == "min" and bound <= (-1.0 if figure == "mean_cycle_ssim" else 0.0))
        if off:
            continue
        kind = "min" if kind == "min_or_off" else kind  # SI-SDR may be negative: only null turns these off
        value = fig.get(figure)
        where = f"(validate.run.{direction}.{key})"
        if value is None:
            if figure == "label_accuracy" and fig.get("labelled", 0) == 0:
                out.append(f"{direction}.label_accuracy: no labelled held-out samples, bound {bound} {where}")
            elif figure == "mean_cycle_psnr_robust":
                out.append(f"{direction}.{figure}: not measured (no model or no held-out samples), "
                           f"bound {bound} {where}")
            else:
                out.append(f"{direction}.{figure}: not measured (no held-out samples or no feature extractor), "
                           f"bound {bound} {where}")
            continue
        if kind == "min" and value < bound:
            out.append(f"{direction}.{figure} = {value:.4g} < {bound} {where}")
        elif kind == "max" and value > bound:
            out.append(f"{direction}.{figure} = {value:.4g} > {bound} {where}")
    return out


def check_gate(summary: dict) -> None:
    """Raise :class:`GateFailed` naming each failed run-level threshold, if any failed."""
    if not summary["passed"]:
        raise GateFailed("quality gate failed, nothing published: " + "; ".join(summary["failures"]))
