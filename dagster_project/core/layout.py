"""Where every artifact lives, and the run parameters (`params.yaml`).

One place decides paths, so the Dagster assets, the `unlearn stage` CLI and the generated
`dvc.yaml` can never disagree about them. Request-scoped artifacts are keyed by the request id,
which must equal the request file's stem (so paths are known before the file is parsed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dagster_project.core.data.request import REQUEST_SUFFIXES

DEFAULT_PARAMS = "params.yaml"


def load_params(root: Path, params_file: str = DEFAULT_PARAMS) -> dict[str, Any]:
    path = (root / params_file).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path} (expected a YAML mapping like the repo's params.yaml)")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a YAML mapping of sections")
    # the user's own data (`sources:`) replaces the embedded corpus; its model may come fine-tuned already (no `train:`)
    corpus_only = () if params.get("sources") else ("corpus", "tokenizer", "train")
    required = ("request", "requests_dir", *corpus_only, "model", "unlearn", "reveal", "release", "eval", "registry",
                "promotion")
    missing = [k for k in required if k not in params]
    if missing:
        raise ValueError(f"{path}: missing top-level key(s) {', '.join(missing)}")
    return params


def uses_sources(params: dict[str, Any]) -> bool:
    """Whether the pipeline serves the user's own data (params `sources:`) rather than the embedded corpus."""
    return bool(params.get("sources"))


@dataclass(frozen=True)
class Layout:
    root: Path
    request_file: str  # relative to root, e.g. data/requests/demo-forget10.yaml
    request_key: str = ""  # the request id when it is not the file's stem (dvc.yaml's `${key}` placeholder)

    @classmethod
    def from_params(cls, root: Path, params: dict[str, Any]) -> "Layout":
        """The layout of params.yaml's `request:` (the default request of the CLI, `dvc repro` and `make demo`)."""
        return cls(root=root.resolve(), request_file=str(params["request"]))

    @classmethod
    def for_request(cls, root: Path, params: dict[str, Any], request_id: str) -> "Layout":
        """The layout of request `request_id` (a Dagster partition): its file in `requests_dir`, whichever of
        .yaml/.yml/.json it is; artifact paths depend on the id alone, so a request whose file was removed
        still finds its artifacts."""
        if not request_id or "/" in request_id or "\\" in request_id or request_id.startswith("."):
            raise ValueError(f"request id {request_id!r}: expected a file stem in {params['requests_dir']}/")
        requests_dir = Path(params["requests_dir"])
        files = [requests_dir / f"{request_id}{suffix}" for suffix in REQUEST_SUFFIXES]
        found = next((f for f in files if (root / f).is_file()), files[0])
        return cls(root=root.resolve(), request_file=found.as_posix())

    @property
    def request_id(self) -> str:
        return self.request_key or Path(self.request_file).stem

    @property
    def assets(self) -> Path:
        return self.root / "assets"

    @property
    def corpus_dir(self) -> Path:
        return self.assets / "corpus"

    @property
    def tokenizer_dir(self) -> Path:
        return self.assets / "tokenizer"

    @property
    def target_model_dir(self) -> Path:
        return self.assets / "models" / "target"

    @property
    def request_json(self) -> Path:
        return self.assets / "requests" / f"{self.request_id}.json"

    @property
    def forget_set(self) -> Path:
        return self.assets / "datasets" / self.request_id / "forget.jsonl"

    @property
    def retain_set(self) -> Path:
        return self.assets / "datasets" / self.request_id / "retain.jsonl"

    @property
    def snap_data_dir(self) -> Path:
        """SNAP's negative instructions and hard positives (empty files for other methods)."""
        return self.assets / "datasets" / self.request_id / "snap"

    @property
    def revealed_dir(self) -> Path:
        """The self-generated forget set of a `forget_data: reveal` request (empty for other requests)."""
        return self.assets / "datasets" / self.request_id / "revealed"

    @property
    def release_rounds_dir(self) -> Path:
        """What each release round of a reveal request trained on (a manifest saying 'not built' otherwise)."""
        return self.assets / "datasets" / self.request_id / "release-rounds"

    @property
    def attribution_dir(self) -> Path:
        """WAGLE's weight mask and LoRA targets for the request (a manifest saying 'not built' otherwise)."""
        return self.assets / "attribution" / self.request_id

    def source_dir(self, role: str) -> Path:
        """A declared source role's normalised records and manifest (core/sources/load.py)."""
        return self.assets / "sources" / role

    @property
    def request_documents(self) -> Path:
        """The passages of the documents attached to the request (an empty file when there are none)."""
        return self.assets / "requests" / f"{self.request_id}.documents.jsonl"

    @property
    def collection_dir(self) -> Path:
        """How the forget set was collected from the sources: report, record scores, histogram."""
        return self.assets / "datasets" / self.request_id / "collection"

    @property
    def cleaned_dir(self) -> Path:
        """The training data without the forget records: what any later fine-tune must use."""
        return self.assets / "datasets" / self.request_id / "cleaned"

    @property
    def probes_dir(self) -> Path:
        """Knowledge probes of the request (documents evaluation, general knowledge)."""
        return self.assets / "datasets" / self.request_id / "probes"

    @property
    def retain_model_dir(self) -> Path:
        return self.assets / "models" / f"retain-{self.request_id}"

    @property
    def unlearned_dir(self) -> Path:
        return self.assets / "unlearned" / self.request_id

    @property
    def eval_dir(self) -> Path:
        return self.assets / "evaluation" / self.request_id

    @property
    def registry_record(self) -> Path:
        return self.assets / "registry" / f"{self.request_id}.json"

    @property
    def audit_dir(self) -> Path:
        """The registered version's audit manifest and model card (also logged to its MLflow run)."""
        return self.assets / "registry" / f"{self.request_id}-audit"

    @property
    def cache_dir(self) -> Path:
        """Working cache (git- and DVC-ignored), content-addressed: base models, masks, checkpoints, method runs.
        Nothing in it holds a request's text: that goes to `personal_cache_dir`."""
        return self.root / ".cache"

    @property
    def personal_cache_dir(self) -> Path:
        """The request's caches that hold its text (model answers, SNAP's generated data): deleted when its run
        registers a version, and by `unlearn request purge` (core/retention.py)."""
        return self.cache_dir / "requests" / self.request_id

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()
