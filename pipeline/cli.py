"""The ``thresher`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from rich.console import Console
from rich.markup import escape

from thresher.pipeline.errors import ThresherError

err_console = Console(stderr=True)
console = Console()


def make_progress(quiet: bool):
    """The run's progress on stderr: nothing with ``-q``; a live display (per pass, the run, LLM
    requests) when stdout and stderr are terminals; else one line per pass as it ends."""
    if quiet:
        return None
    from thresher.pipeline.progress import LiveDisplay, PassLines, RunProgress

    if sys.stdout.isatty() and err_console.is_terminal:
        return RunProgress(LiveDisplay(err_console))
    return RunProgress(PassLines(sys.stderr))


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe file or the name of a shipped recipe (see `thresher recipes`)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. output.format=parquet or process.text_length_filter.min_words=20")
    p.add_argument("--input", nargs="+", metavar="PATH", help="input files, directories or globs (replace input.paths)")
    p.add_argument("--output", metavar="DIR", help="output directory (replaces output.path)")
    p.add_argument("--executor", choices=["local", "ray"], help="replaces executor.type")
    p.add_argument("--workers", type=int, help="worker processes (0 = all cores)")


def _load(args):
    from thresher.pipeline.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.sets, inputs=args.input, output=args.output,
                         executor=args.executor, workers=args.workers)
    for note in recipe.notes:
        err_console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    return recipe


def cmd_run(args) -> int:
    from thresher.pipeline.ledger_view import ledger_table
    from thresher.pipeline.run import run

    recipe = _load(args)
    progress = make_progress(args.quiet)
    with progress or contextlib.nullcontext():
        result = run(recipe, resume=args.resume, overwrite=args.overwrite, progress=progress)
    if not args.quiet:
        console.print(ledger_table(result.ledger, result.output_rows))
        where = result.url or result.out  # an object-store output: its URL, not the staging directory
        console.print(f"wrote {result.output_rows:,} rows to {where}/data in {result.seconds:.1f} s "
                      f"(ledger: {where}/ledger.json)")
    return 0


def cmd_analyze(args) -> int:
    from thresher.pipeline.analyze import Options, analysis_recipe
    from thresher.pipeline.analyze_view import analysis_tables
    from thresher.pipeline.run import run

    recipe = _load(args)
    if not 0 < args.keep < 1:
        raise ThresherError(f"--keep must be a share between 0 and 1 (got {args.keep})")
    options = Options(suggest=args.suggest, keep=args.keep, sigma=args.sigma, method=args.method)
    notes = analysis_recipe(recipe, output=args.output, sample=args.sample, lang=args.lang, llm=args.llm,
                            tokens=None if args.no_tokens else args.tokenizer, token_share=args.token_sample,
                            options=options)
    for note in notes:
        err_console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    progress = make_progress(args.quiet)
    with progress or contextlib.nullcontext():
        result = run(recipe, resume=args.resume, overwrite=args.overwrite, progress=progress)
    summary = json.loads((result.out / "analysis.json").read_text(encoding="utf-8"))
    if not args.quiet:
        console.print(analysis_tables(summary))
        if summary.get("diff"):
            console.print(f"\nsuggested recipe ({options.method}; written to {result.out}/suggested.yaml):")
            console.print(summary["diff"], markup=False, highlight=False, soft_wrap=True)
        if tok := summary.get("tokens"):
            how = "counted" if tok["share"] >= 1 else f"estimated from {tok['rows_counted']:,} rows ({tok['share']:.0%} sample)"
            console.print(f"tokens ({tok['tokenizer']}): {tok['estimated_total']:,} {how}", highlight=False)
        console.print(f"analysed {summary['rows']:,} rows in {result.seconds:.1f} s: {result.out}/stats.parquet, "
                      f"{result.out}/report.html", highlight=False)
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from thresher.pipeline.report import write_report

    out = Path(args.out)
    if not (out / "ledger.json").is_file():
        raise ThresherError(f"'{args.out}' is not a thresher output (no ledger.json); give the directory a run or an "
                            "analysis wrote")
    print(write_report(out))
    return 0


def cmd_validate(args) -> int:
    from thresher.pipeline.plan import describe, make_plan

    recipe = _load(args)
    console.print(f"[green]ok[/green] {recipe.source}: {len(recipe.ops)} ops, executor {recipe.executor.type}")
    print(describe(make_plan(recipe.build_ops())))
    return 0


def cmd_ops(args) -> int:
    from thresher.pipeline.docs import markdown, op_text
    from thresher.pipeline.registry import all_ops, get_op, op_origin, resolve_alias

    ops = all_ops()  # a plugin that fails to load is reported (one line on stderr) and left out
    if args.markdown:
        sys.stdout.write(markdown())  # thresher's own ops only: what docs/operators.md holds
        return 0
    if args.name:
        name, note = resolve_alias(args.name)  # unknown: one line naming a close name or a failed plugin
        if note:
            err_console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
        console.print(op_text(get_op(name)), markup=False, highlight=False)
        return 0
    width = max(len(n) for n in ops)
    for n, c in ops.items():
        origin = op_origin(c)
        where = "" if origin.builtin else f"  [{origin.distribution or origin.module}]"  # a plugin's op says whose
        console.print(f"{n:<{width}}  {c.kind():<7}  {c.summary()}{where}", markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_recipes(args) -> int:
    import yaml

    from thresher.pipeline.ops import first_sentence
    from thresher.pipeline.recipe import shipped_recipes

    for name, path in sorted(shipped_recipes().items()):
        desc = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description", "")
        # one line per recipe (soft_wrap: the terminal wraps it, rich does not), its first whole sentence
        console.print(f"{name:<20} {first_sentence(desc or '')}", markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_schema(args) -> int:
    from thresher.pipeline.docs import recipe_schema

    print(json.dumps(recipe_schema(), indent=2))
    return 0


def cmd_import_dj(args) -> int:
    from pathlib import Path

    from thresher.pipeline.import_dj import convert_file

    conv = convert_file(args.config)  # nothing convertible: a ThresherError listing every op and why
    for line in conv.summary():
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not args.output:
        sys.stdout.write(conv.text)
        return 0
    out = Path(args.output)
    if out.exists() and not args.force:
        raise ThresherError(f"'{out}' exists; give --force to overwrite it")
    out.write_text(conv.text, encoding="utf-8")
    err_console.print(f"wrote {out}; check it with `thresher validate {out}`", markup=False, highlight=False)
    return 0


def cmd_demo(args) -> int:
    from pathlib import Path

    from thresher.pipeline.demo import write_demo

    path = write_demo(Path(args.out))
    console.print(f"wrote demo corpus to {path}")
    return 0


def cmd_train_quality(args) -> int:
    from thresher.operators.filter.quality_training import config_from_args, format_report, train_quality

    console.print(format_report(train_quality(config_from_args(args))), highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_submit(args) -> int:
    from thresher.cluster import jobs

    env = dict(kv.split("=", 1) for kv in args.env)
    job_id = jobs.submit(args.recipe, args.address, args.sets, inputs=args.input, output=args.output,
                         install=args.install, job_id=args.job_id, env_vars=env)
    print(job_id)
    if args.follow or args.wait:
        st = jobs.wait(job_id, args.address, follow=args.follow)
        err_console.print(f"job {job_id}: {st}")
        if st != "SUCCEEDED" and not args.follow:
            sys.stderr.write(jobs.logs(job_id, args.address)[-3000:])
        return 0 if st == "SUCCEEDED" else 1
    return 0


def cmd_jobs(args) -> int:
    from thresher.cluster import jobs

    if args.action == "status":
        print(jobs.status(args.job_id, args.address))
    elif args.action == "logs":
        if args.follow:
            st = jobs.wait(args.job_id, args.address, follow=True)
            return 0 if st == "SUCCEEDED" else 1
        print(jobs.logs(args.job_id, args.address), end="")
    else:
        print("stopped" if jobs.stop(args.job_id, args.address) else "not running")
    return 0


def cmd_cluster(args) -> int:
    from thresher.cluster.templates import write_templates

    for path in write_templates(args.provider, args.recipe, args.out, sets=args.sets, inputs=args.input,
                                output=args.output, image=args.image, service_account=args.service_account,
                                staging_claim=args.staging_claim, staging_class=args.staging_class,
                                staging_nfs=args.staging_nfs):
        print(path)
    return 0


def cmd_push_hf(args) -> int:
    from thresher.pipeline.hub import push

    staged, url = push(args.out, args.repo_id, private=args.private, revision=args.revision, license=args.license)
    console.print(f"pushed {staged.rows:,} rows in {len(staged.files)} Parquet shards and the dataset card to "
                  f"{args.repo_id}: {url}", highlight=False)
    return 0


def cmd_show(args) -> int:
    from thresher.pipeline.show import show

    mode = args.mode or ("dropped" if args.reason is not None else "kept")  # --reason alone: dropped rows
    show(args.out, mode, op=args.op, reason=args.reason, n=args.n, full=args.full, pager=not args.no_pager)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thresher", description="Curate LLM training data and size the jobs that use it.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (also THRESHER_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a recipe")
    _add_recipe_args(p)
    p.add_argument("--resume", action="store_true", help="finish an interrupted run in the same output directory")
    p.add_argument("--overwrite", action="store_true", help="discard an unfinished run in the output directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or ledger table")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("analyze", help="every filter's stats on every row (nothing dropped): stats.parquet, "
                       "report.html, threshold suggestions")
    _add_recipe_args(p)
    p.add_argument("--sample", type=int, metavar="N", help="rows sampled per op and reason for the report "
                   "(default: output.trace_samples)")
    p.add_argument("--lang", action="store_true", help="also measure languages (adds language_id, tag only)")
    p.add_argument("--llm", action="store_true", help="include ops that send paid LLM requests")
    p.add_argument("--tokenizer", default="cl100k_base", help="tokenizer for tokens per row (a name or a tokenizer.json)")
    p.add_argument("--no-tokens", action="store_true", help="do not count tokens per row")
    p.add_argument("--token-sample", type=float, default=0.05, metavar="SHARE",
                   help="count tokens on this seeded share of the rows (1: every row; exact BPE costs about "
                        "as much as the whole run) and estimate the total from it (default 0.05)")
    p.add_argument("--suggest", action="store_true", help="propose thresholds and print the recipe diff")
    p.add_argument("--keep", type=float, default=0.95, help="(--suggest) share of rows each stat's bounds keep")
    p.add_argument("--sigma", type=float, default=3.0, help="(--suggest) outliers beyond mean ± SIGMA std")
    p.add_argument("--method", choices=["quantile", "sigma"], default="quantile",
                   help="(--suggest) which suggestion goes into suggested.yaml")
    p.add_argument("--resume", action="store_true", help="finish an interrupted analysis")
    p.add_argument("--overwrite", action="store_true", help="discard an unfinished analysis in the output directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no tables")
    p.set_defaults(fn=cmd_analyze)

    p = sub.add_parser("validate", help="check a recipe (ops, parameters, inputs not read) and print the plan")
    _add_recipe_args(p)
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("ops", help="list operators, or show one")
    p.add_argument("name", nargs="?")
    p.add_argument("--markdown", action="store_true", help="all op docs as Markdown (docs/operators.md)")
    p.set_defaults(fn=cmd_ops)

    p = sub.add_parser("recipes", help="list shipped recipes")
    p.set_defaults(fn=cmd_recipes)

    p = sub.add_parser("schema", help="print the recipe JSON Schema")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("train-quality", help="train a quality classifier (for quality_classifier): fastText or "
                       "logistic regression on sentence embeddings")
    p.add_argument("--positive", nargs="+", metavar="FILE", help="files of high-quality examples (jsonl/json/txt/parquet)")
    p.add_argument("--negative", nargs="+", metavar="FILE", help="files of low-quality examples")
    p.add_argument("--labels", nargs="+", metavar="FILE", help="labelled examples, e.g. llm_quality_score's output")
    p.add_argument("--label-column", help="the labels' score column (e.g. edu_score)")
    p.add_argument("--label-threshold", type=float, help="a label at least this is positive (default 3, as FineWeb-Edu)")
    p.add_argument("--text-key", "--text-column", dest="text_key", default="text")
    p.add_argument("--config", help="a training config (YAML) or a shipped one's name, e.g. shared-data, web-quality")
    p.add_argument("--model-type", choices=["fasttext", "embedding-logreg"], help="default fasttext (or the config's)")
    p.add_argument("--rule-features", action="store_true", help="(embedding-logreg) add the Gopher/C4/FineWeb rule stats")
    p.add_argument("--eval", metavar="FILE", help="a labelled set ({text, label}) to report precision/recall/AUC on")
    p.add_argument("--eval-cv", type=int, metavar="K", help="also K-fold figures with the other folds of --eval in training")
    p.add_argument("--threshold", type=float, help="the keep threshold the reports use (default 0.5)")
    p.add_argument("--output", help="where to write the model (.bin or .npz; metrics go beside it as .json)")
    p.add_argument("--seed", type=int)
    p.add_argument("--epoch", type=int)
    p.set_defaults(fn=cmd_train_quality)

    import os

    default_address = os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")
    p = sub.add_parser("submit", help="run a recipe on a Ray cluster as a Ray job (Jobs API)")
    p.add_argument("recipe")
    p.add_argument("--address", default=default_address, help="the cluster's dashboard URL (default $RAY_API_SERVER_ADDRESS)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--input", nargs="+", metavar="PATH", help="input paths as the cluster sees them")
    p.add_argument("--output", metavar="DIR", help="output directory as the cluster sees it")
    p.add_argument("--install", choices=["pip", "none"], default="pip",
                   help="pip: install thresher's dependencies on the workers; none: the image has them")
    p.add_argument("--job-id", help="a submission id of your choice")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the job (not for secrets: those come from the cluster)")
    p.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    p.add_argument("--wait", action="store_true", help="wait for the job to end (exit 1 if it failed)")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    p.add_argument("action", choices=["status", "logs", "stop"])
    p.add_argument("job_id")
    p.add_argument("--address", default=default_address)
    p.add_argument("--follow", action="store_true", help="(logs) stream until the job ends")
    p.set_defaults(fn=cmd_jobs)

    p = sub.add_parser("cluster", help="cluster templates")
    csub = p.add_subparsers(dest="cluster_command", required=True)
    c = csub.add_parser("init", help="write a Ray cluster-launcher YAML (aws, gcp) or KubeRay manifests for a recipe")
    c.add_argument("provider", choices=["aws", "gcp", "kuberay"])
    c.add_argument("recipe")
    c.add_argument("--out", default="cluster", help="directory to write to")
    c.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--input", nargs="+", metavar="URL", help="input paths as the cluster sees them (replace input.paths)")
    c.add_argument("--output", metavar="URL", help="where the cluster writes: an object-store URL such as "
                   "s3://BUCKET/PREFIX (default: the recipe's output.path, if it is one)")
    c.add_argument("--image", help="(kuberay) container image with thresher installed (default thresher:latest)")
    c.add_argument("--service-account", help="(kuberay) pods' service account, for IRSA / Workload Identity "
                   "storage credentials")
    c.add_argument("--staging-claim", metavar="PVC", help="(kuberay, optional) an existing ReadWriteMany claim for "
                   "the driver's files (THRESHER_STAGING); not needed: the tasks write to the bucket")
    c.add_argument("--staging-class", metavar="CLASS", help="(kuberay, optional) make such a claim of this storage "
                   "class (one that offers ReadWriteMany: EFS, Filestore, NFS)")
    c.add_argument("--staging-nfs", metavar="HOST:/PATH", help="(aws, gcp, optional) NFS export (EFS, Filestore) "
                   "every node mounts for the driver's files; not needed: the tasks write to the bucket")
    c.set_defaults(fn=cmd_cluster)

    from thresher.capacity.cli import add_parser as add_plan_parser

    add_plan_parser(sub)

    p = sub.add_parser("show", help="page through an output's rows (kept, dropped or quarantined) with reasons and stats")
    p.add_argument("out", help="an output directory of `thresher run`")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--kept", dest="mode", action="store_const", const="kept", help="kept rows from data/ (the default)")
    m.add_argument("--dropped", dest="mode", action="store_const", const="dropped",
                   help="dropped rows: the sample the run kept in trace/, with reason and stats")
    m.add_argument("--quarantined", dest="mode", action="store_const", const="quarantined",
                   help="bad rows from quarantine/, with file:line and reason")
    p.add_argument("--op", metavar="NAME", help="one op (key or name): its drops, its quarantined rows, or its stats of kept rows")
    p.add_argument("--reason", metavar="R", help="only rows dropped (or quarantined) for this reason")
    p.add_argument("-n", type=int, default=10, metavar="N", help="rows to show (default 10)")
    p.add_argument("--full", action="store_true", help="long texts and turns whole, not cut")
    p.add_argument("--no-pager", action="store_true", help="print plainly even on a terminal")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("push-hf", help="publish an output as a Hugging Face Hub dataset: Parquet shards and a "
                       "dataset card with the ledger's funnel (token: HF_TOKEN or `hf auth login`)")
    p.add_argument("out", help="a finished output directory of `thresher run`")
    p.add_argument("repo_id", metavar="ORG/NAME", help="the dataset repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", metavar="BRANCH", help="push to this branch (created if missing) instead of main")
    p.add_argument("--license", default="other", help="the card's license id (default: other, a placeholder)")
    p.set_defaults(fn=cmd_push_hf)

    p = sub.add_parser("report", help="(re)build OUT/report.html: funnel, stat histograms, samples, timings")
    p.add_argument("out", help="an output directory of a run or an analysis")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("import-dj", help="convert a Data-Juicer config (its process list, dataset_path, "
                       "export_path, text_keys, np) into a thresher recipe, with comments where thresher differs")
    p.add_argument("config", help="a Data-Juicer config (YAML)")
    p.add_argument("-o", "--output", metavar="RECIPE", help="write the recipe here (default: print it)")
    p.add_argument("--force", action="store_true", help="overwrite RECIPE if it exists")
    p.set_defaults(fn=cmd_import_dj)

    p = sub.add_parser("demo", help="write the demo corpus used by the quickstart")
    p.add_argument("out")
    p.set_defaults(fn=cmd_demo)
    return parser


def _one_line(msg: str) -> None:
    err_console.print(f"[bold red]error:[/bold red] {escape(msg)}", highlight=False, markup=True, soft_wrap=True)


def _os_error(e: OSError) -> str:
    """An OSError as the user needs it: what, where (never a traceback for a full disk or a permission)."""
    what = e.strerror or type(e).__name__
    where = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    return f"{what}: {where}" if where else f"{what} ({e})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("THRESHER_DEBUG") == "1"  # accepted anywhere on the line
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        err_console.print("interrupted; finish later with --resume")
        return 130
    except Exception as e:
        if debug:
            raise
        if isinstance(e, ThresherError):
            _one_line(str(e))
            return 2
        if isinstance(e, OSError):  # disk full, permission, read-only, a file where a directory should be
            _one_line(_os_error(e))
            return 2
        _one_line(f"internal error: {type(e).__name__}: {e} (run again with --debug for the traceback, "
                  "and please report it)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
