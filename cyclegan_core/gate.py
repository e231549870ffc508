"""The quality gate: per-sample bounds (which rows are published) and run-level bounds (whether
anything is), with messages that name the figure, its value, the bound and its config key. Which
figure each bound limits, and which way, is declared in :mod:`cyclegan_core.figures`.
"""

from __future__ import annotations

from .config import Config, RunThresholds, SampleThresholds
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
            shown = f"{value:{f.fmt}}"
            if float(shown) == bound:  # "realism 0.003 < 0.003": show what separates them
                shown = f"{value:.3g}" if f"{value:.3g}" != f"{bound:.3g}" else repr(value)
            out.append(f"{f.name} {shown} {f.sample_op} {bound}")
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
            if not (f.needs_labels and fig.get("labelled", 0) == 0):  # label bounds do not apply without labels
                out.append(f"{direction}.{figure}: not measured ({f.unmeasured_why}), bound {bound} {where}")
            continue
        if f.better == "higher" and value < bound:
            out.append(f"{direction}.{figure} = {value:.4g} < {bound} {where}")
        elif f.better == "lower" and value > bound:
            out.append(f"{direction}.{figure} = {value:.4g} > {bound} {where}")
    return out


def unapplied_bounds(direction: str, fig: dict, t: RunThresholds) -> list[str]:
    """The set run bounds that do not apply to this run (bounds on labels where no held-out sample has one)."""
    out = []
    for f in FIGURES:
        bound = getattr(t, f.run_bound) if f.run_bound else None
        if bound is None or (f.floor is not None and bound <= f.floor):
            continue
        if f.needs_labels and fig.get(f.summary_key) is None and fig.get("labelled", 0) == 0:
            out.append(f"{direction}.{f.summary_key} >= {bound} (validate.run.{direction}.{f.run_bound}): not applied, "
                       "no held-out sample carries a label")
    return out


UTILITY_ADVICE = ("adding the published rows does not help a downstream classifier yet: look at which classes lose "
                  "in reports/utility.json, train longer, or keep label-aware training on (train.semantic: auto)")


def gate_message(failures: list[str], what: str = "quality gate") -> str:
    """The failed bounds as a list, then what to try next (the advice of each failed figure, once)."""
    advice: list[str] = []
    example = None
    for line in failures:
        figure = line.split(" ", 1)[0].split(".", 1)[-1].rstrip(":")
        f = next((f for f in FIGURES if figure in (f.summary_key, f.name)), None)
        if f is not None and f.advice not in advice:
            advice.append(f.advice)
        if example is None and ("(validate.run." in line or "(utility.run." in line):
            example = line.rsplit("(", 1)[1].rstrip(")")
        if "(utility.run." in line and UTILITY_ADVICE not in advice:
            advice.append(UTILITY_ADVICE)
    lines = [f"{what} failed, nothing published (the previous version stays as it was):",
             *(f"  - {x}" for x in failures)]
    if advice or example:
        lines.append("next:")
        lines += [f"  - {a}" for a in advice]
        if example:
            lines.append(f"  - or, if a bound does not suit this data, switch it off or relax it in params.yaml, "
                         f"e.g. cycleaug --set {example}=null run")
    return "\n".join(lines)


def bounds_in_force(sample: dict[str, SampleThresholds], run: dict[str, RunThresholds],
                    utility: dict | None = None) -> list[str]:
    """Every bound that is on, as ``validate.<level>.<direction>.<key> = <value>`` (utility's too)."""
    floors = {f.run_bound: f.floor for f in FIGURES if f.run_bound}
    out = []
    for level, per_dir in (("sample", sample), ("run", run)):
        for d, t in per_dir.items():
            for key, value in t.model_dump().items():
                if value is None or value is False or (floors.get(key) is not None and value <= floors[key]):
                    continue
                out.append(f"validate.{level}.{d}.{key} = {value}")
    for d, t in (utility or {}).items():
        out += [f"utility.run.{d}.{k} = {v}" for k, v in t.model_dump().items() if v is not None]
    return out


ONE_SIDED = ("cut", "fastcut")


def cycle_bounds_apply(arch: str, setting: str) -> bool:
    """``validate.cycle_bounds``: "on", "off", or "auto": on except for one-sided models (``model.arch`` cut or
    fastcut), whose cycle goes through two models trained apart, neither of them for the way back."""
    return setting == "on" or (setting == "auto" and arch not in ONE_SIDED)


def applicable(sample: dict[str, SampleThresholds], run: dict[str, RunThresholds], cycle: bool,
               why: str = "validate.cycle_bounds: off") -> tuple[dict[str, SampleThresholds], dict[str, RunThresholds],
                                                                 list[str]]:
    """The bounds the gate applies, and a line for each set bound it leaves out: with ``cycle`` False every
    bound on a cycle figure (they are still measured and reported)."""
    if cycle:
        return sample, run, []
    keys = {level: {getattr(f, f"{level}_bound") for f in FIGURES if f.cycle} - {None} for level in ("sample", "run")}
    notes: list[str] = []
    out: dict[str, dict] = {"sample": {}, "run": {}}
    for level, per_dir in (("sample", sample), ("run", run)):
        for d, t in per_dir.items():
            off = {k: None for k in sorted(keys[level]) if getattr(t, k) is not None}
            notes += [f"validate.{level}.{d}.{k} = {getattr(t, k)}: not applied, {why}" for k in off]
            out[level][d] = t.model_copy(update=off)
    return out["sample"], out["run"], notes


def bounds_for(cfg: Config) -> tuple[dict[str, SampleThresholds], dict[str, RunThresholds], list[str]]:
    """:func:`applicable` for a run's config: its model's arch and ``validate.cycle_bounds``."""
    v = cfg.validate_
    why = "validate.cycle_bounds: off" if v.cycle_bounds == "off" else (
        f"one-sided model (model.arch {cfg.model.arch}: its cycle goes through two models trained apart; "
        "validate.cycle_bounds: on applies it)")
    return applicable(v.sample, v.run, cycle_bounds_apply(cfg.model.arch, v.cycle_bounds), why)


def check_gate(summary: dict) -> None:
    """Raise :class:`GateFailed` naming each failed run-level threshold, if any failed."""
    if not summary["passed"]:
        raise GateFailed(gate_message(summary["failures"]))


def check_utility(report: dict) -> None:
    """Raise :class:`GateFailed` naming each failed utility bound (``reports/utility.json``), if any failed."""
    if not report["passed"]:
        raise GateFailed(gate_message(report["failures"], "utility bounds"))
