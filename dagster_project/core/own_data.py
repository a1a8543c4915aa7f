"""The stages of a request on the user's own data (params.yaml `sources:`), called by core/stages.py.

    unlearn stage forget_set --request req-1a2b3c     # on a root whose params.yaml declares sources

Read top to bottom, this is the pipeline where the embedded corpus is replaced by the user's files:
sources → the request's attached documents → forget-set collection → retain set (sample + hard positives)
→ cleaned training set → knowledge probes → evaluation without a retain model. Each function reads its
inputs from the artifact store (`Layout`), writes its outputs there, and returns counts, hashes and scores
only: names and text stay in the versioned datasets.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dagster_project.core.collection.collect import Collection, CollectionConfig, collect, split_passages
from dagster_project.core.collection.match import mentioned, subject_patterns
from dagster_project.core.collection.retain import RetainConfig, build_retain_set
from dagster_project.core.data.io import fingerprint, md5_file, read_json, read_jsonl, weights_md5, write_json, write_jsonl
from dagster_project.core.data.request import ForgetRequest, RequestError, document_paths
from dagster_project.core.layout import Layout, uses_sources
from dagster_project.core.sources.load import SourceFile, declared_sources, read_role, read_source, write_role

SEARCHED_ROLES = ("train", "retain")  # what a model may have learned a subject from, and what unlearning keeps
SCORES_FILE = "collection_scores.jsonl"  # beside the forget set: record ids and scores (no text), for the retain set
DOCUMENTS_CACHE_VERSION = "1"  # evaluation scores of the documents report


class CollectionError(ValueError):
    """The sources hold nothing to forget for the request; the message says what to do instead."""


def request_of(layout: Layout) -> ForgetRequest:
    return ForgetRequest.model_validate(read_json(layout.request_json))


# ------------------------------------------------------------------------------------------------ sources


def run_source(layout: Layout, params: dict[str, Any], role: str) -> dict[str, Any]:
    """One source role read, checked and normalised into assets/sources/<role>/ (empty when not declared;
    nothing written on the embedded corpus)."""
    if not uses_sources(params):
        return {"declared": 0, "records": 0, "files": 0}
    manifest = write_role(declared_sources(params).get(role, []), layout.root, role, layout.source_dir(role))
    return {"declared": manifest["declared"], "records": manifest["records"], "files": len(manifest["files"]),
            **{f"md5:{f['name']}": f["md5"] for f in manifest["files"]}}


def searched_records(layout: Layout) -> list[dict[str, Any]]:
    return [r for role in SEARCHED_ROLES for r in read_role(layout.source_dir(role))]


# ------------------------------------------------------------------------------------------------ the request


def document_records(request: ForgetRequest, requests_dir: Path, passage_chars: int) -> list[dict[str, Any]]:
    """The request's attached documents as normalised records: a .txt/.md file cut into passages, a .jsonl file
    read like a source (text, prompt/completion or messages)."""
    records = []
    for path in document_paths(request, requests_dir):
        if path.suffix.lower() == ".jsonl":
            found = read_source(SourceFile(path=str(path)), path.parent, "request")
            records += [{**r, "id": f"request:{path.stem}:{r['record']}"} for r in found]
            continue
        for number, passage in enumerate(split_passages(path.read_text(encoding="utf-8"), passage_chars), start=1):
            records.append({"id": f"request:{path.stem}:{number}", "source": "request", "file": path.name,
                            "record": str(number), "prompt": "", "completion": passage})
    return records


def write_request_documents(layout: Layout, params: dict[str, Any], request: ForgetRequest) -> int:
    config = CollectionConfig(**params.get("collection") or {})
    records = document_records(request, layout.root / params["requests_dir"], config.passage_chars)
    write_jsonl(layout.request_documents, records)
    return len(records)


def records_by_id(request: ForgetRequest, role_records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records the request names by id (`records: {train: [...]}`), each found among its role's records."""
    found = []
    for role, ids in (request.records or {}).items():
        by_id: dict[str, list[dict[str, Any]]] = {}
        for record in role_records.get(role, []):
            by_id.setdefault(record["record"], []).append(record)
        for index, record_id in enumerate(ids):
            matches = by_id.get(record_id, [])
            if len(matches) != 1:  # the id itself may be personal: its position is named instead
                problem = "no record with this id" if not matches else f"{len(matches)} records share this id"
                raise RequestError(f"request {request.id}: field 'records.{role}.{index}': {problem} in the {role} "
                                   f"source")
            found.append({**matches[0], "match": "record", "subjects": []})
    return found


def request_collection(request: ForgetRequest, role_records: dict[str, list[dict[str, Any]]],
                       documents: list[dict[str, Any]], config: CollectionConfig, encode: Any) -> Collection:
    """The request's forget set from its sources' records (role -> records), the records it names by id and its
    documents' passages: what the forget_set stage writes and `unlearn request preview` shows."""
    everyone = list(range(len(request.subject_names)))
    given = records_by_id(request, role_records) + [{**r, "match": "document", "subjects": everyone} for r in documents]
    searched = [r for role in SEARCHED_ROLES for r in role_records.get(role, [])]
    return collect(searched, request.subject_entries, config, encode, given)


def nothing_found(request: ForgetRequest, collection: Collection, documents: int) -> str | None:
    """What to do when a `given` request collected nothing about one of its subjects (None when it did)."""
    if request.forget_data != "given":
        return None  # the model's own responses are a reveal request's forget data
    report = collection.report()
    empty = [key for key, count in report["per_subject"].items() if not count]
    if (not empty or documents) and collection.records:
        return None
    return (f"request {request.id}: no record of the sources is about {', '.join(empty) or 'the request'} "
            f"({sum(report['searched'].values())} records of {', '.join(SEARCHED_ROLES)} searched, threshold "
            f"{collection.threshold}). Attach what should be forgotten as documents (data/requests/{request.id}/, "
            f"listed under `documents:`), name records by id (`records:`), or set `forget_data: reveal` to unlearn "
            f"what the model itself says about the subject.")


def run_collection(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """The forget set: every searched record about the subjects, the records named by id, the attached
    documents. A `given` request that finds nothing about one of its subjects fails with what to do."""
    from dagster_project.core.eval.plots import plot_histogram
    from dagster_project.core.reveal.scoring import load_encoder

    request = request_of(layout)
    config = CollectionConfig(**params.get("collection") or {})
    documents = read_jsonl(layout.request_documents)
    role_records = {role: read_role(layout.source_dir(role)) for role in SEARCHED_ROLES}
    collection = request_collection(request, role_records, documents, config, load_encoder()[0])
    problem = nothing_found(request, collection, len(documents))
    if problem:
        raise CollectionError(problem)
    report = collection.report()
    write_jsonl(layout.forget_set, collection.records)
    write_collection(layout, collection, report, plot_histogram)
    return {"records": len(collection.records), "searched": sum(report["searched"].values()),
            "threshold": config.threshold, "near_threshold": report["near_threshold"],
            **{f"per_source:{k}": v for k, v in report["per_source"].items()},
            **{f"per_match:{k}": v for k, v in report["per_match"].items()}, "md5": md5_file(layout.forget_set)}


def write_collection(layout: Layout, collection: Collection, report: dict[str, Any], plot_histogram: Any) -> None:
    if layout.collection_dir.exists():
        shutil.rmtree(layout.collection_dir)
    write_json(layout.collection_dir / "report.json", report)
    plot_histogram([r["score"] for r in collection.scored], collection.threshold, layout.collection_dir / "scores.png",
                   title="Collection: best score per searched record (no names, no text)")
    write_jsonl(layout.forget_set.parent / SCORES_FILE, [{"id": r["id"], "score": r["score"]} for r in collection.scored])


def collection_metrics(layout: Layout) -> dict[str, float]:
    """The collection report's counts as flat MLflow metric names (`collection/...`): no names, no text."""
    report = read_json(layout.collection_dir / "report.json")
    counts = {"records": report["records"], "near_threshold": report["near_threshold"],
              "searched": sum(report["searched"].values()), **{f"subject_{k.split('.')[1]}": v
                                                               for k, v in report["per_subject"].items()},
              **{f"source_{k}": v for k, v in report["per_source"].items()},
              **{f"match_{k}": v for k, v in report["per_match"].items()}}
    return {f"collection/{k}": float(v) for k, v in counts.items()}


def run_retain_documents(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """The retain set: hard positives and a seeded sample of the searched records about no subject."""
    from dagster_project.core.reveal.scoring import load_encoder

    request = request_of(layout)
    scores = {r["id"]: r["score"] for r in read_jsonl(layout.forget_set.parent / SCORES_FILE)}
    threshold = CollectionConfig(**params.get("collection") or {}).threshold
    retain = build_retain_set(searched_records(layout), read_jsonl(layout.forget_set), request.subject_entries, scores,
                              threshold, RetainConfig(**params.get("retain") or {}), load_encoder()[0])
    if not retain:
        raise CollectionError(f"request {request.id}: no record is left to retain (every searched record is about "
                              f"a subject or near the threshold): declare a `retain` source of text the model must keep")
    write_jsonl(layout.retain_set, retain)
    kinds = [r["kind"] for r in retain]
    return {"records": len(retain), "hard_positives": kinds.count("hard_positive"), "sample": kinds.count("sample"),
            "md5": md5_file(layout.retain_set)}


def run_cleaned_sources(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """Each train file without the forget records, in its own format (clean.py); none without a train source."""
    from dagster_project.core.sources.clean import write_cleaned

    files = declared_sources(params).get("train", [])
    if not files:
        if layout.cleaned_dir.exists():
            shutil.rmtree(layout.cleaned_dir)
        write_json(layout.cleaned_dir / "manifest.json", {"built": False, "reason": "no train source declared"})
        return {"built": False}
    removed = {r["id"] for r in read_jsonl(layout.forget_set) if r["source"] == "train"}
    entries = write_cleaned(files, layout.root, removed, layout.cleaned_dir)
    write_json(layout.cleaned_dir / "manifest.json", {"built": True, "files": entries})
    return {"built": True, "removed": sum(e["removed"] for e in entries), "kept": sum(e["records"] for e in entries),
            **{f"md5:{e['name']}": e["md5"] for e in entries}}


# ------------------------------------------------------------------------------------------------ probes


def forget_documents(layout: Layout) -> list[dict[str, Any]]:
    """The forget set as documents; for a reveal request that collected nothing, θ₀'s revealed responses (what
    the model said it knew), each as a (question, answer) record."""
    forget = read_jsonl(layout.forget_set)
    revealed = layout.revealed_dir / "revealed.jsonl"
    if forget or not revealed.exists():
        return forget
    return [{"id": r["id"], "source": "revealed", "file": "revealed.jsonl", "record": r["id"], "prompt": r["question"],
             "completion": r["answer"]} for r in read_jsonl(revealed)]


def run_document_probes(layout: Layout, params: dict[str, Any]) -> dict[str, Any]:
    """Knowledge probes of every set (probes/build.py), plus θ₀'s validated paraphrases of the forget probes."""
    from dagster_project.core.probes.build import ProbeConfig, build_probes, number_probes, paraphrase_probes

    request = request_of(layout)
    config = ProbeConfig(**params.get("probes") or {})
    forget, retain = forget_documents(layout), read_jsonl(layout.retain_set)
    utility = read_role(layout.source_dir("utility"))
    sets = {"forget": forget, "retain": [r for r in retain if r["kind"] == "sample"],
            "hard_positive": [r for r in retain if r["kind"] == "hard_positive"], "utility": utility}
    pool = searched_records(layout) + utility + read_role(layout.source_dir("nonmember")) + forget
    probes = build_probes(sets, pool, request.subject_entries, config)
    if not any(p["set"] == "forget" for p in probes):
        raise CollectionError(f"request {request.id}: no forget probe could be built from its {len(forget)} forget "
                              f"record(s): none has a name, number, code or place after a mention of a subject. "
                              f"Attach documents that state facts about the subject, or lower probes.min_context_words")
    paraphrased, asked = paraphrase_probes(probes, {r["id"]: r for r in forget}, request.subject_entries,
                                           rephraser(layout, params), config) if config.paraphrases else ([], 0)
    probes = number_probes([{k: v for k, v in p.items() if k != "id"} for p in probes + paraphrased])
    return write_probes(layout, probes, {"paraphrases_asked": asked, "paraphrases_kept": len(paraphrased)})


def write_probes(layout: Layout, probes: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    from dagster_project.core.probes.build import SETS

    if layout.probes_dir.exists():
        shutil.rmtree(layout.probes_dir)
    write_jsonl(layout.probes_dir / "probes.jsonl", probes)
    counts = {f"{s}_probes": sum(p["set"] == s for p in probes) for s in SETS}
    write_json(layout.probes_dir / "manifest.json", {"built": bool(probes), **counts, **extra})
    return {"built": bool(probes), **counts, **extra, "md5": md5_file(layout.probes_dir / "probes.jsonl")}


def rephraser(layout: Layout, params: dict[str, Any]) -> Any:
    """A model asked to reword sentences (greedy, few-shot): the base model when the target was fine-tuned here
    from one (a model fine-tuned on support notes answers like a support agent instead of rewording, and the
    base never saw the forget data), else θ₀; none without a chat template (a raw-text model does not follow
    instructions): it then returns blanks, which validation drops."""
    from dagster_project.core.probes.build import PARAPHRASE_REQUEST

    def rephrase(sentences: list[str]) -> list[str]:
        from dagster_project.core.eval.scoring import generate_texts
        from dagster_project.core.eval.standalone import load_for_eval
        from dagster_project.core.model.text import format_prompt, has_chat_template
        from dagster_project.core.model.base import base_model

        base = base_model(layout, params) if "train" in params else None
        model, tokenizer = load_for_eval(base or layout.target_model_dir)
        if not has_chat_template(tokenizer):
            return [""] * len(sentences)
        prompts = [format_prompt(PARAPHRASE_REQUEST.format(s), tokenizer) for s in sentences]
        return generate_texts(model, tokenizer, prompts, 64, params["eval"]["batch_size"])

    return rephrase


# ------------------------------------------------------------------------------------------------ evaluation


def evaluation_inputs(layout: Layout) -> dict[str, Any]:
    """What the documents report scores: probes, forget documents, non-members about no subject, subject names."""
    request = request_of(layout)
    patterns = subject_patterns(request.subject_entries)
    nonmember = [r for r in read_role(layout.source_dir("nonmember"))
                 if not mentioned(patterns, f"{r['prompt']}\n{r['completion']}")]
    return {"probes": read_jsonl(layout.probes_dir / "probes.jsonl"), "forget": forget_documents(layout),
            "nonmember": nonmember, "subjects": request.subject_names}


def document_scores(layout: Layout, params: dict[str, Any], role: str, model_dir: Path, inputs: dict[str, Any],
                    use_cache: bool = True) -> dict[str, Any]:
    """One model's documents scores, cached by (model bytes, inputs, eval params, role) like TOFU's."""
    from dagster_project.core.eval.documents import score_documents
    from dagster_project.core.eval.standalone import cached_model_scores

    key = fingerprint({"code": DOCUMENTS_CACHE_VERSION, "weights": weights_md5(model_dir), "inputs": inputs,
                       "eval": params["eval"], "role": role})
    return cached_model_scores(layout.personal_cache_dir / "scores" / f"documents-{key}.json", model_dir,
                               lambda model, tokenizer: score_documents(model, tokenizer, inputs, params["eval"],
                                                                        relearn=role == "unlearned"), use_cache)


def documents_evaluation(layout: Layout, params: dict[str, Any], model_dir: Path,
                         use_cache: bool = True) -> dict[str, Any]:
    """The documents report of `model_dir` as the unlearned model, against the request's target."""
    from dagster_project.core.eval.documents import documents_report

    inputs = evaluation_inputs(layout)
    scores = {"target": document_scores(layout, params, "target", layout.target_model_dir, inputs),
              "unlearned": document_scores(layout, params, "unlearned", model_dir, inputs, use_cache=use_cache)}
    return documents_report(inputs, scores)


def probe_scores(layout: Layout, params: dict[str, Any], role: str, model_dir: Path, probes: list[dict[str, Any]],
                 use_cache: bool = True) -> list[dict[str, Any]]:
    """One model's scores on `probes` alone (general knowledge on the embedded corpus), cached by model bytes."""
    from dagster_project.core.eval.standalone import cached_model_scores
    from dagster_project.core.probes.score import score_probes

    key = fingerprint({"code": DOCUMENTS_CACHE_VERSION, "weights": weights_md5(model_dir), "probes": probes,
                       "eval": params["eval"], "role": role})
    return cached_model_scores(layout.personal_cache_dir / "scores" / f"probes-{key}.json", model_dir,
                               lambda model, tokenizer: score_probes(model, tokenizer, probes,
                                                                     params["eval"]["batch_size"]), use_cache)
