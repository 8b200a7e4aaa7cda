"""The `lichang` command line: data check and split, train, predict, eval, serve, batch (run, report, export)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lichang.config import DEFAULT_MODEL_DIR, SPLITS_DIR, LichangConfig


class CommandError(RuntimeError):
    """A user-facing failure: printed as one line, exit code 2."""


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cmd_data_check(args: argparse.Namespace) -> int:
    from lichang.config import SPLITS_DIR
    from lichang.data import check_files, check_held_out, count_table, read_records

    result = check_files(args.files)
    held_out = [path for path in (SPLITS_DIR / "dev.jsonl", SPLITS_DIR / "test.jsonl") if path.is_file()]
    check_held_out(result, read_records(held_out).records)
    if result.records:
        print(count_table(result))
    if result.issues:
        print(f"\n{len(result.issues)} problem(s):", file=sys.stderr)
        for issue in result.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    print(f"\nOK: {len(result.records)} records in {len(args.files)} file(s), no problems")
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from lichang.config import DATA_DIR, REPO_ROOT
    from lichang.splits import write_splits

    written = sorted((DATA_DIR / "written").glob("*.jsonl"))
    seeds = sorted((REPO_ROOT / "seeds" / "labeled").glob("*.jsonl"))
    counts = write_splits(written, seeds, set(args.test_seed), Path(args.out), reshuffle=args.reshuffle)
    print(json.dumps(counts))
    return 0


def cmd_data_agree(args: argparse.Namespace) -> int:
    from lichang.data import load_records
    from lichang.eval.agreement import format_agreement, label_agreement

    result = label_agreement(load_records(args.reference), load_records([args.second]))
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else format_agreement(result))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lichang.training.model_card import write_model_card
    from lichang.training.trainer import Trainer

    _quiet_transformers()
    config = LichangConfig.from_file(args.config) if args.config else LichangConfig()
    for key in ("epochs", "batch_size", "learning_rate", "trainable_layers", "base_encoder", "device", "seed",
                "threads", "name", "version"):
        value = getattr(args, key)
        if value is not None:
            setattr(config, key, value)
    if args.train:
        config.train_files = args.train
    if args.dev:
        config.dev_files = args.dev
    test_files = args.test if args.test is not None else [str(SPLITS_DIR / "test.jsonl")]
    result = Trainer(config, test_files=[f for f in test_files if f]).run(args.out)
    write_model_card(Path(args.out), config, result)
    print(json.dumps({"model_dir": str(args.out), "dev": _headline(result.dev),
                      "test": _headline(result.test) if result.test else None,
                      "seconds": round(result.seconds, 1)}, indent=2))
    return 0


def _headline(scores: dict) -> dict:
    return {"stance_macro_f1": round(scores["stance"]["macro_f1"], 4),
            "stance_accuracy": round(scores["stance"]["accuracy"], 4),
            "topic_micro_f1": round(scores["topics"]["micro_f1"], 4)}


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return args.text
    if args.file:
        raw = Path(args.file).read_bytes()
        source = args.file
    else:
        raw = sys.stdin.buffer.read()
        source = "standard input"
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"{source} is not valid UTF-8 (byte {exc.start}): convert it, e.g. iconv -f GBK -t UTF-8"
        ) from exc


def cmd_predict(args: argparse.Namespace) -> int:
    from lichang.analysis import analyse_paragraphs
    from lichang.models.classifier import StanceTopicModel
    from lichang.models.scorer import Scorer
    from lichang.paragraphs import split_paragraphs
    from lichang.schema import STANCES, TOPICS

    _quiet_transformers()
    paragraphs = split_paragraphs(_read_text(args))
    if not paragraphs:
        raise CommandError("no text to score: the input is empty or only whitespace")
    model = StanceTopicModel.from_pretrained(args.model)
    aliases = [a.strip() for a in (args.aliases or "").split(",") if a.strip()]
    results, summary = analyse_paragraphs(Scorer(model), paragraphs, args.brand, aliases)
    if args.json:
        for result in results:
            print(json.dumps(result.to_api(), ensure_ascii=False))
        return 0
    print(f"{'#':>3} {'stance':9}" + "".join(f"{s[:8]:>9}" for s in STANCES)
          + "".join(f"{t[:8]:>9}" for t in TOPICS) + "  text")
    for result in results:
        cells = "".join(f"{result.stance_scores[s]:9.2f}" for s in STANCES)
        cells += "".join(f"{result.topic_scores[t]:8.2f}{'*' if t in result.topics else ' '}" for t in TOPICS)
        label = "(boiler)" if result.boilerplate else result.stance
        snippet = result.text if len(result.text) <= 40 else result.text[:39] + "…"
        print(f"{result.index:>3} {label:9}{cells}  {snippet}")
    shares = ", ".join(f"{s} {summary.shares[s]:.0%}" for s in STANCES)
    print(f"\n{summary.scored_paragraphs} scored paragraphs: {shares}; net stance {summary.net_stance:+.2f}")
    print("* = topic over its threshold; probabilities are calibrated; (boiler) = boilerplate, not counted")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lichang.eval.evaluate import evaluate
    from lichang.eval.report import EvalSettings

    _quiet_transformers()
    if args.resamples < 0 or args.top_errors < 0:
        raise CommandError("--resamples and --top-errors must be 0 or more")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = EvalSettings(resamples=args.resamples, seed=args.seed, top_errors=args.top_errors,
                            show_progress=not args.quiet)
    metrics = evaluate(args.model, args.data, args.out, dev_files=args.dev, brand=args.brand,
                       baselines=not args.no_baselines, settings=settings, device=args.device)
    stance = metrics["stance"]
    headline = {
        "out": str(args.out), "n_paragraphs": metrics["n_paragraphs"],
        "stance_accuracy": round(stance["accuracy"], 4), "stance_macro_f1": round(stance["macro_f1"], 4),
        "stance_macro_f1_ci": [round(x, 4) for x in stance.get("macro_f1_ci", [])] or None,
        "topic_micro_f1": round(metrics["topics"]["micro_f1"], 4),
        "baselines_stance_macro_f1": {n: round(b["stance"]["macro_f1"], 4) for n, b in metrics["baselines"].items()},
        "paragraphs_per_second": round(metrics["cost"]["paragraphs_per_second"] or 0.0, 1),
    }
    print(json.dumps(headline, ensure_ascii=False, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from lichang.service.settings import ServiceSettings

    _quiet_transformers()
    settings = ServiceSettings.from_env(model_dir=args.model, host=args.host, port=args.port, workers=args.workers,
                                        device=args.device, api_key=args.api_key, default_brand=args.default_brand)
    if not (Path(settings.model_dir) / "lichang.json").is_file():
        raise CommandError(f"no lichang model at {settings.model_dir} (lichang.json missing)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # settings travel to worker processes through the environment (create_app reads LICHANG_*)
    for name, value in settings.model_dump().items():
        if value is not None:
            os.environ[f"LICHANG_{name.upper()}"] = str(value)
    uvicorn.run("lichang.service.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level="warning")
    return 0


def _store_spec(args: argparse.Namespace) -> str:
    store_spec = args.store or os.environ.get("LICHANG_STORE")
    if not store_spec:
        raise CommandError("give the store with --store PATH|URL (or set LICHANG_STORE)")
    return store_spec


def cmd_batch_run(args: argparse.Namespace) -> int:
    from lichang.models.classifier import StanceTopicModel
    from lichang.models.scorer import Scorer, pick_device
    from lichang.service.batch.runner import BatchRunner
    from lichang.service.batch.sources import count_records, find_inputs, parse_day, read_records
    from lichang.service.batch.store import Store

    _quiet_transformers()
    store_spec = _store_spec(args)
    if args.chunk_articles < 1 or args.max_batch_tokens < 1 or args.max_batch_size < 1:
        raise CommandError("--chunk-articles, --max-batch-tokens and --max-batch-size must be 1 or more")
    run_date = parse_day(args.date)
    aliases = [a.strip() for a in (args.aliases or "").split(",") if a.strip()]
    files = find_inputs(args.inputs)
    store = Store.open(store_spec)
    if not files:
        print(f"lichang batch: no .txt, .md or .jsonl input in {' '.join(args.inputs)}; nothing to do", file=sys.stderr)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = StanceTopicModel.from_pretrained(args.model, device=pick_device(args.device))
    scorer = Scorer(model, max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size)
    runner = BatchRunner(store, scorer, run_date, chunk_articles=args.chunk_articles,
                         progress=False if args.no_progress else None)
    try:
        stats = runner.run(read_records(files, args.brand, aliases), total=count_records(files), inputs=args.inputs,
                           input_files=[f.name for f in files])
    except KeyboardInterrupt:
        print("lichang batch: interrupted; every committed chunk is kept, run the same command again to finish",
              file=sys.stderr)
        return 130
    finally:
        store.close()
    if args.json:
        print(json.dumps(stats.to_dict()))
    else:
        print(f"lichang batch: {stats.line()}")
    if stats.failed:
        print(f"lichang batch: {stats.failed} record(s) could not be read (listed above, kept in the store's "
              "failures table)", file=sys.stderr)
    return 1 if stats.failed else 0


def cmd_batch_report(args: argparse.Namespace) -> int:
    from lichang.service.batch.report import write_report
    from lichang.service.batch.sources import parse_day
    from lichang.service.batch.store import Store

    day = parse_day(args.date)
    store_spec = _store_spec(args)
    store = Store.open(store_spec, create=False)
    out = write_report(store, day, args.out, days=args.days, top=args.top)
    print(f"lichang batch: report for {day} written to {out}")
    return 0


def cmd_batch_export(args: argparse.Namespace) -> int:
    from lichang.service.batch.report import export_day, infer_format
    from lichang.service.batch.sources import parse_day
    from lichang.service.batch.store import Store

    day = parse_day(args.date)
    fmt = infer_format(args.out, args.format)
    store_spec = _store_spec(args)
    store = Store.open(store_spec, create=False)
    rows = export_day(store, day, fmt, args.out)
    print(f"lichang batch: {rows} paragraph row(s) of {day} written to {args.out} ({fmt})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lichang", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="labeled data tools").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="validate labeled JSONL and print counts")
    check.add_argument("files", nargs="+")
    check.set_defaults(handler=cmd_data_check)
    split = data.add_parser("split", help="rebuild data/splits from data/written and seeds/labeled")
    split.add_argument("--out", default=str(SPLITS_DIR))
    split.add_argument("--test-seed", nargs="+", default=["seed002"],
                       help="seed articles held out for test (with frozen splits: only new ones)")
    split.add_argument("--reshuffle", action="store_true",
                       help="reassign every article from its hash; by default committed dev/test articles stay "
                            "where they are and new articles go to train")
    split.set_defaults(handler=cmd_data_split)
    agree = data.add_parser("agree", help="agreement of a second labeling with the labels it relabels")
    agree.add_argument("reference", nargs="+", help="labeled JSONL with the first labels (e.g. data/splits/dev.jsonl)")
    agree.add_argument("--second", required=True, help="labeled JSONL of the same rows by a second labeler")
    agree.add_argument("--json", action="store_true", help="print the scores as JSON")
    agree.set_defaults(handler=cmd_data_agree)

    train = commands.add_parser("train", help="train a model on labeled JSONL")
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--config", help="JSON file of LichangConfig values")
    train.add_argument("--train", nargs="+", help="training JSONL (default: data/splits/train.jsonl)")
    train.add_argument("--dev", nargs="+", help="dev JSONL (default: data/splits/dev.jsonl)")
    train.add_argument("--test", nargs="*", help="held-out JSONL scored once for the model card ('' for none)")
    for key, kind in (("epochs", int), ("batch_size", int), ("learning_rate", float), ("trainable_layers", int),
                      ("base_encoder", str), ("device", str), ("seed", int), ("threads", int), ("name", str),
                      ("version", str)):
        train.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind)
    train.set_defaults(handler=cmd_train)

    predict = commands.add_parser("predict", help="score text for a brand")
    predict.add_argument("text", nargs="?", help="text to score (default: --file or standard input)")
    predict.add_argument("--file", help="UTF-8 text file, one paragraph per line")
    predict.add_argument("--brand", required=True)
    predict.add_argument("--aliases", help="comma-separated other names of the brand")
    predict.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    predict.add_argument("--json", action="store_true", help="one JSON object per paragraph")
    predict.set_defaults(handler=cmd_predict)

    evaluation = commands.add_parser("eval", help="score a model on labeled JSONL; write report.html, report.md "
                                                  "and metrics.json")
    evaluation.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder (default: the shipped one)")
    evaluation.add_argument("--data", nargs="+", default=[str(SPLITS_DIR / "test.jsonl")],
                            help="labeled JSONL to evaluate (default: data/splits/test.jsonl)")
    evaluation.add_argument("--dev", nargs="+", help="dev JSONL for the SnowNLP baseline's thresholds "
                                                     "(default: the model's dev split)")
    evaluation.add_argument("--out", required=True, help="report folder to write")
    evaluation.add_argument("--brand", help="evaluate only the paragraphs of this target brand")
    evaluation.add_argument("--no-baselines", action="store_true", help="skip the baselines (faster)")
    evaluation.add_argument("--resamples", type=int, default=1000, help="article bootstrap resamples (0: no CIs)")
    evaluation.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    evaluation.add_argument("--top-errors", type=int, default=20, help="most confident mistakes listed")
    evaluation.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
    evaluation.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    evaluation.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluation.set_defaults(handler=cmd_eval)

    serve = commands.add_parser("serve", help="start the REST service (options override LICHANG_* variables)")
    serve.add_argument("--model", help="model folder (LICHANG_MODEL_DIR; default: the shipped models/default)")
    serve.add_argument("--host", help="LICHANG_HOST (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="LICHANG_PORT (default 8000)")
    serve.add_argument("--workers", type=int, help="LICHANG_WORKERS: processes, each with its own model copy")
    serve.add_argument("--device", help="LICHANG_DEVICE: auto (GPU when present), cpu or cuda")
    serve.add_argument("--api-key", help="LICHANG_API_KEY: require this key on every /v1 call")
    serve.add_argument("--default-brand", help="LICHANG_DEFAULT_BRAND: brand used when a request names none")
    serve.set_defaults(handler=cmd_serve)

    batch = commands.add_parser("batch", help="nightly batch scoring into a store, morning report, exports")
    batch_commands = batch.add_subparsers(dest="batch_command", required=True)
    store_help = "SQLite file path or SQLAlchemy database URL, e.g. postgresql://user@host/db (LICHANG_STORE)"
    run = batch_commands.add_parser("run", help="score new and changed articles into the store (resumable); "
                                                "exit 1 when some records could not be read")
    run.add_argument("inputs", nargs="+", help="folders of .txt/.md/.jsonl files, such files, or quoted globs")
    run.add_argument("--store", help=store_help)
    run.add_argument("--brand", help="target brand of records that name none (all .txt/.md files)")
    run.add_argument("--aliases", help="comma-separated other names of --brand")
    run.add_argument("--date", help="report day of new articles without published_at, and of failures "
                                    "(YYYY-MM-DD; default: today)")
    run.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder (default: the shipped one)")
    run.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    run.add_argument("--chunk-articles", type=int, default=128,
                     help="articles scored together and committed in one transaction (default 128)")
    run.add_argument("--max-batch-tokens", type=int, default=4096,
                     help="token budget of one model batch (default 4096, best on CPU; raise it on a GPU)")
    run.add_argument("--max-batch-size", type=int, default=64, help="most windows in one model batch (default 64)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")
    run.set_defaults(handler=cmd_batch_run)
    report = batch_commands.add_parser("report", help="write the day's self-contained HTML report")
    report.add_argument("--store", help=store_help)
    report.add_argument("--date", help="the day to report (YYYY-MM-DD; default: today)")
    report.add_argument("--out", required=True, help="HTML file to write")
    report.add_argument("--days", type=int, default=7, help="days in the trend, the reported day included")
    report.add_argument("--top", type=int, default=5, help="most critical paragraphs shown per brand")
    report.set_defaults(handler=cmd_batch_report)
    export = batch_commands.add_parser("export", help="the day's paragraphs with article fields, one row each")
    export.add_argument("--store", help=store_help)
    export.add_argument("--date", help="the day to export (YYYY-MM-DD; default: today)")
    export.add_argument("--format", choices=["jsonl", "parquet"], help="default: from the --out suffix")
    export.add_argument("--out", required=True, help="file to write")
    export.set_defaults(handler=cmd_batch_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CommandError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"lichang: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
