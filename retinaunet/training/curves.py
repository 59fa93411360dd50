"""The training curves picture: loss terms per epoch and validation AP, redrawn after every epoch."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from retinaunet.io import atomic_path


def plot_curves(history: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """``history``: one dict per epoch with ``epoch``, ``losses`` ({term: mean}) and ``val_ap`` (or None)."""
    path = Path(path)
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    terms = sorted({k for h in history for k in h.get("losses", {})})
    for term in terms:
        ax_loss.plot(epochs, [h["losses"].get(term, float("nan")) for h in history], marker=".", label=term)
    ax_loss.set(xlabel="epoch", ylabel="mean training loss", yscale="log", title="training losses")
    ax_loss.legend(fontsize=8)
    val = [(h["epoch"], h["val_ap"]) for h in history if h.get("val_ap") is not None]
    if val:
        ax_ap.plot(*zip(*val), marker="o", color="tab:green")
        best = max(val, key=lambda v: v[1])
        ax_ap.axhline(best[1], color="grey", lw=0.8, ls="--")
        ax_ap.annotate(f"best {best[1]:.3f} (epoch {best[0]})", best, textcoords="offset points", xytext=(4, -12))
    ax_ap.set(xlabel="epoch", ylabel="mAP @ IoU 0.1", ylim=(0, 1.02), title="validation")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path
