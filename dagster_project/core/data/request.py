"""Forget requests: a small JSON or YAML file under the requests directory (``data/requests/``).

Example (YAML)::

    id: demo-forget10
    description: "Right-to-be-forgotten request #42"
    subjects:                           # or: split: forget10 (the embedded corpus's people)
      - Velmora Quintrell
      - {name: Jon Brandt, aliases: [J. Brandt, jon.brandt@example.org, CUS-40217]}
    records: {train: [T-1042]}          # ids of records in a declared source (params.yaml `sources:`)
    documents: [letter.txt]             # files attached in data/requests/<id>/
    method: graddiff
    mode: lora                          # lora | full
    hyperparameters: {steps: 100, lr: 1e-4}
    forget_data: given                  # given (the records about the subjects) | reveal (the model's own)

Subject names are personal data: this module never logs them, and its error messages name the
offending *field* (``subjects.2``) and the problem, never the value that was written there.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import traceback
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from dagster_project.core.collection.match import Subject
from dagster_project.core.data.schema import FORGET_SPLITS

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_SUFFIXES: tuple[str, ...] = (".json", ".yaml", ".yml")
DEFAULT_REQUESTS_DIR = Path("data/requests")

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
METHOD_PATTERN = r"^[a-z0-9_]+$"
HYPERPARAMETER_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_SUBJECTS = 200
MAX_SUBJECT_CHARS = 100
MAX_ALIASES = 20
MAX_RECORD_IDS = 10_000
MAX_DOCUMENTS = 50
MAX_DOCUMENT_BYTES = 1024 * 1024
DOCUMENT_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".jsonl")
DOCUMENT_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,127}$"
MAX_DESCRIPTION_CHARS = 500
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_STR_CHARS = 1000
# Bounds on the parsed shape, checked before anything builds Python objects from the text: the deepest valid
# request is subjects.N.aliases.M (depth 4); parsers recurse per level (a 5,000-deep file is a RecursionError),
# YAML aliases expand exponentially ("billion laughs"), and int() refuses more than 4,300 digits.
MAX_NESTING = 8
MAX_NODES = 20_000
MAX_NUMBER_CHARS = 40

# methods whose forget term is built from the embedded corpus's questions and people
QA_ONLY_METHODS = ("snap", "idksft", "idkdpo")

ForgetSplit = Literal["forget01", "forget05", "forget10"]
assert set(ForgetSplit.__args__) == set(FORGET_SPLITS), "ForgetSplit must list schema.FORGET_SPLITS"  # type: ignore[attr-defined]


class RequestError(ValueError):
    """A forget request is unreadable or invalid. The message names the field and the problem, never a value
    (nor a key the author wrote, which may be a name): what it says can go to logs and the Dagster UI."""


def normalise_name(name: str) -> str:
    """Case- and whitespace-insensitive key for person names (shared with ``datasets``)."""
    return " ".join(name.split()).casefold()


def _check_hyperparameter(value: Any) -> Any:
    # bool is a subclass of int: accept it as itself. Anything else (list, dict, None) is refused
    # with one message instead of pydantic's one-error-per-union-member.
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("expected a finite number, got nan/inf")
        return value
    if isinstance(value, str):
        if len(value) > MAX_HYPERPARAMETER_STR_CHARS:
            raise ValueError(f"expected a string of at most {MAX_HYPERPARAMETER_STR_CHARS} characters")
        return value
    raise ValueError(f"expected int, float, bool or str, got {_type_name(value)}")


HyperparameterValue = Annotated[int | float | bool | str, PlainValidator(_check_hyperparameter)]
HyperparameterKey = Annotated[str, StringConstraints(pattern=HYPERPARAMETER_KEY_PATTERN)]


class NamedSubject(BaseModel):
    """A subject with the other ways the data may name them: a nickname, an e-mail address, a customer id."""

    model_config = ConfigDict(frozen=True)

    name: str
    aliases: tuple[str, ...] = ()


def _subject_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected text, got {_type_name(value)}")
    if not value.strip() or len(value.strip()) > MAX_SUBJECT_CHARS:
        raise ValueError(f"{what}: expected 1 to {MAX_SUBJECT_CHARS} characters")
    return value.strip()


def _check_subject(value: Any) -> str | NamedSubject:
    """A name, or {name, aliases}. Hand-checked (not a pydantic union) so that an error sits at `subjects.N`
    with one message, and names no value."""
    if isinstance(value, str):
        return _subject_text(value, "the name")
    if not isinstance(value, dict):
        raise ValueError(f"expected a name or {{name, aliases}}, got {_type_name(value)}")
    if set(value) - {"name", "aliases"}:
        raise ValueError(f"{len(set(value) - {'name', 'aliases'})} unknown key(s); a subject has name and aliases")
    aliases = value.get("aliases", [])
    if not isinstance(aliases, list) or len(aliases) > MAX_ALIASES:
        raise ValueError(f"aliases: expected a list of at most {MAX_ALIASES} names")
    return NamedSubject(name=_subject_text(value.get("name"), "name"),
                        aliases=tuple(dict.fromkeys(_subject_text(a, f"aliases.{i}") for i, a in enumerate(aliases))))


def _subject_json(subject: str | NamedSubject) -> str | dict[str, Any]:
    return subject if isinstance(subject, str) else {"name": subject.name, "aliases": list(subject.aliases)}


# the serializer too: pydantic's own would check the value against the union again and warn
SubjectEntry = Annotated[str | NamedSubject, PlainValidator(_check_subject), PlainSerializer(_subject_json)]
RecordId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
DocumentName = Annotated[str, StringConstraints(pattern=DOCUMENT_NAME_PATTERN)]


class WagleSpec(BaseModel):
    """WAGLE weight attribution (arXiv 2410.17509) on top of the request's method: which weights may change."""

    model_config = ConfigDict(extra="forbid")

    ratio: Annotated[float, Field(gt=0.0, le=1.0)]  # fraction of weights kept trainable (paper: 0.8-0.99, TOFU 0.95)
    mu: Annotated[float, Field(gt=0.0)] = 1e-6  # the diagonal-Hessian constant of the score
    random: bool = False  # a random mask of the same ratio instead: the baseline WAGLE must beat


class ForgetRequest(BaseModel):
    """One validated forget request: a corpus ``split``, or any of ``subjects`` / ``records`` / ``documents``."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(pattern=ID_PATTERN)]
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    subjects: Annotated[list[SubjectEntry], Field(min_length=1, max_length=MAX_SUBJECTS)] | None = None
    split: ForgetSplit | None = None
    # ids of records in the declared sources, by role: "forget these records"
    records: dict[Literal["train", "retain"], Annotated[list[RecordId], Field(min_length=1)]] | None = None
    # files attached in <requests_dir>/<id>/: "forget these documents"
    documents: Annotated[list[DocumentName], Field(min_length=1, max_length=MAX_DOCUMENTS)] | None = None
    method: Annotated[str, StringConstraints(pattern=METHOD_PATTERN, max_length=64)]
    mode: Literal["lora", "full"] = "lora"
    hyperparameters: Annotated[dict[HyperparameterKey, HyperparameterValue], Field(max_length=MAX_HYPERPARAMETERS)] = (
        Field(default_factory=dict)
    )
    wagle: WagleSpec | None = None
    # "reveal": no forget documents; the model reveals what it knows about the subjects and Reveal-and-Release
    # unlearns that (arXiv 2509.14624); the subjects' corpus records serve only as the evaluation's ground truth
    forget_data: Literal["given", "reveal"] = "given"

    @field_validator("subjects")
    @classmethod
    def _subjects_unique(cls, subjects: list[str | NamedSubject] | None) -> list[str | NamedSubject] | None:
        if subjects is None:
            return None
        first_seen: dict[str, int] = {}
        for index, subject in enumerate(subjects):
            key = normalise_name(subject if isinstance(subject, str) else subject.name)
            if key in first_seen:
                # The location is baked into the message: a field validator's errors sit at 'subjects'.
                raise ValueError(f"subjects.{index} duplicates subjects.{first_seen[key]} (names compare case- and space-insensitively)")
            first_seen[key] = index
        return subjects

    @field_validator("records")
    @classmethod
    def _records_bounded(cls, records: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if records is not None and sum(len(ids) for ids in records.values()) > MAX_RECORD_IDS:
            raise ValueError(f"at most {MAX_RECORD_IDS} record ids in all")
        return records

    @field_validator("documents")
    @classmethod
    def _documents_named(cls, documents: list[str] | None) -> list[str] | None:
        for index, name in enumerate(documents or []):
            if Path(name).suffix.lower() not in DOCUMENT_SUFFIXES:
                raise ValueError(f"documents.{index}: expected a {', '.join(DOCUMENT_SUFFIXES)} file")
            if name in documents[:index]:
                raise ValueError(f"documents.{index}: listed twice")
        return documents

    @model_validator(mode="after")
    def _exactly_one_target(self) -> "ForgetRequest":
        given = [key for key in ("subjects", "records", "documents") if getattr(self, key) is not None]
        if self.split is not None and given:
            raise ValueError(f"exactly one of 'subjects' or 'split' is required, got both ('split' names the corpus's "
                             f"people and cannot be combined with {', '.join(repr(k) for k in given)})")
        if self.split is None and not given:
            raise ValueError("exactly one of 'subjects' or 'split' is required, got neither (or give 'records' or "
                             "'documents' of the declared sources)")
        if self.forget_data == "reveal" and (self.mode != "lora" or self.wagle is not None):
            raise ValueError("forget_data 'reveal' trains LoRA modules: it needs mode 'lora' and no 'wagle' block")
        if self.forget_data == "reveal" and self.subjects is None and self.split is None:
            raise ValueError("forget_data 'reveal' makes the model reveal what it knows about named subjects: it "
                             "needs 'subjects' (or 'split')")
        return self

    @property
    def subject_names(self) -> list[str]:
        """The subjects' names, in request order (aliases aside)."""
        return [s if isinstance(s, str) else s.name for s in self.subjects or []]

    @property
    def subject_entries(self) -> list[Subject]:
        """The subjects with their aliases, as collection/match.py matches them."""
        return [Subject(s) if isinstance(s, str) else Subject(s.name, s.aliases) for s in self.subjects or []]

    def documents_dir(self, requests_dir: Path) -> Path:
        """Where the request's attached documents live: <requests_dir>/<id>/."""
        return Path(requests_dir) / self.id


def request_to_dict(req: ForgetRequest) -> dict[str, Any]:
    """A stable, JSON-able dict of the request (fixed key order, hyperparameters sorted)."""
    return {
        "id": req.id,
        "description": req.description,
        "subjects": [_subject_json(s) for s in req.subjects] if req.subjects is not None else None,
        "split": req.split,
        "method": req.method,
        "mode": req.mode,
        "hyperparameters": {key: req.hyperparameters[key] for key in sorted(req.hyperparameters)},
        "wagle": req.wagle.model_dump() if req.wagle else None,
        "forget_data": req.forget_data,
        # only when given: a request of the embedded corpus normalises to the same bytes as before these existed
        **({"records": {role: list(ids) for role, ids in sorted(req.records.items())}} if req.records else {}),
        **({"documents": list(req.documents)} if req.documents else {}),
    }


def unlearning_hyperparameters(request: ForgetRequest, params: dict[str, Any]) -> dict[str, Any]:
    """params.yaml's per-method defaults, overridden by the request's own hyper-parameters; for a
    `forget_data: reveal` request, the release loop's defaults (params.yaml `release:`)."""
    defaults = params.get("release") if request.forget_data == "reveal" else params["unlearn"].get(request.method)
    return {**(defaults or {}), **request.hyperparameters}


def hyperparameter_names() -> frozenset[str]:
    """Every hyper-parameter some method (or the release loop) defines."""
    import dataclasses

    from dagster_project.core.methods.registry import available_methods, get_method
    from dagster_project.core.reveal.release import ReleaseConfig

    configs = [get_method(name).config_cls for name in available_methods()] + [ReleaseConfig]
    return frozenset(f.name for config in configs for f in dataclasses.fields(config))


def check_request(request: ForgetRequest, params: dict[str, Any], corpus_dir: Path | None = None,
                  requests_dir: Path | None = None) -> None:
    """Everything about a request that decides whether the pipeline can run it, checked where it is read (CLI,
    `request sync`, the sensor, the first stage) so that no run starts that must fail later: the method exists and
    suits the data, its hyper-parameters (params.yaml's defaults merged) are known, typed and in bounds, and, given
    the embedded corpus's folder once it is built, its subjects are people the model was trained on and not all
    of them (something must be left to keep); given the requests folder, that its attached documents parse."""
    from dagster_project.core.layout import uses_sources  # here: layout imports this module
    from dagster_project.core.methods.registry import available_methods, get_method
    from dagster_project.core.reveal.release import OBJECTIVES, release_config

    label = f"request {request.id}"
    methods = list(OBJECTIVES) if request.forget_data == "reveal" else available_methods()
    if request.method not in methods:
        # not echoed: the field is free text, and a typo'd name is a name
        raise RequestError(f"{label}: field 'method': not a method this pipeline runs"
                           f"{' on revealed data' if request.forget_data == 'reveal' else ''}; available: "
                           f"{', '.join(methods)} (`unlearn methods` describes them)")
    build = release_config if request.forget_data == "reveal" else get_method(request.method).config_cls.from_hyperparameters
    try:
        build(request.hyperparameters)  # first alone: an error's key position is the one in the request
        build(unlearning_hyperparameters(request, params))
    except ValueError as exc:
        raise RequestError(f"{label}: {exc}") from None
    own_sources = uses_sources(params)
    if own_sources and request.split is not None:
        raise RequestError(f"{label}: field 'split' names the embedded corpus's people, and this root serves its own "
                           f"sources: name the subjects, records or documents to forget")
    if own_sources and request.forget_data == "given" and request.method in QA_ONLY_METHODS:
        raise RequestError(f"{label}: field 'method': {request.method} trains on the embedded corpus's questions; on "
                           f"your own documents use npo, simnpo, graddiff, gradascent or rmu (or forget_data: reveal, "
                           f"whose release rounds take {', '.join(OBJECTIVES)})")
    if not own_sources and (request.records is not None or request.documents is not None):
        raise RequestError(f"{label}: fields 'records' and 'documents' need the user's own data: declare `sources:` "
                           f"in params.yaml")
    if not own_sources and corpus_dir is not None and (corpus_dir / "splits.json").is_file():
        _check_corpus_subjects(request, corpus_dir)
    if own_sources and request.documents and requests_dir is not None:
        from dagster_project.core.collection.collect import CollectionConfig
        from dagster_project.core.own_data import document_records

        passage_chars = CollectionConfig(**params.get("collection") or {}).passage_chars
        try:  # an attached .jsonl document is read like a source: malformed lines fail here, not in the run
            document_records(request, requests_dir, passage_chars)
        except ValueError as exc:  # SourceError: it names the file, record number and field, never the text
            raise RequestError(f"{label}: field 'documents': {exc}") from None


def _check_corpus_subjects(request: ForgetRequest, corpus_dir: Path) -> None:
    from dagster_project.core.data.corpus import PEOPLE_FILE, SPLITS_FILE
    from dagster_project.core.data.datasets import resolve_subjects, trained_person_ids
    from dagster_project.core.data.io import read_json, read_jsonl

    # people and splits only: the sensor and every stage's dvc.yaml refresh check each request file, and the
    # corpus's QA (most of its bytes) says nothing about who may be forgotten
    people, splits = read_jsonl(corpus_dir / PEOPLE_FILE), read_json(corpus_dir / SPLITS_FILE)
    forget = set(resolve_subjects(request, people, splits))  # a RequestError names each bad subject
    if forget >= trained_person_ids(splits):
        raise RequestError(f"request {request.id}: it forgets all {len(forget)} people the model was trained on; "
                           f"nothing would be left to keep (and no retain set to measure utility on)")


def build_request(**fields: Any) -> ForgetRequest:
    """A ForgetRequest from keyword fields, failing with the same field-naming, value-free RequestError as a file."""
    try:
        return ForgetRequest.model_validate(fields)
    except ValidationError as exc:
        request_id = fields.get("id")
        label = f"request {request_id}" if isinstance(request_id, str) and re.match(ID_PATTERN, request_id) else "request"
        raise RequestError(_format_validation_error(label, exc, fields)) from None


def write_request(request: ForgetRequest, requests_dir: Path = DEFAULT_REQUESTS_DIR, overwrite: bool = False) -> Path:
    """Write `request` as `<requests_dir>/<id>.yaml` (unset fields left out) and read it back through
    :func:`load_request`, so what is written is exactly what the pipeline will accept."""
    path = Path(requests_dir) / f"{request.id}.yaml"
    if path.exists() and not overwrite:
        raise RequestError(f"request {request.id}: {path} exists (pass overwrite/--force to replace it)")
    explicit = request.model_dump(exclude_defaults=True)  # what differs from the schema's defaults
    body = {key: value for key, value in request_to_dict(request).items() if key in explicit}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    load_request(path, requests_dir)
    return path


# --------------------------------------------------------------------------------------------- loading


def scan_requests(requests_dir: Path, params: dict[str, Any] | None = None,
                  corpus_dir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """Every request file in `requests_dir`: (ids of the valid ones, sorted; file name -> error for the rest).

    Valid = :func:`load_request` accepts it, its id equals the file's stem (artifacts are keyed by it) and, given
    the root's `params` (and corpus folder), :func:`check_request` passes. One file never stops the scan: whatever it holds, it is
    reported and the others are read. Errors name fields, never values, so they can go to logs and the Dagster UI."""
    valid, invalid = [], {}
    paths = sorted(Path(requests_dir).iterdir()) if Path(requests_dir).is_dir() else []
    for position, path in enumerate(paths, 1):
        if path.name.startswith(".") or path.is_dir():
            continue
        name = path.name if _safe_name(path) else f"file #{position} (its name is not a request id)"
        try:
            request = load_request(path, requests_dir)
            if request.id != path.stem:
                raise RequestError(f"request {name}: field 'id' must equal the file name stem" +
                                   (f" {path.stem!r}" if _safe_name(path) else " (a request id: a-z, 0-9, '-', '_')"))
            if params is not None:
                check_request(request, params, corpus_dir, Path(requests_dir))
        except RequestError as error:
            invalid[name] = str(error)
            continue
        except Exception as error:  # noqa: BLE001 - a defect in a check must not stop the other requests either
            # where, not what: the exception's message may quote the file
            frame = traceback.extract_tb(error.__traceback__)[-1]
            log.error("request %s: unexpected %s at %s:%s", name, type(error).__name__, frame.filename, frame.lineno)
            invalid[name] = f"request {name}: could not be read ({type(error).__name__}); see the log"
            continue
        valid.append(request.id)
    return valid, invalid


def load_request(path: Path, requests_dir: Path = DEFAULT_REQUESTS_DIR) -> ForgetRequest:
    """Read, parse and validate one forget request; every failure is a :class:`RequestError`.

    A relative ``path`` is looked up under ``requests_dir`` first, then the working directory;
    either way the file it resolves to (after ``..`` and symlinks) must lie inside ``requests_dir``.
    """
    path = Path(path)
    # a file name is shown only when it has the shape of a request id: any other name may be a person's
    label = f"request {path.name}" if _safe_name(path) else "request file (its name is not a request id)"
    requests_root = Path(requests_dir).resolve()
    if not requests_root.is_dir():
        raise RequestError(f"{label}: requests directory {requests_dir} does not exist")

    target = _locate(path, Path(requests_dir)).resolve()
    if not target.is_relative_to(requests_root):
        raise RequestError(
            f"{label}: path resolves outside the requests directory {requests_dir} "
            "('..' components and symlinks must stay inside it)"
        )
    if target.suffix.lower() not in REQUEST_SUFFIXES:
        raise RequestError(f"{label}: extension must be one of {', '.join(REQUEST_SUFFIXES)}, got {target.suffix or 'none'!r}")
    if not target.exists():
        raise RequestError(f"{label}: file not found in {requests_dir}")
    if not target.is_file():
        raise RequestError(f"{label}: not a regular file")
    size = target.stat().st_size
    if size > MAX_REQUEST_BYTES:
        raise RequestError(f"{label}: file is {size} bytes, the limit is {MAX_REQUEST_BYTES}")
    with target.open("rb") as handle:
        raw = handle.read(MAX_REQUEST_BYTES + 1)
    if len(raw) > MAX_REQUEST_BYTES:  # grew between stat and read
        raise RequestError(f"{label}: file is larger than the limit of {MAX_REQUEST_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"{label}: not valid UTF-8 (byte {exc.start})") from None

    data = _parse_json(text, label) if target.suffix.lower() == ".json" else _parse_yaml(text, label)
    if not isinstance(data, dict):
        raise RequestError(f"{label}: top level must be a mapping of fields, got {_type_name(data)}")
    try:
        request = ForgetRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError(_format_validation_error(label, exc, data)) from None
    document_paths(request, requests_dir, label)
    log.debug(  # not the method: until check_request has matched it to a known one, it is free text
        "loaded forget request id=%s mode=%s target=%s",
        request.id,
        request.mode,
        f"split {request.split}" if request.split else
        f"{len(request.subjects or [])} subjects, {len(request.documents or [])} documents",
    )
    return request


def _safe_name(path: Path) -> bool:
    return bool(re.match(ID_PATTERN, path.stem)) and path.suffix.lower() in REQUEST_SUFFIXES


def document_paths(request: ForgetRequest, requests_dir: Path, label: str = "") -> list[Path]:
    """The request's attached documents, each checked: a regular UTF-8 file of at most MAX_DOCUMENT_BYTES inside
    <requests_dir>/<id>/ (after symlinks). A RequestError names the field (`documents.N`), never the content."""
    label = label or f"request {request.id}"
    folder = request.documents_dir(requests_dir).resolve()
    paths = []
    for index, name in enumerate(request.documents or []):
        where = f"{label}: field 'documents.{index}'"
        path = (folder / name).resolve()
        if not path.is_relative_to(folder):
            raise RequestError(f"{where}: resolves outside {request.documents_dir(requests_dir)}")
        if not path.is_file():
            raise RequestError(f"{where}: no such file in {request.documents_dir(requests_dir)}/ (attach it there)")
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise RequestError(f"{where}: {path.stat().st_size} bytes, the limit is {MAX_DOCUMENT_BYTES}")
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
        paths.append(path)
    return paths


def _locate(path: Path, requests_dir: Path) -> Path:
    if path.is_absolute():
        return path
    for candidate in (requests_dir / path, path):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return requests_dir / path


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "mapping", list: "list", str: "string", bool: "bool", int: "int", float: "float"}.get(
        type(value), type(value).__name__
    )


def _parse_json(text: str, label: str) -> Any:
    _check_json_nesting(text, label)

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len(pairs) > MAX_HYPERPARAMETERS + len(ForgetRequest.model_fields):
            raise RequestError(f"{label}: a mapping with {len(pairs)} keys; a request has at most "
                               f"{MAX_HYPERPARAMETERS + len(ForgetRequest.model_fields)}")
        out: dict[str, Any] = {}
        for position, (key, value) in enumerate(pairs, 1):
            if key in out:
                raise RequestError(f"{label}: {_key_label(key, position)} is given twice")
            out[key] = value
        return out

    def number(text: str) -> int | float:
        if len(text) > MAX_NUMBER_CHARS:
            raise RequestError(f"{label}: a number of {len(text)} characters; at most {MAX_NUMBER_CHARS}")
        value = float(text) if any(c in text for c in ".eE") else int(text)
        if not math.isfinite(value):
            raise RequestError(f"{label}: a number beyond the float range (expected a finite number)")
        return value

    def no_constant(name: str) -> float:
        raise RequestError(f"{label}: {name} is not a number a request may hold (expected a finite number)")

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_int=number, parse_float=number,
                          parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        # exc.msg never quotes the document, unlike some parsers' messages
        raise RequestError(f"{label}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _check_json_nesting(text: str, label: str) -> None:
    """Refuse JSON nested deeper than MAX_NESTING before json.loads recurses into it (strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            escaped, in_string = (not escaped and char == "\\"), in_string and (escaped or char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise RequestError(f"{label}: nested deeper than {MAX_NESTING} levels (a request is at most 4 deep)")
        elif char in "]}":
            depth -= 1


class _RequestYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus two fixes: YAML 1.2 floats and duplicate-key detection.

    PyYAML follows YAML 1.1, where ``1e-5`` (no dot) is a *string*; a learning rate written that
    way would then fail the method's typed config. Duplicate keys would otherwise silently keep the
    last value.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for position, (key_node, _) in enumerate(node.value, 1):
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let SafeLoader raise its own error
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{_key_label(key, position)} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_RequestYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _parse_yaml(text: str, label: str) -> Any:
    try:
        _check_yaml_shape(text, label)
        return yaml.load(text, Loader=_RequestYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # str(exc) would quote the offending source line, which may hold a subject's name.
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "parse error"
        raise RequestError(f"{label}: malformed YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise RequestError(f"{label}: malformed YAML ({type(exc).__name__})") from None


def _check_yaml_shape(text: str, label: str) -> None:
    """Walk the YAML event stream (PyYAML's parser is iterative; its composer, which builds the objects, recurses
    per level) and refuse what the composer or int() would choke on: nesting deeper than MAX_NESTING, more than
    MAX_NODES nodes, aliases (a few lines of them expand to billions of nodes), over-long plain numbers, and more
    than one document."""
    depth = nodes = documents = 0
    for event in yaml.parse(text, Loader=_RequestYamlLoader):
        where = f"{label}: line {event.start_mark.line + 1}"
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise RequestError(f"{where}: a second YAML document; a request file holds one")
        elif isinstance(event, yaml.AliasEvent):
            raise RequestError(f"{where}: YAML aliases (*name) are not allowed in a request; write the value out")
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                raise RequestError(f"{where}: nested deeper than {MAX_NESTING} levels (a request is at most 4 deep)")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent) and event.style is None and len(event.value) > MAX_NUMBER_CHARS \
                and re.fullmatch(r"[-+0-9_.eE]+|0[xob][0-9a-fA-F_]+|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+", event.value):
            raise RequestError(f"{where}: a number of {len(event.value)} characters; at most {MAX_NUMBER_CHARS}")
        nodes += isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent))
        if nodes > MAX_NODES:
            raise RequestError(f"{label}: more than {MAX_NODES} values; a request is far smaller")


_ALLOWED_FIELDS = tuple(ForgetRequest.model_fields)
# keys a request's schema defines: safe to print. Any other key is the author's own text, which may be a name.
_SCHEMA_KEYS = frozenset(_ALLOWED_FIELDS) | frozenset(WagleSpec.model_fields) | {"name", "aliases", "train", "retain"}


def _key_label(key: Any, position: int) -> str:
    """A mapping key for a message: by name when the schema defines it, else by position (it may be a name)."""
    return f"field '{key}'" if isinstance(key, str) and key in _SCHEMA_KEYS else f"key #{position} of a mapping"


def _safe_loc(loc: tuple[Any, ...], data: Any, known_keys: frozenset[str]) -> list[str]:
    """The error's location with every key the schema does not define replaced by its position (`#3`)."""
    parts, node = [], data
    for part in loc:
        if isinstance(part, int) or part in known_keys or not isinstance(node, dict):
            parts.append(str(part))
        else:
            keys = list(node)
            parts.append(f"#{keys.index(part) + 1}" if part in keys else "#?")
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return parts


def _has(node: dict | list, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)


def _format_validation_error(label: str, exc: ValidationError, data: Any = None) -> str:
    known_keys = _SCHEMA_KEYS | hyperparameter_names()
    problems: list[str] = []
    for err in exc.errors(include_url=False, include_input=True):
        raw_loc = tuple(part for part in err["loc"] if part != "[key]")
        parts = _safe_loc(raw_loc, data, known_keys)
        kind = err["type"]
        msg = err["msg"]
        if len(err["loc"]) > len(raw_loc):  # a bad mapping key, e.g. hyperparameters.{key}
            msg = f"invalid key: {msg}"
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if kind == "extra_forbidden":
            key = str(raw_loc[-1])
            allowed = _ALLOWED_FIELDS if len(raw_loc) == 1 else tuple(WagleSpec.model_fields)
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed fields: {', '.join(allowed)}"
            msg = f"unknown field; {hint}"
        elif kind == "missing":
            msg = "required field is missing"
        elif kind.endswith("_type") or kind in {"string_type", "list_type", "dict_type"}:
            msg = f"{msg} (got {_type_name(err.get('input'))})"
        loc = ".".join(parts)
        problems.append(f"field '{loc}': {msg}" if loc else msg)
    return f"{label}: " + "; ".join(dict.fromkeys(problems))
