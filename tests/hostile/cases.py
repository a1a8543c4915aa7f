"""The hostile request files: what an attacker or a careless operator drops into data/requests/, and what the
pipeline must answer. One row per case; tests/hostile/test_requests.py runs every row through `unlearn request
sync` and the sensor, and docs/hostile-inputs.md is this table with the outcomes those entry points gave.

`content` is the file's text, with `{name}` (a person the model was trained on), `{holdout}` (a person it never
saw), `{other}` (a second trained person) and `{everyone}` (a YAML list of every trained person) filled in; a
callable builds the file itself (symlinks, FIFOs, bytes). `expect` is a fragment of the one-line refusal, or
VALID. The subject's name must appear in no output, log, metadata or store, whatever the outcome.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

VALID = ""
BASE = "id: {id}\nmethod: graddiff\n"  # a case's file starts from this unless it replaces it


@dataclass(frozen=True)
class Case:
    id: str  # also the request id and file stem, unless the case is about them
    what: str
    content: str | Callable[[Path, dict[str, str]], None]
    expect: str
    file: str = ""  # default: <id>.yaml

    @property
    def file_name(self) -> str:
        return self.file or f"{self.id}.yaml"


def _subjects(**extra: str) -> str:
    return BASE + "subjects: [{name}]\n" + "".join(f"{k}: {v}\n" for k, v in extra.items())


def _hyper(body: str) -> str:
    return BASE + "subjects: [{name}]\nhyperparameters: " + body + "\n"


def _bytes(data: bytes) -> Callable[[Path, dict[str, str]], None]:
    return lambda path, names: path.write_bytes(data.replace(b"{name}", names["name"].encode()))


def _symlink_outside(path: Path, names: dict[str, str]) -> None:
    outside = path.parents[3] / "outside.yaml"  # beside the pipeline root, not in it
    outside.write_text(f"id: {path.stem}\nmethod: graddiff\nsubjects: [{names['name']}]\n")
    path.symlink_to(outside)


def _symlink_other_stem(path: Path, names: dict[str, str]) -> None:
    target = path.parent / ".real-target.yaml"  # hidden: the scan reads it only through the link
    target.write_text(f"id: real-target\nmethod: graddiff\nsubjects: [{names['name']}]\n")
    path.symlink_to(target.name)


def _fifo(path: Path, names: dict[str, str]) -> None:
    os.mkfifo(path)


def _deep_block_yaml(depth: int) -> str:
    return BASE + "subjects: [{name}]\nhyperparameters:\n" + "".join(
        "  " * (level + 1) + f"k{level}:\n" for level in range(depth)) + "  " * (depth + 1) + "v: 1\n"


def _documents_folder(path: Path, names: dict[str, str], document: bytes, name: str = "letter.txt") -> None:
    folder = path.parent / path.stem
    folder.mkdir()
    (folder / name).write_bytes(document)
    path.write_text(f"id: {path.stem}\nmethod: graddiff\nsubjects: [{names['name']}]\ndocuments: [{name}]\n")


CASES: list[Case] = [
    # --- the baseline: well-formed requests pass, and still name nobody anywhere
    Case("ok-subject", "a valid request naming a trained person", _subjects(), VALID),
    Case("ok-json", "the same request as JSON", lambda p, n: p.write_text(
        f'{{"id": "ok-json", "method": "graddiff", "subjects": ["{n["name"]}"]}}'), VALID, file="ok-json.json"),
    Case("ok-description", "a name in the free-text description", _subjects(description='"about {name}"'), VALID),
    Case("ok-aliases", "a subject with aliases", BASE + "subjects: [{{name: {name}, aliases: [J. Doe, jd@example.org]}}]\n",
         VALID),
    Case("ok-bom", "a UTF-8 byte-order mark", _bytes(b"\xef\xbb\xbfid: ok-bom\nmethod: graddiff\nsubjects: [{name}]\n"),
         VALID),
    Case("ok-bounds", "hyper-parameters at their upper bounds", _hyper("{{steps: 100000, lr: 1.0, batch_size: 4096}}"),
         VALID),
    # --- unreadable or oversized files
    Case("empty", "an empty file", "", "top level must be a mapping"),
    Case("empty-json", "an empty JSON file", lambda p, n: p.write_text(""), "malformed JSON", file="empty-json.json"),
    Case("not-utf8", "bytes that are not UTF-8", _bytes(b"id: not-utf8\n\xff\xfe{name}\n"), "not valid UTF-8"),
    Case("oversized", "a 70 KB file", _subjects(description='"' + "x" * 70_000 + '"'), "the limit is 65536"),
    Case("top-list", "a YAML list at the top", "- {name}\n- graddiff\n", "top level must be a mapping"),
    Case("top-scalar", "a bare string at the top", "{name}\n", "top level must be a mapping"),
    Case("bad-yaml", "an unclosed bracket on the name's line", BASE + "subjects: [{name}\n", "malformed YAML"),
    Case("bad-json", "malformed JSON around the name", lambda p, n: p.write_text(
        f'{{"id": "bad-json", "subjects": ["{n["name"]}"'), "malformed JSON", file="bad-json.json"),
    Case("yaml-tab", "a tab in the indentation", BASE + "subjects:\n\t- {name}\n", "malformed YAML"),
    Case("json-trailing-comma", "a trailing comma", lambda p, n: p.write_text(
        f'{{"id": "json-trailing-comma", "method": "graddiff", "subjects": ["{n["name"]}"],}}'), "malformed JSON",
         file="json-trailing-comma.json"),
    Case("python-tag", "a YAML tag that builds a Python object", BASE + "subjects: [{name}]\nx: !!python/object/apply:os.system [ls]\n",
         "malformed YAML"),
    Case("nul-byte", "a NUL character", _bytes(b"id: nul-byte\nmethod: graddiff\nsubjects: [{name}\x00]\n"), "malformed YAML"),
    Case("two-documents", "two YAML documents in one file", _subjects() + "---\nid: other\n", "a second YAML document"),
    # --- parser bombs
    Case("yaml-bomb", "a billion-laughs YAML bomb", BASE + "subjects: [{name}]\na: &a [x, x, x, x, x, x, x, x, x]\n"
         + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                   for i in range(8)), "YAML aliases (*name) are not allowed"),
    Case("deep-flow-yaml", "5,000 nested YAML brackets", BASE + "subjects: [{name}]\nx: " + "[" * 5000 + "]" * 5000 + "\n",
         "nested deeper than 8 levels"),
    Case("deep-block-yaml", "200 nested YAML mappings", _deep_block_yaml(200), "nested deeper than 8 levels"),
    Case("deep-json", "5,000 nested JSON arrays", lambda p, n: p.write_text(
        '{"id": "deep-json", "method": "graddiff", "x": ' + "[" * 5000 + "]" * 5000 + "}"), "nested deeper than 8 levels",
         file="deep-json.json"),
    Case("deep-json-strings", "brackets inside JSON strings are not nesting", lambda p, n: p.write_text(
        '{"id": "deep-json-strings", "method": "graddiff", "description": "' + "[{" * 100 + '\\"",'
        f' "subjects": ["{n["name"]}"]}}'), VALID, file="deep-json-strings.json"),
    Case("huge-int-yaml", "a 5,000-digit integer (YAML)", _hyper("{{steps: " + "9" * 5000 + "}}"), "a number of 5000 characters"),
    Case("huge-int-json", "a 5,000-digit integer (JSON)", lambda p, n: p.write_text(
        '{"id": "huge-int-json", "method": "graddiff", "hyperparameters": {"steps": ' + "9" * 5000 + "}}"),
         "a number of 5000 characters", file="huge-int-json.json"),
    Case("huge-float-json", "1e999 (beyond the float range)", lambda p, n: p.write_text(
        f'{{"id": "huge-float-json", "method": "graddiff", "subjects": ["{n["name"]}"], "hyperparameters": {{"lr": 1e999}}}}'),
         "beyond the float range", file="huge-float-json.json"),
    Case("many-values-yaml", "25,000 list items", BASE + "subjects: [{name}]\nx: [" + "1," * 25_000 + "]\n",
         "more than 20000 values"),
    Case("many-keys-json", "4,000 keys (JSON)", lambda p, n: p.write_text(
        '{"id": "many-keys-json", ' + ", ".join(f'"k{i}": 1' for i in range(4_000)) + "}"), "a mapping with 4001 keys",
         file="many-keys-json.json"),
    # --- non-finite numbers
    Case("nan-yaml", "lr: .nan", _hyper("{{lr: .nan}}"), "expected a finite number"),
    Case("inf-yaml", "steps: .inf", _hyper("{{steps: .inf}}"), "expected a finite number"),
    Case("nan-json", "NaN in JSON", lambda p, n: p.write_text(
        f'{{"id": "nan-json", "method": "graddiff", "subjects": ["{n["name"]}"], "hyperparameters": {{"lr": NaN}}}}'),
         "NaN is not a number a request may hold", file="nan-json.json"),
    Case("inf-json", "-Infinity in JSON", lambda p, n: p.write_text(
        f'{{"id": "inf-json", "method": "graddiff", "subjects": ["{n["name"]}"], "hyperparameters": {{"lr": -Infinity}}}}'),
         "-Infinity is not a number a request may hold", file="inf-json.json"),
    # --- files, paths and names of files
    Case("symlink-outside", "a symlink to a file outside data/requests/", _symlink_outside, "resolves outside"),
    Case("symlink-inside", "a symlink whose target has another id", _symlink_other_stem, "must equal the file name stem"),
    Case("fifo", "a FIFO (would block a reader for ever)", _fifo, "not a regular file"),
    Case("wrong-suffix", "a .txt file", _subjects(), "extension must be one of", file="wrong-suffix.txt"),
    Case("no-suffix", "no extension", _subjects(), "extension must be one of", file="no-suffix"),
    Case("id-not-stem", "an id other than the file's stem", "id: someone-else\nmethod: graddiff\nsubjects: [{name}]\n",
         "must equal the file name stem", file="id-not-stem.yaml"),
    Case("named-file", "the file named after the person", "id: named-file\nmethod: graddiff\nsubjects: [{name}]\n",
         "its name is not a request id", file="{name}.yaml"),
    Case("id-traversal", "an id with ../", "id: ../../etc\nmethod: graddiff\nsubjects: [{name}]\n", "field 'id'"),
    Case("id-is-name", "an id spelled as the person's name", "id: {name}\nmethod: graddiff\nsubjects: [{name}]\n",
         "field 'id'"),
    Case("document-traversal", "a document path with ../", _subjects(documents="['../../etc/passwd']"), "documents.0"),
    Case("document-missing", "a document that is not attached", _subjects(documents="[letter.txt]"), "no such file"),
    Case("document-huge", "a 2 MB document", lambda p, n: _documents_folder(p, n, b"x" * 2_000_000), "the limit is 1048576"),
    Case("document-binary", "a document that is not UTF-8", lambda p, n: _documents_folder(p, n, b"\xff\xfe\x00"),
         "not valid UTF-8"),
    Case("document-on-corpus", "documents on a root without sources", lambda p, n: _documents_folder(p, n, b"about them"),
         "need the user's own data"),
    Case("records-on-corpus", "records on a root without sources", _subjects(records="{{train: [T-1]}}"),
         "need the user's own data"),
    # --- unicode names
    Case("unknown-person", "a name the corpus does not hold", BASE + "subjects: [{name} Junior]\n", "no person with this name"),
    Case("unicode-name", "accents and CJK", BASE + "subjects: [Zoë Łukasz 山田]\n", "no person with this name"),
    Case("rtl-name", "a right-to-left override inside the name", BASE + "subjects: [\"\u202e{name}\"]\n", "no person with this name"),
    Case("zero-width-name", "a zero-width joiner inside the name", BASE + "subjects: [\"{name}\u200d\"]\n", "no person with this name"),
    Case("emoji-name", "an emoji", BASE + "subjects: [\"{name} 🙂\"]\n", "no person with this name"),
    Case("newline-name", "a newline inside the name", BASE + "subjects: [\"{name}\\nmethod: npo\"]\n", "no person with this name"),
    Case("long-name", "a 101-character name", BASE + "subjects: [" + "{name}" + "x" * 101 + "]\n", "1 to 100 characters"),
    Case("blank-name", "a blank name", BASE + "subjects: ['  ']\n", "1 to 100 characters"),
    Case("name-as-number", "a number where a name goes", BASE + "subjects: [12345]\n", "expected a name or {name, aliases}, got int"),
    # --- subjects
    Case("empty-subjects", "an empty subject list", BASE + "subjects: []\n", "subjects"),
    Case("too-many-subjects", "201 subjects", BASE + "subjects: [" + ", ".join(f"p{i}" for i in range(201)) + "]\n",
         "subjects"),
    Case("duplicate-subjects", "the same person twice, in other case", BASE + "subjects: [{name}, '{NAME}']\n",
         "subjects.1 duplicates subjects.0"),
    Case("duplicate-key", "a key given twice", _subjects() + "method: npo\n", "field 'method' is given twice"),
    Case("duplicate-name-key", "a name given twice as a key", _subjects() + "{name}: 1\n{name}: 2\n", "is given twice"),
    Case("holdout-person", "a person the model never saw", BASE + "subjects: [{holdout}]\n", "holdout split"),
    Case("everyone", "every person the model was trained on", BASE + "subjects: {everyone}\n", "forgets all"),
    Case("split-and-subjects", "both a split and subjects", _subjects(split="forget10"), "exactly one of"),
    Case("no-target", "neither a split nor subjects", BASE, "exactly one of"),
    Case("unknown-split", "a split the corpus does not have", BASE + "split: forget99\n", "split"),
    # --- methods, modes and hyper-parameters
    Case("unknown-method", "method: npoo", "id: unknown-method\nmethod: npoo\nsubjects: [{name}]\n",
         "not a method this pipeline runs"),
    Case("method-is-name", "the method field holds a name", "id: method-is-name\nmethod: {lower}\nsubjects: [{name}]\n",
         "field 'method'"),
    Case("missing-method", "no method", "id: missing-method\nsubjects: [{name}]\n", "required field is missing"),
    Case("bad-mode", "mode: partial", _subjects(mode="partial"), "field 'mode'"),
    Case("reveal-full", "a reveal request in full mode", _subjects(forget_data="reveal", mode="full"), "needs mode 'lora'"),
    Case("reveal-rmu", "a reveal request with a method release cannot run", "id: reveal-rmu\nmethod: rmu\n"
         "forget_data: reveal\nsubjects: [{name}]\n", "on revealed data"),
    Case("unknown-key-is-name", "an unknown top-level key spelled as the name", _subjects() + "{name}: 1\n", "unknown field"),
    Case("unknown-key-typo", "a misspelt field", _subjects(hyperparamters="{{}}"), "did you mean 'hyperparameters'"),
    Case("wagle-unknown-key", "an unknown key in the wagle block", _subjects(wagle="{{ratio: 0.9, {lower}: 1}}"),
         "unknown field"),
    Case("wagle-ratio-zero", "wagle ratio 0", _subjects(wagle="{{ratio: 0}}"), "wagle.ratio"),
    Case("hyper-name-key", "a hyper-parameter key spelled as a name", _hyper("{{{key}: 1}}"), "is not a setting of"),
    Case("hyper-spaced-key", "a hyper-parameter key with spaces", _hyper("{{'{name}': 1}}"), "invalid key"),
    Case("hyper-name-value", "steps holding the name", _hyper("{{steps: '{name}'}}"), "hyperparameters.steps: expected int, got text"),
    Case("hyper-name-choice", "retain_loss holding the name", _hyper("{{retain_loss: '{name}'}}"), "expected 'nll' or 'kl'"),
    Case("hyper-list", "a list as a hyper-parameter", _hyper("{{steps: [1, 2]}}"), "expected int, float, bool or str"),
    Case("hyper-long-string", "a 2,000-character string", _hyper("{{retain_loss: " + "x" * 2000 + "}}"), "at most 1000 characters"),
    Case("negative-lr", "lr: -1", _hyper("{{lr: -1}}"), "hyperparameters.lr: must be > 0"),
    Case("zero-batch", "batch_size: 0", _hyper("{{batch_size: 0}}"), "hyperparameters.batch_size: must be > 0"),
    Case("huge-steps", "steps: 1000000000", _hyper("{{steps: 1000000000}}"), "hyperparameters.steps: must be at most 100000"),
    Case("huge-lr", "lr: 1e30", _hyper("{{lr: 1e30}}"), "hyperparameters.lr: must be at most 1"),
    Case("huge-lora", "lora_r: 100000", _hyper("{{lora_r: 100000}}"), "hyperparameters.lora_r: must be at most 1024"),
    Case("bool-steps", "steps: true", _hyper("{{steps: true}}"), "hyperparameters.steps: expected int, got bool"),
    Case("long-description", "a 501-character description", _subjects(description="x" * 501), "description"),
]


def markdown_table() -> str:
    """docs/hostile-inputs.md's table: each case and the outcome tests/hostile/test_requests.py asserts."""
    rows = ["| case | the file | outcome at `request sync` and the sensor |", "|---|---|---|"]
    for case in CASES:
        outcome = "accepted: a partition and a run" if case.expect == VALID else f"refused: “…{case.expect}…”"
        rows.append(f"| `{case.id}` | {case.what} | {outcome.replace('|', '&#124;')} |")
    return "\n".join(rows) + "\n"
