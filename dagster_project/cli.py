"""`unlearn`: the command-line face of the pipeline (same core functions as the Dagster assets).

    unlearn status --json            registry state: models, versions, aliases, metrics, DVC md5s
    unlearn summary                  the demo's closing table (metrics, registry, DVC hashes, stage timings)
    unlearn stage target_model       run one pipeline stage against params.yaml (what dvc.yaml calls)
    unlearn eval --model models:/tofu-tiny-llama@candidate --json
                                     metrics of any model (folder, adapter, registry URI) on a forget split
    unlearn dvc-yaml [--check]       regenerate dvc.yaml from the Dagster asset graph
    unlearn methods                  list the registered unlearning methods
    unlearn run --method npo --set beta=0.2 --seeds 0 1 2
                                     try a method on the request's forget set: train from the target model,
                                     evaluate against the retain model, print mean ± std over seeds
    unlearn request new --subject "Full Name" --alias name@example.org --method npo [--forget-data reveal]
                                     write a validated request file into data/requests/ (--record, --document
                                     on a root that declares its own sources)
    unlearn request preview <id>     the records a request collects from your sources, on this terminal only
    unlearn promote tofu-tiny-llama 2 [--force --reason TEXT]
                                     alias champion -> v2 if the promotion gates pass (exit 1 if not)
    unlearn compliance               re-check the champion on every request in force (exit 1 on regression)
    unlearn audit verify models:/tofu-tiny-llama@champion
                                     re-hash every artifact from DVC, check MLflow, re-run the evaluation
    unlearn audit reproduce models:/tofu-tiny-llama/6
                                     rebuild the version from scratch with dvc repro, compare md5s and metrics
    unlearn profile init real .runs/real [--set corpus.n_people=20]
                                     a pipeline root for the real-model tier (SmolLM2); run it with
                                     UNLEARN_ROOT=.runs/real (make real)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from dagster_project.core.data.io import read_json
from dagster_project.core.layout import DEFAULT_PARAMS, Layout, load_params


def _layout(args: argparse.Namespace) -> tuple[Layout, dict]:
    """The layout of `--request` where the command has one and it is given, else of params.yaml's `request:`."""
    root = Path(args.root).resolve()
    params = load_params(root, args.params)
    request_id = getattr(args, "request", None)
    return (Layout.for_request(root, params, request_id) if request_id else Layout.from_params(root, params)), params


def cmd_stage(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from dagster_project.core.slots import hold_slot, slot_path
    from dagster_project.core.stages import STAGES, run_stage

    layout, params = _layout(args)
    slot = STAGES[args.name].slot if args.name in STAGES else None  # `dvc repro` queues on it as Dagster runs do
    with hold_slot(slot_path(layout.root, slot), f"cli-{os.getpid()}", lambda line: print(line, file=sys.stderr)) \
            if slot else nullcontext():
        result = run_stage(args.name, layout, params)
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    print(json.dumps({"stage": args.name, **scalars}, indent=2, sort_keys=True))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dagster_project.core.tracking.mlflow_registry import registry_status

    state = registry_status(Path(args.root).resolve())
    if args.json:
        print(json.dumps(state, indent=2, sort_keys=True))
        return 0
    print(f"tracking: {state['tracking_uri']}")
    if not state["models"]:
        print("no registered models yet (run `make demo`)")
    for model in state["models"]:
        print(f"\n{model['name']}  aliases: {model['aliases'] or '-'}")
        for v in model["versions"]:
            fq, mu = v["metrics"].get("forget_quality"), v["metrics"].get("model_utility")
            print(f"  v{v['version']:<3} {','.join(v['aliases']) or '-':<20} request={v['request_id']}  "
                  f"forget_quality={fq if fq is None else f'{fq:.3g}'}  model_utility={mu if mu is None else f'{mu:.3g}'}"
                  + (f"\n       INCOMPLETE: {v['incomplete']}" if v["incomplete"] else ""))
    return 0


def _stage_timings(dagster_home: str | None) -> list[tuple[str, float]]:
    """Per-step wall time of the latest `unlearn_request` run, from the Dagster instance's own records."""
    if not dagster_home:
        return []
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=RunsFilter(job_name="unlearn_request"), limit=1)
        if not runs:
            return []
        stats = instance.get_run_step_stats(runs[0].run_id)
    return [(s.step_key, (s.end_time or s.start_time) - s.start_time) for s in stats if s.start_time]


SUMMARY_ROWS = {
    "qa": ("forget_quality", "model_utility", "forget_rouge", "forget_fact_accuracy", "forget_prob",
           "forget_gibberish_rate", "mia_loss_auc", "priv_leak", "relearn_rouge_after", "retain_rouge",
           "retain_fact_accuracy", "world_rouge", "general_probe_top1"),
    "documents": ("forget_probe_top1", "probe_chance", "paraphrase_probe_top1", "forget_probe_containment",
                  "retain_probe_top1", "hard_positive_probe_top1", "utility_probe_top1", "general_probe_top1",
                  "model_utility", "forget_gibberish_rate", "forget_refusal_rate", "forget_leak_rate", "mia_loss_auc",
                  "relearn_probe_top1_after"),
}


def cmd_summary(args: argparse.Namespace) -> int:
    layout, _params = _layout(args)
    report_path, record_path = layout.eval_dir / "report.json", layout.registry_record
    if not report_path.exists() or not record_path.exists():
        print(f"no finished run for request {layout.request_id!r} (missing {report_path.name} or registry record); "
              "run `make demo` first", file=sys.stderr)
        return 1
    report, record = read_json(report_path), read_json(record_path)
    rows = SUMMARY_ROWS[report.get("kind", "qa")]
    models = [m for m in ("target", "retain", "unlearned") if m in report["models"]]
    print(f"\nRequest {layout.request_id}: " + ", ".join(f"{k} {v}" for k, v in report["counts"].items()) + " eval items")
    print(f"{'metric':<26}" + "".join(f"{m:>12}" for m in models))
    for key in rows:
        values = [report["models"][m]["metrics"].get(key) for m in models]
        if any(v is not None for v in values):
            print(f"{key:<26}" + "".join(f"{'—':>12}" if v is None else f"{v:>12.4g}" for v in values))
    print(f"\nRegistered: {record['name']} version {record['version']} alias '{record['alias']}' "
          f"(run {record['run_id'][:12]}, {record['tracking_uri']})")
    from dagster_project.core.tracking.mlflow_registry import resolve_version

    tags = resolve_version(layout.root, f"models:/{record['name']}/{record['version']}").tags
    promotion = tags.get("promotion", "not attempted")
    failed = tags.get("promotion.failed_gates", "none")
    print(f"Promotion to champion: {promotion}" + (f" (failed gates: {failed}; thresholds in params.yaml `promotion:`, "
          f"`unlearn promote {record['name']} {record['version']} --force --reason ...` overrides)" if failed != "none" else ""))
    print(f"Audit: manifest sha256 {record['audit_manifest_sha256'][:16]}...; "
          f"`unlearn audit verify models:/{record['name']}/{record['version']}` re-hashes and re-runs it")
    print("DVC md5:")
    for stage, md5 in record["dvc_md5"].items():
        print(f"  {stage:<20} {md5}")
    timings = _stage_timings(os.environ.get("DAGSTER_HOME"))
    if timings:
        print("Stage timings (latest Dagster run):")
        for step, seconds in timings:
            print(f"  {step:<34} {seconds:7.1f} s")
        print(f"  {'total':<34} {sum(s for _, s in timings):7.1f} s")
    print(f"Plot: {layout.rel(layout.eval_dir / 'metrics.png')}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dagster_project.core.eval.standalone import evaluate_models

    layout, params = _layout(args)
    specs = {"model": args.model, **({"reference": args.reference} if args.reference else {})}
    report = evaluate_models(layout.root, layout.corpus_dir, args.split, specs, params["eval"],
                             reference="reference" if args.reference else None)
    metrics = report["models"]["model"]["metrics"]
    if args.json:
        print(json.dumps({"model": args.model, "split": args.split, "counts": report["counts"], "metrics": metrics},
                         indent=2, sort_keys=True))
    else:
        for key in sorted(metrics):
            print(f"{key:<32} {metrics[key]:.4g}")
    return 0


def cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from dagster_project.dvc_yaml import write_or_check

    layout, params = _layout(args)
    fresh = write_or_check(layout.root, params, check=args.check)
    if args.check and not fresh:
        print("dvc.yaml is stale: run `unlearn dvc-yaml` and commit the result", file=sys.stderr)
        return 1
    print("dvc.yaml is up to date" if args.check else f"wrote {layout.root / 'dvc.yaml'}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    import dataclasses

    from dagster_project.core.methods.registry import available_methods, get_method

    for name in available_methods():
        spec = get_method(name)
        summary = (spec.method_cls.__doc__ or "").strip().split("\n")[0]
        print(f"{name}: {summary}")
        for f in dataclasses.fields(spec.config_cls):
            print(f"  {f.name:<15} default {f.default!r:<10} {f.metadata.get('help', '')}")
    return 0


class SubjectAction(argparse.Action):
    """--subject NAME starts a subject; --alias ALIAS adds to the last one: [(name, [aliases]), ...]."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:  # noqa: ANN001 (argparse's signature)
        subjects = list(getattr(namespace, "subject", None) or [])  # a copy: argparse shares the default list
        if option_string == "--subject":
            subjects.append((value, []))
        elif not subjects:
            parser.error("--alias names another way to write the --subject before it: give --subject first")
        else:
            subjects[-1][1].append(value)
        namespace.subject = subjects


def parse_overrides(pairs: list[str]) -> dict:
    """`--set key=value` pairs: 20 -> int, 0.1 and 1e-4 -> float, true/false -> bool, anything else a string.
    Errors name the pair by position, never by what it holds (a value may be a subject's name)."""

    def scalar(text: str) -> object:
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(text.lower(), text)

    out = {}
    for position, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set #{position}: expected KEY=VALUE, e.g. --set lr=1e-4")
        out[key] = scalar(value)
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from dagster_project.core.eval.compare import markdown_table, run_methods, summarise, table_columns

    layout, params = _layout(args)
    overrides = parse_overrides(args.set)
    defaults = dict(params["unlearn"].get(args.method) or {})
    keep = Path(args.out).resolve() if args.out else None
    from dagster_project.core.data.request import WagleSpec

    if args.wagle_random and args.wagle_ratio is None:
        raise ValueError("--wagle-random needs --wagle-ratio (the fraction of weights the random mask keeps)")
    # validated like a request's `wagle` block: 0 < ratio <= 1
    wagle = None if args.wagle_ratio is None else WagleSpec(ratio=args.wagle_ratio, random=args.wagle_random).model_dump()
    references, runs = run_methods(layout, params, [args.method], args.seeds, args.mode,
                                   hyperparameters=lambda _m: {**defaults, **overrides}, keep_dir=keep, wagle=wagle,
                                   use_cache=not args.no_cache)
    if args.json:
        stats = summarise(runs)[args.method]
        print(json.dumps({"method": args.method, "mode": args.mode, "seeds": args.seeds, "hyperparameters": overrides,
                          "wagle": wagle,
                          "metrics": {k: {"mean": m, "std": s} for k, (m, s) in stats.items()}}, indent=2, sort_keys=True))
    else:
        print(markdown_table(references, runs, table_columns(params)))
    if keep:
        print(f"adapters kept in {keep}", file=sys.stderr)
    return 0


def cmd_request_new(args: argparse.Namespace) -> int:
    from dagster_project.core.data.io import fingerprint
    from dagster_project.core.data.request import build_request, check_request, write_request

    root = Path(args.root).resolve()
    params = load_params(root, args.params)
    hyperparameters = parse_overrides(args.set)
    subjects = [{"name": name, "aliases": aliases} if aliases else name for name, aliases in args.subject or []]
    records: dict[str, list[str]] = {}
    for given in args.record:
        role, sep, record_id = given.partition(":")
        if not sep or not record_id:
            raise ValueError(f"--record: expected ROLE:ID, e.g. train:T-1042 (roles: train, retain); got {len(given)} "
                             f"characters without one")
        records.setdefault(role, []).append(record_id)
    documents = [Path(d) for d in args.document]
    # the id names the file and the partition; derived from a hash, it never spells out a subject's name
    request_id = args.id or "req-" + fingerprint([subjects, args.split, records, [d.name for d in documents],
                                                   args.method, args.forget_data])[:10]
    request = build_request(id=request_id, description=args.description, subjects=subjects or None, split=args.split,
                            records=records or None, documents=[d.name for d in documents] or None,
                            method=args.method, mode=args.mode, hyperparameters=hyperparameters,
                            wagle={"ratio": args.wagle_ratio} if args.wagle_ratio is not None else None,
                            forget_data=args.forget_data)
    for index, document in enumerate(documents):  # attached beside the request file, where the pipeline reads them
        if not document.is_file():
            raise FileNotFoundError(f"--document #{index + 1}: no such file")
    if (root / params["requests_dir"] / f"{request.id}.yaml").exists() and not args.force:
        raise FileExistsError(f"request {request.id}: it exists already (pass --force to replace it)")
    folder = request.documents_dir(root / params["requests_dir"])
    created = documents and not folder.exists()
    copied = []
    try:
        for document in documents:
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / document.name).exists():
                copied.append(folder / document.name)
            shutil.copyfile(document, folder / document.name)
        # as sync, the sensor and the first stage check it (documents attached): nothing fails at training time
        check_request(request, params, Layout.from_params(root, params).corpus_dir, root / params["requests_dir"])
        path = write_request(request, root / params["requests_dir"], overwrite=args.force)
    except Exception:
        for document in copied:  # a refused request leaves no attachment behind
            document.unlink(missing_ok=True)
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    print(f"wrote {path.relative_to(root)} (id {request.id}); point params.yaml `request:` at it to run it")
    return 0


def cmd_request_preview(args: argparse.Namespace) -> int:
    """What a request would collect from the declared sources, shown to a reviewer on this terminal only: nothing is
    logged, written or sent anywhere. Exit 0 when it collects something about every subject, 3 when not."""
    from dagster_project.core.collection.collect import CollectionConfig, record_text
    from dagster_project.core.data.request import load_request
    from dagster_project.core.layout import uses_sources
    from dagster_project.core.own_data import SEARCHED_ROLES, document_records, nothing_found, request_collection
    from dagster_project.core.reveal.scoring import load_encoder
    from dagster_project.core.sources.load import declared_sources, read_source

    root = Path(args.root).resolve()
    params = load_params(root, args.params)
    if not uses_sources(params):
        raise ValueError("request preview shows what a request collects from your own sources, and this root's "
                         "params.yaml declares none (`sources:`); on the embedded corpus a request forgets its "
                         "subjects' QA records")
    layout = Layout.for_request(root, params, args.request_id)
    requests_dir = root / params["requests_dir"]
    request = load_request(root / layout.request_file, requests_dir)
    config = CollectionConfig(**params.get("collection") or {})
    sources = declared_sources(params)
    role_records = {role: [r for spec in sources.get(role, []) for r in read_source(spec, root, role)]
                    for role in SEARCHED_ROLES}
    documents = document_records(request, requests_dir, config.passage_chars)
    collection = request_collection(request, role_records, documents, config, load_encoder()[0])
    below = [r for r in collection.scored if r["id"] not in {c["id"] for c in collection.records}][:args.below]
    problem = nothing_found(request, collection, len(documents))
    if args.json:
        keep = ("id", "source", "file", "record", "score", "match", "subjects", "prompt", "completion")
        print(json.dumps({"request": request.id, "threshold": config.threshold, "report": collection.report(),
                          "collected": [{k: r.get(k) for k in keep} for r in collection.records],
                          "below_threshold": [{k: r.get(k) for k in keep} for r in below], "problem": problem},
                         indent=2, ensure_ascii=False))
        return 3 if problem else 0
    width = shutil.get_terminal_size((120, 20)).columns

    def line(record: dict) -> str:
        where = f"{record['source']} {record['file']} {record['record']}"
        text = " ".join(record_text(record).split())
        head = f"  {record['score']:.2f}  {record['match']:<9} {where[:40]:<40} "
        return head + text[:max(20, width - len(head))]

    searched = sum(collection.report()["searched"].values())
    print(f"Request {request.id}: {len(collection.records)} record(s) to forget of {searched} searched "
          f"(threshold {config.threshold}), {len(documents)} document passage(s).\n"
          f"Personal data below: shown on this terminal only, written nowhere.")
    print("  score match     record" + " " * 35 + "text")
    print("\n".join(line(r) for r in collection.records) or "  (none)")
    if below:
        print(f"\nClosest below the threshold, not collected (about the subject? name it under `records:`, "
              f"e.g. `records: {{{below[0]['source']}: [<id>]}}`):")
        print("\n".join(line(r) for r in below))
    if problem:
        print(f"\n{problem}", file=sys.stderr)
    return 3 if problem else 0


def cmd_request_purge(args: argparse.Namespace) -> int:
    """Purge a request's personal data (core/retention.py); a dry run unless --yes."""
    from dagster_project.core.retention import purge

    root = Path(args.root).resolve()
    layout = Layout.for_request(root, load_params(root, args.params), args.request_id)
    report = purge(layout, dry_run=not args.yes)
    if args.json:
        print(json.dumps({"deleted": args.yes, **report.to_dict()}, indent=2))
        return 0
    verb = "removed" if args.yes else "would remove"
    print(f"request {report.request_id}: {verb} {len(report.files)} file(s), {report.cache_objects} DVC cache "
          f"object(s)" + (f", {report.remote_objects} remote object(s), {report.personal_cache_files} cached "
                          f"file(s)" if args.yes else ""))
    for path, md5 in sorted(report.files.items()):
        print(f"  {path}  md5 {md5}")
    print("kept: " + (", ".join(report.kept) or "nothing") + (
        f"\nthe md5s are in assets/registry/{report.request_id}-purged.json" if args.yes else
        "\nrun again with --yes to delete"))
    return 0


def cmd_requests_sync(args: argparse.Namespace) -> int:
    """What the sensor does, once and without launching runs: add a Dagster partition per valid request file."""
    from dagster import DagsterInstance

    from dagster_project.core.data.request import scan_requests
    from dagster_project.dvc_yaml import write_or_check

    layout, params = _layout(args)
    valid, invalid = scan_requests(layout.root / params["requests_dir"], params, layout.corpus_dir)
    for name, error in invalid.items():
        print(f"skipped {name}: {error}", file=sys.stderr)
    with DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions("requests"))
        new = [request_id for request_id in valid if request_id not in known]
        instance.add_dynamic_partitions("requests", new)
    write_or_check(layout.root, params, check=False)
    print(f"requests: {len(valid)} valid ({len(new)} new partition(s)), {len(invalid)} invalid; "
          f"params.yaml's request: {layout.request_id}")
    return 1 if invalid else 0


def cmd_request_id(args: argparse.Namespace) -> int:
    print(_layout(args)[0].request_id)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from dagster_project.core.audit.manifest import gates_table
    from dagster_project.core.audit.promotion import promote

    root = Path(args.root).resolve()
    result = promote(root, load_params(root, args.params), args.name, args.version, force=args.force, reason=args.reason or "")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(gates_table(result.gates))
        outcome = ("forced past failed gates (reason recorded)" if result.forced else "gates passed") if result.promoted \
            else f"not promoted: {len(result.failed)} gate(s) failed ({', '.join(g.gate for g in result.failed)})"
        print(f"\nmodels:/{result.name}/{result.version} (request {result.request_id}): {outcome}"
              + (f"; alias champion -> v{result.version}" if result.promoted else ""))
    return 0 if result.promoted else 1


def cmd_compliance(args: argparse.Namespace) -> int:
    from dagster_project.core.audit.promotion import run_compliance

    root = Path(args.root).resolve()
    params = load_params(root, args.params)
    result = run_compliance(root, params, args.name or params["registry"]["model_name"])
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        for request_id, regressions in sorted(result.requests.items()):
            print(f"  [{'FAIL' if regressions else 'ok'}] {request_id}" + (f": {'; '.join(regressions)}" if regressions else ""))
        if not result.version:
            print(f"{result.name} has no champion yet: nothing in force to check")
        else:
            print(f"compliance of models:/{result.name}/{result.version} (champion): "
                  f"{'passed' if result.passed else 'FAILED'} ({len(result.requests)} request(s) in force; "
                  f"MLflow run {result.run_id})")
    return 0 if result.passed else 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from dagster_project.core.audit.manifest import verify

    return _print_report(verify(Path(args.root).resolve(), args.uri, rerun=not args.no_rerun), args.json)


def _print_report(report, as_json: bool) -> int:
    """An audit report as lines (or JSON); the exit code: 0 when every check passed."""
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.render())
    return 0 if report.passed else 1


def _with_json(command: argparse.ArgumentParser, func) -> None:
    """The command runs `func` and takes --json, as every reporting command does."""
    command.add_argument("--json", action="store_true", help="print machine-readable JSON")
    command.set_defaults(func=func)


def cmd_audit_reproduce(args: argparse.Namespace) -> int:
    from dagster_project.core.audit.reproduce import reproduce
    from dagster_project.dvc_yaml import write_or_check

    report = reproduce(Path(args.root).resolve(), args.uri, lambda root, params: write_or_check(root, params, check=False))
    return _print_report(report, args.json)


MAKE_TARGETS = {"real": ", or `make real`", "support-tickets": ", or `make example-tickets`",
                "pretrained-knowledge": ", or `make example-knowledge`"}


def cmd_profile_init(args: argparse.Namespace) -> int:
    from dagster_project.core.profiles import init_profile

    root = Path(args.dir or f".runs/{args.name}").resolve()
    init_profile(args.name, root, parse_overrides(args.set), force=args.force)
    params = load_params(root)
    print(f"profile {args.name} in {root}: request {params['request']}, model {params['model']}\n"
          f"run it: `make ui ROOT={root}`{MAKE_TARGETS.get(args.name, '')}, or from a shell: "
          f"export UNLEARN_ROOT={root} DAGSTER_HOME={root}/.dagster_home; unlearn request sync; dagster job execute "
          f"-m dagster_project.definitions -j unlearn_request --tags "
          f"'{{\"dagster/partition\": \"{Path(params['request']).stem}\"}}'")
    return 0


def cmd_profile_list(args: argparse.Namespace) -> int:
    from dagster_project.core.profiles import available_profiles, profile_params

    for name in available_profiles():
        params = profile_params(name)
        print(f"{name}: model {params['model']}, request {params['request']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unlearn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.environ.get("UNLEARN_ROOT", "."), help="repo root (artifact store, DVC, MLflow)")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file relative to the root (default params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage", help="run one pipeline stage (as dvc.yaml does)")
    from dagster_project.core.stages import STAGES

    stage.add_argument("name", choices=list(STAGES), help="stage (= Dagster asset) name")
    stage.add_argument("--request", help="request id (= Dagster partition; default: params.yaml `request:`)")
    stage.set_defaults(func=cmd_stage)
    status = sub.add_parser("status", help="registered models, versions, aliases, metrics and DVC md5s")
    _with_json(status, cmd_status)
    sub.add_parser("summary", help="closing table of the latest run for the request in params.yaml").set_defaults(func=cmd_summary)
    evaluate = sub.add_parser("eval", help="evaluate any model (folder, adapter or models:/name@alias) on a split")
    evaluate.add_argument("--model", required=True, help="HF model folder, peft adapter folder, or models:/<name>@<alias>")
    evaluate.add_argument("--reference", help="retain model for forget quality and PrivLeak (omit: retain-free metrics)")
    evaluate.add_argument("--split", default="forget10", help="forget split of the corpus (forget01/05/10)")
    _with_json(evaluate, cmd_eval)
    dvc_yaml = sub.add_parser("dvc-yaml", help="generate dvc.yaml from the Dagster asset graph")
    dvc_yaml.add_argument("--check", action="store_true", help="only check that dvc.yaml is up to date")
    dvc_yaml.set_defaults(func=cmd_dvc_yaml)
    sub.add_parser("methods", help="list unlearning methods and their hyper-parameters").set_defaults(func=cmd_methods)
    run = sub.add_parser("run", help="try a method on the request's forget set (after `make demo`): train, evaluate, "
                                     "print mean ± std over seeds; nothing is registered")
    run.add_argument("--method", required=True, help="a registered method (`unlearn methods`)")
    run.add_argument("--mode", default="lora", choices=("lora", "full"))
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="hyper-parameter override, repeatable (defaults: params.yaml unlearn.<method>)")
    run.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed (default: 0)")
    run.add_argument("--wagle-ratio", type=float, help="WAGLE: train only this fraction of weights, chosen by weight "
                     "attribution (full mode: a weight mask; lora mode: the modules holding that share of attribution)")
    run.add_argument("--wagle-random", action="store_true", help="with --wagle-ratio: a random mask of the same ratio")
    run.add_argument("--out", help="keep each adapter/model in OUT/<method>-seed<seed> (default: discarded)")
    run.add_argument("--no-cache", action="store_true", help="retrain even when .cache/method-runs/ holds this run "
                     "(same code, model, data and hyper-parameters)")
    _with_json(run, cmd_run)
    request = sub.add_parser("request", help="forget request files").add_subparsers(dest="request_command", required=True)
    new = request.add_parser("new", help="write a validated request file into the requests directory (data/requests/)")
    new.add_argument("--subject", action=SubjectAction, default=[], help="a person to forget, repeatable (or --split)")
    new.add_argument("--alias", action=SubjectAction, help="another name, e-mail address or id of the --subject "
                     "before it, repeatable")
    new.add_argument("--record", action="append", default=[], metavar="ROLE:ID",
                     help="a record to forget by its id in a declared source, e.g. train:T-1042 (repeatable)")
    new.add_argument("--document", action="append", default=[], metavar="PATH",
                     help="a document to forget (.txt, .md, .jsonl), copied beside the request (repeatable)")
    new.add_argument("--split", choices=("forget01", "forget05", "forget10"), help="a forget split of the corpus")
    new.add_argument("--method", default="graddiff", help="a registered method (`unlearn methods`; default graddiff)")
    new.add_argument("--mode", default="lora", choices=("lora", "full"))
    new.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="hyper-parameter, repeatable")
    new.add_argument("--forget-data", default="given", choices=("given", "reveal"),
                     help="reveal: no forget documents, the model reveals what it knows (Reveal-and-Release)")
    new.add_argument("--wagle-ratio", type=float, help="WAGLE: the fraction of weights kept trainable")
    new.add_argument("--id", help="request id = file name (default: req-<hash>, never the subject's name)")
    new.add_argument("--description", help="free text, e.g. the ticket number")
    new.add_argument("--force", action="store_true", help="replace an existing file of the same id")
    new.set_defaults(func=cmd_request_new)
    request.add_parser("sync", help="add a Dagster `requests` partition for every valid request file (what the sensor "
                       "does, without launching runs); exit 1 if any file is invalid").set_defaults(func=cmd_requests_sync)
    request.add_parser("id", help="print the id of params.yaml's request (the demo's partition key)"
                       ).set_defaults(func=cmd_request_id)
    preview = request.add_parser("preview", help="show a reviewer, on this terminal only, the records a request "
                                 "collects from the declared sources and the closest ones below the threshold; "
                                 "writes nothing; exit 3 when a subject has no record")
    preview.add_argument("request_id", help="the request id (its file name in data/requests/)")
    preview.add_argument("--below", type=int, default=5, help="records below the threshold to show (default 5)")
    _with_json(preview, cmd_request_preview)
    purge = request.add_parser("purge", help="remove every plaintext copy of a request's data (request file, "
                               "documents, forget/retain sets, generated data, caches, their DVC cache and remote "
                               "objects); keeps the adapter, numbers and hashes. Lists only, unless --yes")
    purge.add_argument("request_id", help="the request id (its file name in data/requests/)")
    purge.add_argument("--yes", action="store_true", help="delete (without it: list what would be deleted)")
    _with_json(purge, cmd_request_purge)
    promote = sub.add_parser("promote", help="move alias champion to a version if the promotion gates pass "
                             "(params.yaml `promotion:`); exit 1 when gated out")
    promote.add_argument("name", help="registered model name (params.yaml registry.model_name)")
    promote.add_argument("version", help="model version number (`unlearn status`)")
    promote.add_argument("--force", action="store_true", help="promote despite failed gates (needs --reason)")
    promote.add_argument("--reason", help="why a forced promotion is justified; kept as tag promotion.reason")
    _with_json(promote, cmd_promote)
    compliance = sub.add_parser("compliance", help="re-evaluate the champion on every request in force; exit 1 on a "
                                "regression (what the daily Dagster schedule runs)")
    compliance.add_argument("--name", help="registered model (default: params.yaml registry.model_name)")
    _with_json(compliance, cmd_compliance)
    audit = sub.add_parser("audit", help="audit registered versions").add_subparsers(dest="audit_command", required=True)
    pinned = ("Re-runs happen in child processes pinned to the version's compute environment (ATEN_CPU_CAPABILITY, "
              "OMP_NUM_THREADS, UNLEARN_CPU_BF16, and on a GPU UNLEARN_CUDA_DETERMINISTIC, unless you set them); a "
              "line says what still differs.")
    verify_help = ("re-fetch every artifact of a version from DVC, re-hash it, check the manifest against MLflow and "
                   "re-run the evaluation; exit 0 = verified")
    verify = audit.add_parser("verify", help=verify_help, description=f"Verify: {verify_help}. {pinned}")
    verify.add_argument("uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    verify.add_argument("--no-rerun", action="store_true", help="hashes and tags only, skip re-running the evaluation")
    _with_json(verify, cmd_audit_verify)
    reproduce_help = ("re-create a version from scratch in a temporary store with `dvc repro` (from its manifest's "
                      "params and request) and compare every md5 and metric")
    reproduce = audit.add_parser("reproduce", help=reproduce_help,
                                 description=f"Reproduce: {reproduce_help}. {pinned}")
    reproduce.add_argument("uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    _with_json(reproduce, cmd_audit_reproduce)
    profile = sub.add_parser("profile", help="pipeline roots for other tiers (the real model)"
                             ).add_subparsers(dest="profile_command", required=True)
    init = profile.add_parser("init", help="write a profile's params.yaml and request into a new root with its own "
                              "DVC repo, then point UNLEARN_ROOT (or --root) at it")
    init.add_argument("name", help="profile name (`unlearn profile list`)")
    init.add_argument("dir", nargs="?", help="the new root (default .runs/<name>)")
    init.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override a setting, repeatable, e.g. --set corpus.n_people=20 --set train.epochs=3")
    init.add_argument("--force", action="store_true", help="overwrite an existing params.yaml with other settings")
    init.set_defaults(func=cmd_profile_init)
    profile.add_parser("list", help="the profiles this package ships").set_defaults(func=cmd_profile_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as error:
        print(f"unlearn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
