"""The quality gate: per-sample bounds (which rows are published) and run-level bounds (whether
anything is), with messages that name the figure, its value, the bound and its config key. Which
figure each bound limits, and which way, is declared in :mod:`cyclegan_core.figures`.
"""

from __future__ import annotations

from .config import RunThresholds, SampleThresholds
from .figures import FIGURES


class GateFailed(RuntimeError):
    """A run-level threshold failed; nothing is published. The message names every failure."""


def sample_failures(m: dict, t: SampleThresholds) -> list[str]:
    """Each per-sample bound the row fails, as '<figure> <value> <op> <bound>' (the bounds of :data:`FIGURES`)."""
    out = []
    for f in FIGURES:
        if f.sample_bound is None:
            continue
        bound = getattr(t, f.sample_bound)
        if bound is None:  # an optional bound left at null is off
            continue
        value = m.get(f.name)
        if value is None:
            if f.unmeasured == "fail":  # a set bound is never passed unmeasured
                out.append(f"{f.name} not measured (validate had no model), bound {bound}")
            continue
        if (value < bound) if f.better == "higher" else (value > bound):
            out.append(f"{f.name} {value:{f.fmt}} {f.sample_op} {bound}")
    if t.require_label_ok and m.get("label_ok") is False:
        out.append("label_ok false (require_label_ok)")
    return out


def reason_key(reason: str) -> str:
    return reason.split(" ", 1)[0]


def run_failures(direction: str, fig: dict, t: RunThresholds) -> list[str]:
    """Each failed run-level bound as '<direction>.<figure> = <value> <op> <bound> (<key>)'.

    Lower bounds at their figure's floor and bounds left at null are off; a set bound on a figure that
    was not measured fails.
    """
    out = []
    for f in FIGURES:
        if f.run_bound is None:
            continue
        bound = getattr(t, f.run_bound)
        if bound is None or (f.better == "higher" and f.floor is not None and bound <= f.floor):
            continue
        figure, value = f.summary_key, fig.get(f.summary_key)
        where = f"(validate.run.{direction}.{f.run_bound})"
        if value is None:
            why = f.unmeasured_why
            if f.name == "label_accuracy":
                why = "no labelled held-out samples" if fig.get("labelled", 0) == 0 else why
                out.append(f"{direction}.{figure}: {why}, bound {bound} {where}")
            else:
                out.append(f"{direction}.{figure}: not measured ({why}), bound {bound} {where}")
            continue
        if f.better == "higher" and value < bound:
            out.append(f"{direction}.{figure} = {value:.4g} < {bound} {where}")
        elif f.better == "lower" and value > bound:
            out.append(f"{direction}.{figure} = {value:.4g} > {bound} {where}")
    return out


def check_gate(summary: dict) -> None:
    """Raise :class:`GateFailed` naming each failed run-level threshold, if any failed."""
    if not summary["passed"]:
        raise GateFailed("quality gate failed, nothing published: " + "; ".join(summary["failures"]))


def check_utility(report: dict) -> None:
    """Raise :class:`GateFailed` naming each failed utility bound (``reports/utility.json``), if any failed."""
    if not report["passed"]:
        raise GateFailed("utility bounds failed, nothing published: " + "; ".join(report["failures"]))
