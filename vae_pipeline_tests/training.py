"""Training-loop helpers the CPU and CUDA training tests share: an interruption at a chosen epoch, histories without timings."""

from __future__ import annotations

from vae_pipeline.core.model.train import TIMING_KEYS, Callback, History


def without_timing(history: History) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


class StopAfter(Callback):
    """Simulates an interruption: raises once the given epoch has been checkpointed."""

    class Interrupt(Exception):
        pass

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise self.Interrupt
