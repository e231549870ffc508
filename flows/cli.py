"""``cycleaug``: the command line. ``cycleaug run`` runs the Prefect flow; one subcommand per step
(``ingest``, ``train``, ``generate``, ``validate``, ``publish``) runs that step alone with no
orchestrator, which is what the ``dvc.yaml`` stages call."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cyclegan_core.config import DIRECTIONS, Config, ConfigError, load_config
from cyclegan_core.progress import Bars


def _summary(cfg: Config) -> str:
    from cyclegan_core.overview import summary_text

    return summary_text(cfg)


def _utility_lines(result: dict) -> str:
    from cyclegan_core.report import utility_line

    return "\n".join(utility_line(d, f) for d, f in result["figures"].items())


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _prefect_env() -> None:
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The first start of the temporary server creates its database: on a busy machine that takes longer
    # than Prefect's default 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_S))


def modality_lines(result: dict) -> str:
    """What a finished modality run prints: rows, time and the gate's figures."""
    f = result["figures"]

    def g(key: str) -> str:
        return "n/a" if f.get(key) is None else f"{f[key]:.3g}"

    return (f"CycleAug modality run finished in {result['seconds']:.1f} s: {result['rows']} pairs published to "
            f"{result['out_dir']} ({result['generated']} generated from {result['sources']} sources, "
            f"{result['dropped']} dropped)\n"
            f"  fidelity: the judge reads back {g('fidelity_accuracy')} of the generated items "
            f"(real held-out items: {g('real_accuracy')}); pass rate {g('pass_rate')}\n"
            f"  alignment against {f.get('held_out_real')} held-out real items: FID {g('fid')}, KID {g('kid')}, "
            f"mean realism {g('mean_realism')} (0.5 = like a real item)\n"
            + (f"  train on it, test on real: {u['per_class']} real per class {u['real_few']['mean']:.3g}, with the "
               f"published items {u['real_few+generated']['mean']:.3g}, published alone {u['generated']['mean']:.3g}\n"
               if (u := f.get("utility")) and u.get("real_few") and u.get("real_few+generated") and u.get("generated")
               else "")
            + f"  figures: {result['report']}")


def cmd_modality_run(cfg: Config, args: argparse.Namespace) -> int:
    """``cycleaug run`` with ``modality.enabled``: the modality flow (flows/modality.py) through Prefect."""
    _prefect_env()
    from flows.modality import modality_run

    try:
        state = modality_run(params=args.params, overrides=list(args.set), return_state=True)
    except RuntimeError as err:
        if "ephemeral Prefect API server" not in str(err):
            raise
        print(server_start_hint(str(err)), file=sys.stderr)
        return 1
    if state.is_failed():
        print(f"\nrun failed: {state.message}", file=sys.stderr)
        report = Path(cfg.modality.reports) / "modality.json"
        if report.exists():
            print(f"figures of the failed run: {report}", file=sys.stderr)
        return 1
    print(modality_lines(state.result()))
    return 0


def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from cyclegan_core.ingest import CollectionError, check_collections
    from cyclegan_core.storage import StorageError

    if cfg.modality.enabled:
        if not Path(cfg.modality.source).is_file():  # before Prefect starts a server
            print(f"cycleaug run: modality.source: {cfg.modality.source} not found", file=sys.stderr)
            return 1
        return cmd_modality_run(cfg, args)
    if not cfg.data.uses_default_collections:  # before Prefect starts a server: a missing folder is one line
        try:
            check_collections({"A": cfg.data.domain_a, "B": cfg.data.domain_b}, cfg.data)
        except (CollectionError, StorageError) as err:
            print(f"cycleaug run: {err}", file=sys.stderr)
            return 1
    _prefect_env()
    from flows.augment import augment

    try:
        state = augment(params=args.params, overrides=list(args.set), retrain=args.retrain, return_state=True)
    except RuntimeError as err:
        if "ephemeral Prefect API server" not in str(err):
            raise
        print(server_start_hint(str(err)), file=sys.stderr)
        return 1
    if state.is_failed():
        print(f"\nrun failed: {state.message}", file=sys.stderr)
        if (Path(cfg.paths.reports) / "validation.json").exists():
            print(f"figures and pictures of the failed run: {cfg.paths.reports}/", file=sys.stderr)
        return 1
    print(_finished_line(state))
    print(_summary(cfg))
    return 0


EPHEMERAL_STARTUP_S = 180


def server_start_hint(error: str) -> str:
    """What to do when ``cycleaug run``'s temporary Prefect server did not come up."""
    home = os.environ.get("PREFECT_HOME", ".prefect")
    wait = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_S))
    return (f"cycleaug run: the temporary Prefect server did not start within {wait} s ({error.splitlines()[0]})\n"
            f"next:\n  - run it again: the first start creates the server's database in PREFECT_HOME={home}, "
            "later starts are faster\n"
            "  - or wait longer: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=600 cycleaug run\n"
            "  - or use a server that is already running: PREFECT_API_URL=http://127.0.0.1:4200/api cycleaug run "
            "(README: The Prefect UI)\n"
            "  - or run the steps without Prefect: cycleaug ingest, train, generate, validate, utility, publish")


def _finished_line(state) -> str:
    """The first line of a completed run's summary, from the flow's return value when the state has it."""
    from prefect.exceptions import MissingResult

    try:
        result = state.result()
    except MissingResult:
        # The server handed back the final state without its data (seen once, after its SQLite database
        # was locked for a minute at the end of a run). The run completed and its outputs are on disk.
        return (f"\nCycleAug finished: flow run {state.name}, but the Prefect server returned its final state "
                "without the run's summary; the figures below are read from the reports.")
    return (f"\nCycleAug finished in {result['seconds']:.1f} s "
            f"({'model reused' if result['train']['reused'] else 'model trained'}; "
            f"translated {sum(result['generate']['translated'].values())} new samples).")


def cmd_step(cfg: Config, args: argparse.Namespace) -> int:
    from cyclegan_core import pipeline
    from cyclegan_core.gate import GateFailed, check_gate, check_utility

    bars = Bars()
    step = args.command
    if step == "default-data":
        _print(pipeline.step_default_data(cfg))
    elif step == "ingest":
        _print({d: r.to_dict() for d, r in pipeline.step_ingest(cfg, bars).items()})
    elif step == "train":
        from cyclegan_core.ddp import dist_info

        info = dist_info()  # under torchrun every rank trains; rank 0 alone reports
        r = pipeline.step_train(cfg, bars if info.is_main else None, retrain=args.retrain)
        if info.is_main:
            ranks = f" on {info.world_size} processes" if info.enabled else ""
            print(f"{'reused' if r.reused else 'trained'} model {r.fingerprint[:12]}{ranks} ({r.steps} steps)",
                  file=sys.stderr)
            _print(r.to_dict())
    elif step == "generate":
        _print(pipeline.step_generate(cfg, bars).to_dict())
    elif step == "validate":
        r = pipeline.step_validate(cfg)
        _print({"passed": r.passed, "failures": r.failures, "figures": r.figures})
        if not r.passed and args.strict:
            try:
                pipeline.gated(cfg, check_gate, {"passed": False, "failures": r.failures})
            except GateFailed as err:
                print(str(err), file=sys.stderr)
            return 1
    elif step == "utility":
        r = pipeline.step_utility(cfg, bars)
        print(_utility_lines(r.to_dict()), file=sys.stderr)
        _print(r.to_dict())
        if not r.passed and args.strict:
            try:
                pipeline.gated(cfg, check_utility, {"passed": False, "failures": r.failures})
            except GateFailed as err:
                print(str(err), file=sys.stderr)
            return 1
    elif step == "publish":
        try:
            _print(pipeline.step_publish(cfg).to_dict())
        except GateFailed as err:
            print(str(err), file=sys.stderr)
            return 1
        print(_summary(cfg), file=sys.stderr)
    elif step == "modality":
        from cyclegan_core.modality.run import ModalityError, run_modality
        from cyclegan_core.modality.translators import TranslatorError

        try:
            result = run_modality(cfg, bars).to_dict()
        except GateFailed as err:
            print(str(err), file=sys.stderr)
            return 1
        except (ModalityError, TranslatorError) as err:
            print(f"cycleaug modality: {err}", file=sys.stderr)
            return 1
        print(modality_lines(result), file=sys.stderr)
        _print(result)
    elif step == "verify":
        from cyclegan_core.reader import DatasetError

        try:
            dataset = _open_published(cfg, args)
        except DatasetError as err:
            print(str(err), file=sys.stderr)
            return 1
        problems = dataset.verify()
        print("\n".join(problems) or f"{dataset.label}: every shard matches manifest.json")
        return 1 if problems else 0
    elif step == "diff":
        from cyclegan_core.diff import diff_markdown, diff_versions
        from cyclegan_core.reader import DatasetError, open_dataset
        from cyclegan_core.storage import is_remote, write_json_atomic

        def version(ref: str):
            if is_remote(ref) or Path(ref).exists():
                return open_dataset(ref)
            return open_dataset(repo=args.repo or ".", rev=ref, path=args.path or cfg.paths.published)

        try:
            result = diff_versions(version(args.old), version(args.new))
        except DatasetError as err:
            print(f"cycleaug diff: {err}", file=sys.stderr)
            return 1
        if args.json:
            write_json_atomic(args.json, result)
        print(diff_markdown(result))
    elif step == "review":
        from cyclegan_core.reader import DatasetError
        from flows.review import serve as serve_review

        try:
            dataset = _open_published(cfg, args)
        except DatasetError as err:
            print(str(err), file=sys.stderr)
            return 1
        serve_review(dataset, cfg.paths.flags, host=args.host, port=args.port)
    elif step in ("flag", "unflag"):
        from cyclegan_core.flags import FlagError, add_events, flagged

        rows = [{"source_id": s, "direction": args.direction} for s in args.source_ids]
        try:
            n = add_events(cfg.paths.flags, step, rows, reason=args.reason, who=args.who)
        except FlagError as err:
            print(f"cycleaug {step}: {err}", file=sys.stderr)
            return 1
        print(f"{step}ged {n} rows in {cfg.paths.flags}; {len(flagged(cfg.paths.flags))} flagged now",
              file=sys.stderr)
    elif step == "export":
        from cyclegan_core.export import export
        from cyclegan_core.reader import DatasetError

        extra = {"samples_per_shard": args.samples_per_shard} if args.format == "webdataset" else {}
        try:
            result = export(_open_published(cfg, args), args.out, args.format, split=args.split,
                            direction=args.direction, **extra)
        except (DatasetError, ValueError) as err:
            print(f"cycleaug export: {err}", file=sys.stderr)
            return 1
        _print(result.to_dict())
    return 0


def cmd_paired(cfg: Config, args: argparse.Namespace) -> int:
    """``paired-augment``: augment a paired Parquet dataset N times per sample (see ``flows/paired.py``)."""
    if args.prefect:
        os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from flows.paired import paired_augment

        state = paired_augment(params=args.params, overrides=list(args.set), demo=args.demo, return_state=True)
        if state.is_failed():
            print(f"paired-augment failed: {state.message}", file=sys.stderr)
            return 1
        _print(state.result())
        return 0
    from cyclegan_core.paired.pipeline import augment_paired, make_demo_input
    from cyclegan_core.paired.sample import PairedSampleError
    from cyclegan_core.paired.settings import PairedConfig

    if args.demo or cfg.paired.input == PairedConfig().input:
        made = make_demo_input(cfg.paired)
        if made["made"]:
            print(f"wrote {made['samples']} generated paired scenes to {made['path']}", file=sys.stderr)
    try:
        result = augment_paired(cfg.paired, Bars(), preview=cfg.paired.demo.preview if args.demo else 0)
    except (FileNotFoundError, ValueError, PairedSampleError) as err:
        print(f"paired-augment: {err}", file=sys.stderr)
        return 1
    _print(result.to_dict())
    return 0


def _open_published(cfg: Config, args: argparse.Namespace):
    """The published version the command names: ``--repo``/``--rev`` (through DVC), ``--dataset``, or ours
    (``modality.output`` with ``modality.enabled``)."""
    from cyclegan_core.reader import open_dataset

    ours = cfg.modality.output if cfg.modality.enabled else cfg.paths.published  # a modality run's, or ours
    if args.repo is not None or args.rev is not None:
        return open_dataset(repo=args.repo, rev=args.rev, path=args.path or ours)
    return open_dataset(args.dataset or ours)


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="folder or fsspec URL of a published version (default: paths.published, "
                   "modality.output in a modality run)")
    p.add_argument("--repo", help="git URL or folder of a DVC repository holding published versions")
    p.add_argument("--rev", help="git tag, branch or commit of --repo (e.g. v3)")
    p.add_argument("--path", help="the dataset's path inside --repo (default: as for --dataset)")


def cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    """Serve the scheduled deployments (flows/serve.py) from this process until interrupted."""
    del cfg
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    from flows.serve import serve

    serve(args.params, list(args.set))
    return 0


START_HERE = """start here:
  cycleaug run                      the whole pipeline on the bundled digits (what make demo runs)
  cycleaug --set data.domain_a=DIR_A --set data.domain_b=DIR_B run
                                    the same on your own two folders (labels.csv optional; see the README)
  cycleaug ingest, train, generate, validate, utility, publish
                                    one step at a time, without Prefect (what dvc.yaml's stages call)
--params and --set go before or after the subcommand: cycleaug run --set train.steps=300"""

# What each step command prints as the next thing to run.
NEXT = {"default-data": "cycleaug ingest", "ingest": "cycleaug train", "train": "cycleaug generate",
        "generate": "cycleaug validate", "validate": "cycleaug utility", "utility": "cycleaug publish",
        "publish": "read it: open_dataset(\"data/augmented\"), or cycleaug export --format imagefolder --out DIR"}


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    """--params and --set, on the main parser and again on every subcommand (so either place works)."""
    suffix = "" if top else "_sub"
    parser.add_argument("--params", dest=f"params{suffix}", default="params.yaml" if top else argparse.SUPPRESS,
                        help="configuration file (default: params.yaml)")
    parser.add_argument("--set", dest=f"set{suffix}", action="append", default=[] if top else argparse.SUPPRESS,
                        metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable), e.g. --set train.steps=200")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cycleaug", description=__doc__, epilog=START_HERE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        _common(sp, top=False)
        return sp

    r = add("run", "the whole pipeline as a Prefect flow (a temporary local server unless PREFECT_API_URL is set)")
    r.add_argument("--retrain", action="store_true", help="train on the current data even if a model could be kept")
    add("serve", "serve the nightly and retrain deployments on their cron schedules (Prefect)")
    add("default-data", "make the bundled default collections (handwritten and typed digits)")
    add("ingest", "read, check and normalize both collections into manifests (bad files go to a quarantine list)")
    t = add("train", "train a model for the current data and config, or reuse the stored one")
    t.add_argument("--retrain", action="store_true", help="train on the current data even if a model could be kept")
    add("generate", "translate A->B and B->A with reconstructions")
    v = add("validate", "score translations and evaluate the quality gate")
    v.add_argument("--strict", action="store_true", help="exit 1 when the run-level gate fails")
    u = add("utility", "train a downstream classifier on real, translated and untranslated samples and test it on "
            "real held-out targets (needs labels)")
    u.add_argument("--strict", action="store_true", help="exit 1 when a utility bound fails")
    add("publish", "write the passing rows as a Parquet dataset (refused if the gate failed)")
    add("modality", "a modality run without Prefect (modality section): translate the source collection, gate it "
        "against real target items, publish the pairs")
    _source_args(add("verify", "check the published dataset against its manifest"))
    e = add("export", "write a published version as an image folder or WebDataset tar shards")
    e.add_argument("--format", choices=("imagefolder", "webdataset"), default="imagefolder")
    e.add_argument("--out", required=True, help="folder to write (replaced whole when the export is complete)")
    e.add_argument("--split", help="only this split (train or test)")
    e.add_argument("--direction", choices=DIRECTIONS, help="only this direction")
    e.add_argument("--samples-per-shard", type=int, default=1000, help="samples per tar (webdataset)")
    _source_args(e)
    df = add("diff", "what changed between two published versions: rows added, removed and changed per direction "
             "and split, models, settings, held-out figure drift")
    df.add_argument("old", help="a published folder or URL, or a git revision (tag) of --repo")
    df.add_argument("new", help="the same for the newer version")
    df.add_argument("--repo", help="DVC repository for revisions (default: the params file's folder)")
    df.add_argument("--path", help="the dataset's path inside --repo (default: paths.published)")
    df.add_argument("--json", help="also write the diff as JSON to this file")
    rv = add("review", "browse a published version in a local web page: filter, sort, look, flag rows")
    _source_args(rv)
    rv.add_argument("--port", type=int, default=8765, help="loopback port of the page (default 8765)")
    rv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    for name, what in (("flag", "flag rows by source id so that the next publish leaves them out"),
                       ("unflag", "take flags off rows (by source id): the next publish includes them again")):
        fl = add(name, what)
        fl.add_argument("source_ids", nargs="+", metavar="SOURCE_ID", help="source ids of the rows")
        fl.add_argument("--direction", choices=DIRECTIONS, required=True)
        fl.add_argument("--reason", default="", help="what is wrong with them" + (" (required)" if name == "flag"
                                                                                 else ""))
        fl.add_argument("--who", help="who flags (default: the login name)")
    pa = add("paired-augment", "augment a paired multimodal Parquet dataset paired.copies times per sample "
             "(synchronized ops, mixup, modality dropout, replay records)")
    pa.add_argument("--demo", action="store_true", help="write generated scenes to paired.input first if missing, "
                    "and a picture of paired.demo.preview samples before/after in <output>/preview.png")
    pa.add_argument("--prefect", action="store_true", help="run as the Prefect flow cycleaug-paired-augment")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with --params/--set merged from before and after the subcommand."""
    args = build_parser().parse_args(argv)
    args.params = getattr(args, "params_sub", args.params)
    args.set = [*args.set, *getattr(args, "set_sub", [])]
    return args


def in_project(args: argparse.Namespace) -> None:
    """Work in the folder that holds the params file: relative paths in it (and in ``--set``) are from there,
    whatever the current directory. Paths given as arguments (``--out``, a local ``--dataset``/``--repo``)
    stay relative to where the command was typed."""
    from cyclegan_core.storage import is_remote

    params = Path(args.params)
    if not params.is_file():
        return  # load_config says what is wrong with it
    project = params.resolve().parent
    if project == Path.cwd().resolve():
        return
    for name in ("out", "dataset", "repo", "json", "old", "new"):
        value = getattr(args, name, None)
        if value and not is_remote(value) and (name in ("out", "json") or Path(value).exists()):
            setattr(args, name, str(Path(value).resolve()))
    args.params = str(params.resolve())
    os.chdir(project)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    typed_in = Path.cwd()
    in_project(args)
    try:
        return _main(args)
    finally:
        os.chdir(typed_in)  # for callers in this process (tests, notebooks)


def _main(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.params, tuple(args.set))
    except ConfigError as err:
        print(f"cycleaug: {err}", file=sys.stderr)
        return 2
    if args.command == "run":
        return cmd_run(cfg, args)
    if args.command == "serve":
        return cmd_serve(cfg, args)
    if args.command == "paired-augment":
        return _reported(cmd_paired, cfg, args)
    code = _reported(cmd_step, cfg, args)
    if code == 0 and args.command in NEXT and os.environ.get("RANK", "0") == "0":
        print(f"next: {NEXT[args.command]}", file=sys.stderr)
    return code


def _reported(fn, cfg: Config, args: argparse.Namespace) -> int:
    """Known failures as one clear line on stderr and exit 1, not a traceback."""
    import errno

    from cyclegan_core.ingest import CollectionError
    from cyclegan_core.storage import PathEscape, StorageError

    try:
        return fn(cfg, args)
    except (CollectionError, StorageError, PathEscape) as err:
        print(f"cycleaug {args.command}: {err}", file=sys.stderr)
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        why = "out of disk space or over a file-size limit" if full else "file or storage error"
        print(f"cycleaug {args.command}: {why}: {err}; outputs written before are left as they were",
              file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
