"""The user's own data: declared in params.yaml `sources:`, read from JSONL, CSV, Parquet or a `datasets` folder.

    sources:
      train:                                   # what the model was fine-tuned on (a file, or a list of files)
        - {path: data/sources/tickets.jsonl}   # chat `messages` records
        - {path: data/sources/notes.csv, fields: {id: note_id, text: body}}
      nonmember: {path: data/sources/holdout.jsonl}   # the same kind of text, never trained on (MIA)
      utility: {path: data/sources/faq.parquet}       # held-out general text (utility probes)
      retain: {path: data/sources/keep.jsonl}         # text to keep when there is no `train` (a pretrained model)

Every record becomes one normalised record, whatever its shape::

    id          "<role>:<file stem>:<record id>"   unique within the pipeline
    source      the role (train | retain | nonmember | utility)
    file        the file's name
    record      the record's own id (the `id` field, or its 1-based row number)
    prompt      "" for free text; the prompt, or the chat turns before the last assistant turn
    completion  the text, the completion, or the last assistant message

A record is free text (`text`), a prompt/completion pair, or a chat (`messages`: a list of {role, content}
ending with an assistant turn); `fields` maps those names to the file's own columns, and without it the
shape is read from the columns present. Every failure names the file, the record number and the field,
never the record's text (it is personal data).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ROLES: tuple[str, ...] = ("train", "retain", "nonmember", "utility")
FORMATS: dict[str, str] = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
CHAT_ROLES = ("system", "user", "assistant")


class SourceError(ValueError):
    """A source file is unreadable or a record is malformed; the message names file, record and field."""


class FieldMap(BaseModel):
    """Which of the file's columns hold what (None: the column of that name, if the file has it)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    text: str | None = None
    prompt: str | None = None
    completion: str | None = None
    messages: str | None = None


class SourceFile(BaseModel):
    """One file of a source role."""

    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, Field(min_length=1, max_length=500)]
    format: Literal["jsonl", "csv", "parquet", "datasets"] | None = None  # None: from the suffix (a folder: datasets)
    split: str = "train"  # a `datasets` folder holding a DatasetDict: which split
    fields: FieldMap = Field(default_factory=FieldMap)
    max_bytes: Annotated[int, Field(gt=0)] = 256 * 1024 * 1024
    max_records: Annotated[int, Field(gt=0)] = 200_000
    max_chars: Annotated[int, Field(gt=0)] = 20_000  # per record, prompt and completion together


def declared_sources(params: dict[str, Any]) -> dict[str, list[SourceFile]]:
    """params `sources:` as {role: [SourceFile, ...]}, every key and value checked; {} when there is none."""
    raw = params.get("sources") or {}
    if not isinstance(raw, dict):
        raise SourceError("params sources: expected a mapping of role -> file spec(s)")
    unknown = sorted(set(raw) - set(ROLES))
    if unknown:
        raise SourceError(f"params sources.{unknown[0]}: unknown role; roles: {', '.join(ROLES)}")
    out: dict[str, list[SourceFile]] = {}
    for role, specs in raw.items():
        specs = specs if isinstance(specs, list) else [specs]
        files = []
        for index, spec in enumerate(specs):
            where = f"sources.{role}" + (f".{index}" if len(specs) > 1 else "")
            try:
                files.append(SourceFile.model_validate(spec))
            except ValidationError as error:
                first = error.errors(include_url=False)[0]
                field = ".".join(str(p) for p in first["loc"])
                raise SourceError(f"params {where}.{field}: {first['msg']}") from None
        stems = [Path(f.path).stem for f in files]
        if len(set(stems)) != len(stems):
            raise SourceError(f"params sources.{role}: two files share the name stem; record ids would collide")
        out[role] = files
    return out


def source_path(spec: SourceFile, root: Path) -> Path:
    path = Path(spec.path)
    return path if path.is_absolute() else root / path


def source_format(spec: SourceFile, path: Path) -> str:
    if spec.format:
        return spec.format
    if path.is_dir():
        return "datasets"
    if path.suffix.lower() not in FORMATS:
        raise SourceError(f"source {path.name}: cannot tell the format from the suffix {path.suffix or 'none'!r}; "
                          f"set format: jsonl | csv | parquet | datasets")
    return FORMATS[path.suffix.lower()]


def _rows(path: Path, fmt: str, spec: SourceFile) -> Iterator[dict[str, Any]]:
    """The file's rows as dicts, in file order."""
    label = f"source {path.name}"
    if fmt == "jsonl":
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    raise SourceError(f"{label}: record {number}: not valid UTF-8 (byte {error.start})") from None
                except RecursionError:
                    raise SourceError(f"{label}: record {number}: nested too deeply to be a record") from None
                except ValueError as error:  # JSONDecodeError, or an integer beyond Python's digit limit
                    where = f" at column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
                    raise SourceError(f"{label}: record {number}: malformed JSON{where}") from None
                if not isinstance(row, dict):
                    raise SourceError(f"{label}: record {number}: expected a JSON object")
                yield row
        return
    if fmt == "datasets":
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise SourceError(f"{label}: no split {spec.split!r}; it has {', '.join(loaded)}")
            loaded = loaded[spec.split]
        yield from loaded
        return
    import pandas as pd

    try:
        frame = (pd.read_csv(path, dtype=str, keep_default_na=False) if fmt == "csv" else pd.read_parquet(path))
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise SourceError(f"{label}: unreadable as {fmt} ({type(error).__name__})") from None
    yield from frame.to_dict(orient="records")


def _shape(columns: set[str], fields: FieldMap, label: str) -> tuple[str, dict[str, str]]:
    """('text' | 'pair' | 'chat', {our name: the file's column}) from the mapping, else from the columns."""
    named = {k: v for k, v in fields.model_dump().items() if v and k != "id"}
    if not named:
        named = ({"messages": "messages"} if "messages" in columns
                 else {"prompt": "prompt", "completion": "completion"} if {"prompt", "completion"} <= columns
                 else {"text": "text"} if "text" in columns else {})
    shapes = {"text": {"text"}, "pair": {"prompt", "completion"}, "chat": {"messages"}}
    for shape, needed in shapes.items():
        if set(named) == needed:
            return shape, named
    raise SourceError(f"{label}: fields must name `text`, or `prompt` and `completion`, or `messages`; "
                      f"got {sorted(named) or 'none, and the file has no column text, prompt/completion or messages'}")


def _text(value: Any, label: str, number: int, field: str) -> str:
    if not isinstance(value, str):
        raise SourceError(f"{label}: record {number}: field '{field}': expected text, got {type(value).__name__}")
    if not value.strip():
        raise SourceError(f"{label}: record {number}: field '{field}': blank")
    return value.strip()


def _chat(value: Any, label: str, number: int, field: str) -> tuple[str, str]:
    """(prompt, completion) of a chat: the turns before the last assistant turn, and that turn. One user turn
    is the prompt as it is; several turns are flattened into one prompt, 'Role: content' a line."""
    if hasattr(value, "tolist"):  # Parquet list columns arrive as numpy arrays
        value = value.tolist()
    if not isinstance(value, list) or len(value) < 2:
        raise SourceError(f"{label}: record {number}: field '{field}': expected a list of at least two messages")
    turns = []
    for index, message in enumerate(value):
        where = f"{field}.{index}"
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise SourceError(f"{label}: record {number}: field '{where}': expected {{role: system|user|assistant, "
                              f"content: text}}")
        turns.append((message["role"], _text(message.get("content"), label, number, f"{where}.content")))
    if turns[-1][0] != "assistant":
        raise SourceError(f"{label}: record {number}: field '{field}': the last message must be the assistant's")
    before = turns[:-1]
    prompt = before[0][1] if len(before) == 1 else "\n".join(f"{role.capitalize()}: {text}" for role, text in before)
    return prompt, turns[-1][1]


def record_id_of(row: dict[str, Any], spec: SourceFile, number: int, label: str) -> tuple[str, str | None]:
    """(the record's own id, the field it came from): the `id` column, or the 1-based row number without one."""
    id_field = spec.fields.id or ("id" if "id" in row else None)
    record_id = str(number) if id_field is None else row.get(id_field)
    if isinstance(record_id, (int, float)) and not isinstance(record_id, bool):
        record_id = str(record_id)
    if not isinstance(record_id, str) or not record_id.strip() or len(record_id) > 200:
        raise SourceError(f"{label}: record {number}: field '{id_field}': expected a non-blank id of at most "
                          f"200 characters")
    return record_id, id_field


def normalised_id(role: str, spec: SourceFile, record_id: str) -> str:
    return f"{role}:{Path(spec.path).stem}:{record_id}"


def read_source(spec: SourceFile, root: Path, role: str) -> list[dict[str, Any]]:
    """Every record of one declared file, normalised (see the module docstring); a SourceError names the first
    problem by file, record number and field."""
    path = source_path(spec, root)
    label = f"source {path.name}"
    if not path.exists():
        raise SourceError(f"{label}: not found at {path} (params sources.{role}.path is relative to the root)")
    fmt = source_format(spec, path)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    if size > spec.max_bytes:
        raise SourceError(f"{label}: {size} bytes, the limit is {spec.max_bytes} (raise max_bytes if intended)")
    records, seen = [], {}
    shape = columns = None
    for number, row in enumerate(_rows(path, fmt, spec), start=1):
        if number > spec.max_records:
            raise SourceError(f"{label}: more than {spec.max_records} records (raise max_records if intended)")
        if shape is None:
            shape, columns = _shape(set(row), spec.fields, label)
        missing = [column for column in columns.values() if column not in row]
        if missing:
            raise SourceError(f"{label}: record {number}: field '{missing[0]}' is missing")
        if shape == "chat":
            prompt, completion = _chat(row[columns["messages"]], label, number, columns["messages"])
        elif shape == "pair":
            prompt = _text(row[columns["prompt"]], label, number, columns["prompt"])
            completion = _text(row[columns["completion"]], label, number, columns["completion"])
        else:
            prompt, completion = "", _text(row[columns["text"]], label, number, columns["text"])
        if len(prompt) + len(completion) > spec.max_chars:
            raise SourceError(f"{label}: record {number}: {len(prompt) + len(completion)} characters, the limit is "
                              f"{spec.max_chars} (raise max_chars if intended)")
        record_id, id_field = record_id_of(row, spec, number, label)
        if record_id in seen:
            raise SourceError(f"{label}: record {number}: field '{id_field}': the same id as record {seen[record_id]}")
        seen[record_id] = number
        records.append({"id": normalised_id(role, spec, record_id), "source": role, "file": path.name,
                        "record": record_id, "prompt": prompt, "completion": completion})
    if not records:
        raise SourceError(f"{label}: no records")
    return records


RECORDS_FILE, MANIFEST_FILE = "records.jsonl", "manifest.json"


def file_md5(path: Path) -> str:
    """md5 of a file, or of a folder's sorted (relative path, md5) listing (a `datasets` folder)."""
    from dagster_project.core.data.io import fingerprint, md5_file

    if path.is_file():
        return md5_file(path)
    return fingerprint([(p.relative_to(path).as_posix(), md5_file(p)) for p in sorted(path.rglob("*")) if p.is_file()])


def write_role(files: list[SourceFile], root: Path, role: str, out_dir: Path) -> dict[str, Any]:
    """Every file of a role read and normalised into `out_dir`/records.jsonl, with a manifest of each file's
    format, md5 and record count; an undeclared role gets an empty file and `declared: false`."""
    import shutil

    from dagster_project.core.data.io import write_json, write_jsonl

    if out_dir.exists():
        shutil.rmtree(out_dir)
    records, listed = [], []
    for spec in files:
        found = read_source(spec, root, role)
        path = source_path(spec, root)
        listed.append({"name": path.name, "format": source_format(spec, path), "md5": file_md5(path),
                       "records": len(found)})
        records += found
    write_jsonl(out_dir / RECORDS_FILE, records)
    manifest = {"declared": bool(files), "role": role, "files": listed, "records": len(records)}
    write_json(out_dir / MANIFEST_FILE, manifest)
    return manifest


def read_role(out_dir: Path) -> list[dict[str, Any]]:
    """The normalised records a role's asset holds."""
    from dagster_project.core.data.io import read_jsonl

    return read_jsonl(out_dir / RECORDS_FILE)
