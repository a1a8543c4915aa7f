"""The cleaned training set: each `train` source file again, in its own format, without the forget records.

    write_cleaned(files, root, removed_ids, out_dir)

What any later fine-tune, or an exact retrain, must use, so the forgotten people do not come back: rows are
dropped by record id and everything else is kept as it was (JSON Lines byte for byte; CSV, Parquet and
`datasets` folders rewritten by pandas and `datasets` with the same columns).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dagster_project.core.sources.load import (
    SourceFile,
    file_md5,
    normalised_id,
    record_id_of,
    source_format,
    source_path,
)

ROLE = "train"


def _kept_rows(rows: list[dict[str, Any]], spec: SourceFile, removed: set[str], label: str) -> list[int]:
    return [i for i, row in enumerate(rows)
            if normalised_id(ROLE, spec, record_id_of(row, spec, i + 1, label)[0]) not in removed]


def write_cleaned_file(spec: SourceFile, root: Path, removed: set[str], out_dir: Path) -> dict[str, Any]:
    """One train file without the `removed` records (normalised ids), written to `out_dir`/<its name>."""
    path = source_path(spec, root)
    fmt, label, out = source_format(spec, path), f"source {path.name}", out_dir / path.name
    if fmt == "jsonl":
        lines = [line for line in path.read_bytes().splitlines(keepends=True) if line.strip()]
        keep = _kept_rows([json.loads(line) for line in lines], spec, removed, label)
        out.write_bytes(b"".join(lines[i] for i in keep))
        total = len(lines)
    elif fmt == "datasets":
        import datasets

        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[spec.split]
        keep = _kept_rows(list(dataset), spec, removed, label)
        dataset.select(keep).save_to_disk(str(out))
        total = len(dataset)
    else:
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False) if fmt == "csv" else pd.read_parquet(path)
        keep = _kept_rows(frame.to_dict(orient="records"), spec, removed, label)
        kept = frame.iloc[keep]
        kept.to_csv(out, index=False) if fmt == "csv" else kept.to_parquet(out, index=False)
        total = len(frame)
    return {"name": path.name, "format": fmt, "original_md5": file_md5(path), "md5": file_md5(out),
            "records": len(keep), "removed": total - len(keep)}


def write_cleaned(files: list[SourceFile], root: Path, removed: set[str], out_dir: Path) -> list[dict[str, Any]]:
    """Every train file cleaned into `out_dir` (emptied first); one manifest entry per file."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    return [write_cleaned_file(spec, root, removed, out_dir) for spec in files]
