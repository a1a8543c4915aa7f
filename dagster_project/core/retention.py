"""Retention of a request's personal data: where its plaintext lives, and how it is purged.

A request's text (the request file and attached documents, the forget set, the retain set's hard positives, SNAP's
and Reveal's generated data, the knowledge probes, the model's answers) lives only in the artifact store:
`data/requests/`, `assets/` and their DVC copies (`.dvc/cache`, the DVC remote). Caches that hold it sit in
`Layout.personal_cache_dir` and are deleted once the request's run has registered a version.

`purge` removes all of it for one request, and keeps what the audit trail needs: the adapter (weights), the
evaluation report (numbers), the cleaned training data (other people's records), the registry record, the audit
manifest and dvc.lock, whose md5s still prove what was there. The purge record lists every removed file's md5.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dagster_project.core.data.io import md5_file, read_json, write_json
from dagster_project.core.data.request import REQUEST_SUFFIXES
from dagster_project.core.layout import Layout


@dataclass
class PurgeReport:
    request_id: str
    purged_at: str
    files: dict[str, str] = field(default_factory=dict)  # removed workspace file -> its md5
    outputs: dict[str, str] = field(default_factory=dict)  # removed DVC-versioned output -> dvc.lock's md5
    cache_objects: int = 0  # DVC cache objects removed (none that another stage still references)
    remote_objects: int = 0  # the same objects removed from the default DVC remote
    personal_cache_files: int = 0
    kept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def purge_record_path(root: Path, request_id: str) -> Path:
    return root / "assets" / "registry" / f"{request_id}-purged.json"


def purge_record(root: Path, request_id: str) -> dict[str, Any] | None:
    """What `purge` removed for the request (md5s, when), or None if it was never purged."""
    path = purge_record_path(root, request_id)
    return read_json(path) if path.is_file() else None


def clear_personal_caches(layout: Layout) -> int:
    """Delete the request's text-holding caches; returns how many files there were."""
    folder = layout.personal_cache_dir
    count = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
    shutil.rmtree(folder, ignore_errors=True)
    return count


def personal_paths(layout: Layout) -> list[Path]:
    """The request's files and folders that hold its text (whatever exists of them)."""
    requests_dir = layout.root / Path(layout.request_file).parent
    candidates = [requests_dir / f"{layout.request_id}{suffix}" for suffix in REQUEST_SUFFIXES]
    candidates += [requests_dir / layout.request_id, layout.request_json, layout.request_documents]
    datasets = layout.forget_set.parent
    if datasets.is_dir():  # forget, retain, SNAP, revealed, release rounds, collection, probes; not `cleaned/`
        candidates += [p for p in sorted(datasets.iterdir()) if p != layout.cleaned_dir]
    return [p for p in candidates if p.exists() or p.is_symlink()]


def purge(layout: Layout, dry_run: bool = False) -> PurgeReport:
    """Remove every plaintext copy of the request's data (see the module docstring); `dry_run` only lists them."""
    from dagster_project.core.tracking import dvc

    report = PurgeReport(layout.request_id, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    paths = personal_paths(layout)
    documents = layout.root / Path(layout.request_file).parent / layout.request_id
    for path in paths:
        files = [path] if path.is_file() or path.is_symlink() else sorted(p for p in path.rglob("*") if p.is_file())
        for index, file in enumerate(files, 1):
            # an attached document's file name may itself be personal: numbered, not named
            label = f"{layout.rel(path)}/document #{index}" if path == documents else layout.rel(file)
            report.files[label] = md5_file(file) if file.is_file() else "symlink"
    removed = {layout.rel(p) for p in paths}
    locked = dvc.all_locked_outs(layout.root)
    report.outputs = {path: md5 for outs in locked.values() for path, md5 in outs.items() if path in removed}
    objects = _unshared_objects(layout.root, locked, removed)
    report.kept = [layout.rel(p) for p in (layout.unlearned_dir, layout.eval_dir, layout.cleaned_dir,
                                           layout.registry_record, layout.audit_dir) if p.exists()]
    if dry_run:
        report.cache_objects = len(objects)
        return report
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for md5 in objects:
        obj = dvc.cache_object(layout.root, md5)
        if obj.exists():
            obj.chmod(0o644)
            obj.unlink()
            report.cache_objects += 1
    report.remote_objects = dvc.remove_remote_objects(layout.root, objects)
    report.personal_cache_files = clear_personal_caches(layout)
    write_json(purge_record_path(layout.root, layout.request_id), report.to_dict())
    return report


def _unshared_objects(root: Path, locked: dict[str, dict[str, str]], removed: set[str]) -> list[str]:
    """md5s of the DVC objects behind the removed outputs that no other output of dvc.lock (`locked`) references
    (identical content, such as an empty file, is one object shared by every stage that wrote it)."""
    from dagster_project.core.tracking.dvc import cache_object, object_listing

    def objects(md5: str) -> set[str]:
        found = {md5}
        if md5.endswith(".dir") and cache_object(root, md5).is_file():
            found |= set(object_listing(root, md5).values())
        return found

    mine, others = set(), set()
    for outs in locked.values():
        for path, md5 in outs.items():
            (mine if path in removed else others).update(objects(md5))
    return sorted(mine - others)
