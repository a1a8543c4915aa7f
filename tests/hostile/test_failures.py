"""A deterministic failure inside a run: it fails once, with the cause in one line, is not retried, and registers
nothing."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from conftest import materialize_request
from dagster_project.core.methods.graddiff import GradDiff


def test_a_non_finite_loss_fails_the_run_once_naming_the_cause(micro_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_loss(self, model, forget, retain, **extra):  # noqa: ANN001, ANN202 - the method's signature
        return model(**forget).logits.sum() * float("nan"), {"forget_nll": float("nan")}

    monkeypatch.setattr(GradDiff, "loss", nan_loss)
    result = materialize_request(micro_root, "micro", raise_on_error=False, dvc_commit=False)
    assert not result.success
    events = result.all_events
    failures = [e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ["unlearned_adapter"]
    assert not [e for e in events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    message = failures[0].step_failure_data.error.message
    assert "the training loss is not finite at step 1" in message and "lower the request's hyperparameters.lr" in message
    layout_unlearned = micro_root / "assets" / "unlearned" / "micro"
    assert not (layout_unlearned / "adapter_model.safetensors").exists()
    assert not (micro_root / "assets" / "registry" / "micro.json").exists()
