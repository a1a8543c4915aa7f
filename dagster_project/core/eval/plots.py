"""Pictures a reviewer would rather look at than read: metric bars and forget truth-ratio distributions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

BAR_METRICS = ("forget_rouge", "forget_fact_accuracy", "forget_prob", "retain_rouge", "retain_prob", "real_world_rouge",
               "world_rouge", "model_utility")


def plot_report(report: dict, out_path: Path) -> Path:
    models = list(report["models"])
    fig, axes = plt.subplots(2, 3, figsize=(19, 8.4))
    bars, cdf, roc = axes[0]
    width = 0.8 / len(models)
    x = np.arange(len(BAR_METRICS))
    for i, model in enumerate(models):
        values = [report["models"][model]["metrics"][k] for k in BAR_METRICS]
        bars.bar(x + i * width, values, width, label=model)
    bars.set_xticks(x + width * (len(models) - 1) / 2, [k.replace("_", "\n", 1) for k in BAR_METRICS], fontsize=8)
    bars.set_ylim(0, 1.05)
    bars.set_title("Metrics per model (forget ↓ after unlearning, retain/world ↔)")
    bars.legend(fontsize=8)
    for model in models:
        tr = np.sort(np.asarray(report["models"][model]["forget_truth_ratios"]))
        fq = report["models"][model]["metrics"].get("forget_quality")
        label = model if fq is None else f"{model} (FQ={fq:.2g})"
        cdf.step(tr, np.arange(1, len(tr) + 1) / len(tr), where="post", label=label)
    cdf.set_xscale("log")
    cdf.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels overlap
    cdf.set_xlabel("truth ratio on forget items (log)")
    cdf.set_ylabel("cumulative share")
    cdf.set_title("Forget truth ratios: closer to the retain model = better forget quality")
    cdf.legend(fontsize=8)
    plot_roc(roc, report, "holdout", "MIA (LOSS) forget vs holdout: 0.5 = forget looks unseen")
    bins = np.logspace(-1.5, 1, 30)  # truth ratios of this corpus lie within ~0.03..10
    for ax, model in zip(axes[1], models[:3]):
        for set_name in ("forget", "retain"):
            values = np.clip(report["models"][model][f"{set_name}_truth_ratios"], bins[0], bins[-1])
            ax.hist(values, bins=bins, alpha=0.6, label=f"{set_name} items")
        ax.set_xscale("log")
        ax.set_xlabel("truth ratio P(perturbed)/P(paraphrase) (log)")
        ax.set_title(f"{model}: truth ratios, forget vs retain items")
        ax.legend(fontsize=8)
    for ax in axes[1][len(models):]:
        ax.set_visible(False)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def plot_roc(ax: plt.Axes, report: dict, negatives: str, title: str) -> None:
    """Each model's LOSS-attack ROC of forget items (members) against `negatives` (holdout or non-members)."""
    for model, body in report["models"].items():
        scores = body["mia_loss_scores"]
        if scores:  # a request without non-members has no MIA
            labels = np.r_[np.zeros(len(scores["forget"])), np.ones(len(scores[negatives]))]
            fpr, tpr, _ = roc_curve(labels, np.r_[scores["forget"], scores[negatives]])
            ax.plot(fpr, tpr, label=f"{model} (AUC={body['metrics']['mia_loss_auc']:.2f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_histogram(scores: list[float], threshold: float, out_path: Path, title: str) -> Path:
    """A score histogram (log counts) with the threshold drawn: how clearly the collected records stand apart."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(scores, bins=np.linspace(0, 1, 41), color="tab:blue", alpha=0.8)
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_yscale("log")
    ax.set_xlabel("score (1.0 = names the subject or an alias)")
    ax.set_ylabel("records (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


PROBE_SETS = ("forget", "paraphrase", "hard_positive", "retain", "utility", "general")


def plot_documents_report(report: dict, out_path: Path) -> Path:
    """Probe top-1 per set and model (chance drawn), the forget probes' log-probability margins, and the MIA
    ROC of forget documents against non-members."""
    models = list(report["models"])
    metrics = {model: report["models"][model]["metrics"] for model in models}
    sets = [s for s in PROBE_SETS if f"{s}_probe_top1" in metrics[models[0]]]
    fig, (bars, margins, roc) = plt.subplots(1, 3, figsize=(19, 4.8))
    width = 0.8 / len(models)
    x = np.arange(len(sets))
    for i, model in enumerate(models):
        bars.bar(x + i * width, [metrics[model][f"{s}_probe_top1"] for s in sets], width, label=model)
    chance = metrics[models[0]].get("probe_chance")
    if chance is not None:
        bars.axhline(chance, color="grey", linestyle=":", label=f"chance {chance:.2f}")
    bars.set_xticks(x + width * (len(models) - 1) / 2, [s.replace("_", "\n") for s in sets], fontsize=8)
    bars.set_ylim(0, 1.05)
    bars.set_title("Probe top-1 per set (forget ↓ to chance; the rest ↔)")
    bars.legend(fontsize=8)
    for model in models:
        values = report["models"][model]["probe_margins"].get("forget", [])
        if values:
            margins.hist(values, bins=30, alpha=0.6, label=model)
    margins.axvline(0, color="grey", linestyle=":")
    margins.set_xlabel("log p(true span) − best distractor, forget probes (> 0: top-1)")
    margins.set_title("Forget probes: how far the true span leads")
    margins.legend(fontsize=8)
    plot_roc(roc, report, "nonmember", "MIA (LOSS) forget vs non-member documents: 0.5 = looks unseen")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
