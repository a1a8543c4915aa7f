"""DVC as the byte store of the pipeline: record each stage's outputs and push them.

Dagster owns the graph; `dvc.yaml` is generated from it (one stage per asset, see
`dagster_project/dvc_yaml.py`). After an asset writes its files, `commit_stage` asks DVC to
hash them into `dvc.lock` and the cache, exactly as `dvc repro` would, so `dvc status` stays
clean and the md5 DVC records is the one we put in Dagster metadata and MLflow tags.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path

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


def ensure_repo(root: Path, remote_url: str | None = None) -> None:
    """Initialise DVC in `root` if needed (tests and fresh stores), analytics off, default remote set."""
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        Repo.init(str(root), no_scm=not (root / ".git").exists())
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
    lock_path = root / LOCK_FILE
    if not lock_path.exists():
        return {}
    stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    return {out["path"]: out["md5"] for out in stages.get(stage, {}).get("outs", [])}


def push(root: Path) -> int:
    """Push the cache of every stage to the default remote; return the number of files pushed."""
    with _repo(root) as repo:
        return repo.push()


def fetch(root: Path) -> int:
    """Fill the DVC cache from the default remote for every stage; return the number of files fetched."""
    with _repo(root) as repo:
        return repo.fetch()


def status(root: Path) -> dict:
    """`dvc status`: {} when every stage and .dvc file matches the workspace."""
    with _repo(root) as repo:
        return repo.status()
