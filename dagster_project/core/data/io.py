"""Small, dependency-free helpers for the artifact store: JSON Lines and content hashes.

Every dataset the pipeline writes is JSON Lines with sorted keys, so the same records always
give the same bytes and therefore the same md5 (DVC's hash for a file is the md5 of its bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records one per line (sorted keys, UTF-8), atomically; return how many were written."""
    count = 0
    with _atomic(path) as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
    return count


@contextmanager
def _atomic(path: Path) -> Iterator[TextIO]:
    """A text file that appears at `path` whole or not at all: written beside it, then renamed over it. A run
    killed mid-write leaves the previous file; two runs building the same shared asset each replace it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # open(): the umask's mode
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_json(path: Path, obj: Any) -> None:
    with _atomic(path) as handle:
        handle.write(json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_md5s(folder: Path) -> dict[str, str]:
    """{path relative to `folder` (POSIX): md5} of every file under it, in path order."""
    return {p.relative_to(folder).as_posix(): md5_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def weights_md5(model_dir: Path) -> list[str]:
    """md5 of each weight file (*.safetensors) of a model folder, in name order: a model's identity in cache keys."""
    return [md5_file(p) for p in sorted(model_dir.glob("*.safetensors"))]


def sha256_text(text: str) -> str:
    """Hash for personal data: what we log instead of forget-set text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(obj: Any) -> str:
    """Stable short hash of any JSON-serialisable object (configs, cache keys)."""
    payload = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
