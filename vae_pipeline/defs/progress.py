"""Training progress in the run's log, where Dagster UI users look (one line per epoch)."""

from typing import Any

import dagster as dg

from vae_pipeline.core.model.train import Callback

_SHOWN = ("train_neg_elbo", "val_neg_elbo", "val_recon_nll", "val_kl", "beta", "seconds")


class DagsterProgressLogger(Callback):
    """Logs each epoch's figures through the asset's `context.log`, so they show in the run's log."""

    def __init__(self, log: dg.DagsterLogManager, role: str) -> None:
        self.log = log
        self.role = role
        self.epochs = 0

    def on_train_begin(self, info: dict[str, Any]) -> None:
        self.epochs = info["train_config"]["epochs"]  # not a manifest: fit's on_train_begin info
        start = info.get("start_epoch", 0)
        where = f"resuming after epoch {start}" if start else "starting"
        device = info.get("device", "?")  # not a manifest: fit's on_train_begin info
        self.log.info(f"{self.role}: training {self.epochs} epochs on {device}, {where}")

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        figures = "  ".join(f"{k}={metrics[k]:.4g}" for k in _SHOWN if k in metrics)
        self.log.info(f"{self.role} epoch {epoch}/{self.epochs}  {figures}")
