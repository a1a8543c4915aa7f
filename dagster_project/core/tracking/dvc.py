"""DVC as the byte store of the pipeline: record each stage's outputs and push them.

Dagster owns the graph; `dvc.yaml` is generated from it (one stage per asset, see
`dagster_project/dvc_yaml.py`). After an asset writes its files, `commit_stage` asks DVC to
hash them into `dvc.lock` and the cache, exactly as `dvc repro` would, so `dvc status` stays
clean and the md5 DVC records is the one we put in Dagster metadata and MLflow tags.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import BinaryIO

import yaml
from filelock import FileLock

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

LOCK_FILE = "dvc.lock"


@contextmanager
def _repo(root: Path) -> Iterator:
    """An open DVC repo with the process inside it: DVC resolves stage targets against the cwd.

    One process at a time: runs of several requests commit, push and fetch in parallel, and DVC's own repo
    lock gives up after a few seconds ("Unable to acquire lock"), so they queue on a file lock first."""
    from dvc.repo import Repo  # imported lazily: ~1 s, and only the tracking steps need it

    (root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".dvc" / "tmp" / "unlearn-repo.lock")), chdir(root):
        repo = Repo(str(root))
        try:
            yield repo
        finally:
            repo.close()


TEMPORARY_FILES = ".*.tmp"


def ensure_repo(root: Path, remote_url: str | None = None) -> None:
    """Initialise DVC in `root` if needed (tests and fresh stores), analytics off, default remote set."""
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        Repo.init(str(root), no_scm=not (root / ".git").exists())
    ignore = root / ".dvcignore"
    if TEMPORARY_FILES not in (ignore.read_text() if ignore.exists() else "").splitlines():
        # a killed run's half-written file (core/data/io.py writes beside the target, then renames) is no output
        with ignore.open("a") as handle:
            handle.write(f"{TEMPORARY_FILES}\n")
    with _repo(root) as repo, repo.config.edit() as conf:
        conf["core"]["analytics"] = False
        if remote_url is not None and "local" not in conf["remote"]:
            conf["remote"]["local"] = {"url": remote_url}
            conf["core"]["remote"] = "local"


def commit_stage(root: Path, stage: str) -> dict[str, str]:
    """`dvc commit -f <stage>`: hash deps/outs into dvc.lock and the cache; return {out path: md5}."""
    with _repo(root) as repo:
        repo.commit(target=f"dvc.yaml:{stage}", force=True)
        return locked_outs(root, stage)  # read under the lock: another run's commit rewrites dvc.lock


def locked_outs(root: Path, stage: str) -> dict[str, str]:
    """{out path: md5} that dvc.lock holds for `stage` (empty if the stage was never committed)."""
    return all_locked_outs(root).get(stage, {})


def all_locked_outs(root: Path) -> dict[str, dict[str, str]]:
    """{stage: {out path: md5}} for every stage dvc.lock holds (one parse: it has a stage per request)."""
    lock_path = root / LOCK_FILE
    if not lock_path.exists():
        return {}
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    return {stage: {out["path"]: out["md5"] for out in body.get("outs", [])} for stage, body in stages.items()}


def push(root: Path) -> int:
    """Push the cache of every stage to the default remote; return the number of files pushed."""
    with _repo(root) as repo:
        return repo.push()


def fetch(root: Path) -> int:
    """Fill the DVC cache from the default remote for every stage; return the number of files fetched."""
    with _repo(root) as repo:
        return repo.fetch()


def cache_object(root: Path, md5: str) -> Path:
    """Where DVC's cache of `root` keeps object `md5` (`<md5>.dir` for a folder's listing)."""
    digest = md5.removesuffix(".dir")
    return root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / (digest[2:] + (".dir" if md5.endswith(".dir") else ""))


def object_listing(root: Path, md5: str) -> dict[str, str]:
    """{relative path: md5} of the folder object `md5` as the cache holds its listing (not re-hashed)."""
    return {entry["relpath"]: entry["md5"] for entry in json.loads(cache_object(root, md5).read_text())}


@contextmanager
def _remote_odb(root: Path, command: str) -> Iterator:
    """DVC's object store of the default remote (a local folder, S3, ...), or None when none is configured."""
    from dvc.config import NoRemoteError

    with _repo(root) as repo:
        try:
            odb = repo.cloud.get_remote_odb(command=command)
        except NoRemoteError:
            odb = None
        yield odb


@contextmanager
def remote_objects(root: Path) -> Iterator[Callable[[str], BinaryIO | None] | None]:
    """An opener of DVC objects by md5 (`<md5>.dir` for a folder's listing) in the default remote, through
    DVC's own filesystem for it (a local folder, S3, ...): a binary file, or None when the remote lacks it.
    Yields None when no default remote is configured."""
    with _remote_odb(root, "audit verify") as odb:
        if odb is None:
            yield None
            return

        def open_object(md5: str) -> BinaryIO | None:
            path = odb.oid_to_path(md5)
            return odb.fs.open(path, mode="rb") if odb.fs.exists(path) else None
        yield open_object


def status(root: Path) -> dict:
    """`dvc status`: {} when every stage and .dvc file matches the workspace."""
    with _repo(root) as repo:
        return repo.status()


def remove_remote_objects(root: Path, md5s: list[str]) -> int:
    """Delete these objects from the default DVC remote, through DVC's filesystem for it; returns how many there
    were. `dvc gc --cloud` would remove every object the workspace no longer references, far more than one
    request's: DVC has no command for chosen objects, hence this loop over its own object store."""
    removed = 0
    with _remote_odb(root, "request purge") as odb:
        for md5 in md5s if odb is not None else []:
            path = odb.oid_to_path(md5)
            if odb.fs.exists(path):
                odb.fs.rm(path)
                removed += 1
    return removed
