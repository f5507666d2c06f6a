"""The training loop: determinism, exact resume, checkpoints, NaN detection, callbacks, real MNIST."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from vae_pipeline.core.data.idx import read_raw_dataset
from vae_pipeline.core.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from vae_pipeline.core.model.config import ConfigError, ModelConfig, TrainConfig
from vae_pipeline.core.model.train import Callback, History, NonFiniteLossError, ProgressPrinter, fit
from vae_pipeline.core.model.vae import build_model
from vae_pipeline_tests.training import StopAfter, without_timing

MODEL = ModelConfig(hidden_dims=(32,), latent_dim=4)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Grey images with structure (a bright random block each), so a model has something to learn."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.rand(n, 1, 28, 28, generator=g)
    rows = torch.randint(0, 20, (n,), generator=g)
    for i, r in enumerate(rows.tolist()):
        x[i, 0, r : r + 8, 4:24] = 0.9
    return x


def _cfg(**overrides: object) -> TrainConfig:
    base = dict(epochs=3, batch_size=32, seed=0, mc_samples=2, free_bits=0.05, kl_warmup_epochs=2)
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


class _Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_train_begin(self, info: dict[str, object]) -> None:
        self.events.append(f"begin@{info['start_epoch']}")

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.events.append(f"epoch{epoch}:{metrics['epoch']}")

    def on_train_end(self, history: History) -> None:
        self.events.append(f"end:{len(history)}")


class TestHistory:
    def test_records_every_epoch_with_the_metric_names(self) -> None:
        history = fit(build_model(MODEL), _images(96), _images(40, seed=1), _cfg(), "cpu")
        assert history.metric("epoch") == [1, 2, 3]
        for key in ("train_neg_elbo", "train_recon_nll", "train_kl", "val_neg_elbo", "val_recon_nll", "val_kl", "beta", "seconds"):
            assert all(math.isfinite(v) for v in history.metric(key)), key
        assert history.metric("beta") == [0.0, 0.5, 1.0]
        for r in history:
            assert r["train_neg_elbo"] == pytest.approx(r["train_recon_nll"] + r["train_kl"], rel=1e-5)
            assert r["val_neg_elbo"] == pytest.approx(r["val_recon_nll"] + r["val_kl"], rel=1e-5)

    @pytest.mark.parametrize("binarization", ["dynamic", "static", "none"])
    def test_uint8_and_float_inputs_train_alike(self, binarization: str) -> None:
        # uint8 training images stay uint8 and each batch is scaled on its own: bit for bit the same run.
        x = (_images(64) * 255).round().to(torch.uint8)
        cfg = _cfg(epochs=2, binarization=binarization)
        a = fit(build_model(MODEL), x, x[:32], cfg, "cpu")
        b = fit(build_model(MODEL), x.float() / 255, x[:32].float() / 255, cfg, "cpu")
        assert without_timing(a) == without_timing(b)


class TestDeterminism:
    @pytest.mark.parametrize("binarization", ["dynamic", "static", "none"])
    def test_same_seed_same_metrics_bit_for_bit(self, binarization: str) -> None:
        cfg = _cfg(binarization=binarization)
        a = fit(build_model(MODEL), _images(96), _images(40, seed=1), cfg, "cpu")
        b = fit(build_model(MODEL), _images(96), _images(40, seed=1), cfg, "cpu")
        assert without_timing(a) == without_timing(b)

    def test_different_seed_different_metrics(self) -> None:
        a = fit(build_model(MODEL), _images(96), _images(40, seed=1), _cfg(seed=0), "cpu")
        b = fit(build_model(MODEL), _images(96), _images(40, seed=1), _cfg(seed=1), "cpu")
        assert a.metric("train_neg_elbo") != b.metric("train_neg_elbo")

    def test_validation_is_deterministic_across_epochs(self) -> None:
        # With a zero learning rate the weights never change, so validation must repeat exactly.
        history = fit(build_model(MODEL), _images(64), _images(40, seed=1), _cfg(learning_rate=1e-30), "cpu")
        assert len(set(history.metric("val_neg_elbo"))) == 1


class TestResume:
    def test_interrupted_then_resumed_equals_uninterrupted(self, tmp_path: Path) -> None:
        train, val, cfg = _images(96), _images(40, seed=1), _cfg(epochs=4)
        full_model = build_model(MODEL)
        full = fit(full_model, train, val, cfg, "cpu", checkpoint_path=tmp_path / "full.pt")

        path = tmp_path / "run.pt"
        with pytest.raises(StopAfter.Interrupt):
            fit(build_model(MODEL), train, val, cfg, "cpu", callbacks=[StopAfter(2)], checkpoint_path=path)
        assert load_checkpoint(path)["epoch"] == 2
        recorder = _Recorder()
        resumed_model = build_model(MODEL, seed=99)  # different init: the checkpoint must overwrite it
        resumed = fit(resumed_model, train, val, cfg, "cpu", callbacks=[recorder], checkpoint_path=path)

        assert without_timing(resumed) == without_timing(full)
        assert recorder.events == ["begin@2", "epoch3:3", "epoch4:4", "end:4"]
        for (name, a), (_, b) in zip(full_model.state_dict().items(), resumed_model.state_dict().items()):
            assert torch.equal(a, b), name

    def test_more_epochs_extend_a_finished_run(self, tmp_path: Path) -> None:
        train, val = _images(64), _images(32, seed=1)
        full = fit(build_model(MODEL), train, val, _cfg(epochs=3), "cpu")
        path = tmp_path / "ckpt.pt"
        fit(build_model(MODEL), train, val, _cfg(epochs=2), "cpu", checkpoint_path=path)
        extended = fit(build_model(MODEL), train, val, _cfg(epochs=3), "cpu", checkpoint_path=path)
        assert without_timing(extended) == without_timing(full)

    def test_changed_config_is_refused_with_the_fix(self, tmp_path: Path) -> None:
        path = tmp_path / "ckpt.pt"
        fit(build_model(MODEL), _images(32), _images(16, seed=1), _cfg(epochs=1), "cpu", checkpoint_path=path)
        with pytest.raises(ConfigError, match="learning_rate.*resume=False"):
            fit(build_model(MODEL), _images(32), _images(16, seed=1), _cfg(epochs=2, learning_rate=0.1), "cpu", checkpoint_path=path)

    def test_resume_false_starts_afresh(self, tmp_path: Path) -> None:
        path = tmp_path / "ckpt.pt"
        fit(build_model(MODEL), _images(32), _images(16, seed=1), _cfg(epochs=1), "cpu", checkpoint_path=path)
        history = fit(build_model(MODEL), _images(32), _images(16, seed=1), _cfg(epochs=1), "cpu", checkpoint_path=path, resume=False)
        assert history.metric("epoch") == [1]


class TestCheckpoint:
    def test_loads_with_weights_only_and_describes_itself(self, tmp_path: Path) -> None:
        path = tmp_path / "ckpt.pt"
        model = build_model(MODEL)
        fit(model, _images(64), _images(32, seed=1), _cfg(epochs=2), "cpu", checkpoint_path=path)
        state = torch.load(path, weights_only=True)
        assert state["epoch"] == 2
        assert state["model_config"]["latent_dim"] == 4
        assert state["train_config"]["epochs"] == 2
        assert len(state["history"]) == 2
        assert state["best_val_neg_elbo"] == min(r["val_neg_elbo"] for r in state["history"])
        assert {"model_state", "optimizer_state", "generator_states", "scaler_state"} <= set(state)

    def test_load_model_reproduces_the_trained_model(self, tmp_path: Path) -> None:
        path = tmp_path / "ckpt.pt"
        model = build_model(MODEL)
        fit(model, _images(64), _images(32, seed=1), _cfg(epochs=1), "cpu", checkpoint_path=path)
        loaded = load_model(path, "cpu")
        x = _images(4, seed=5)
        assert not loaded.training
        assert torch.equal(loaded.encode(x)[0], model.encode(x)[0])

    def test_failed_write_keeps_the_previous_checkpoint(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp_path / "ckpt.pt"
        save_checkpoint(path, {"format_version": 1, "epoch": 1})

        def broken_save(*args: object, **kwargs: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(torch, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(path, {"format_version": 1, "epoch": 2})
        monkeypatch.undo()
        assert load_checkpoint(path)["epoch"] == 1
        assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class TestNonFinite:
    def test_nan_weights_stop_training_naming_epoch_and_batch(self, tmp_path: Path) -> None:
        model = build_model(MODEL)
        with torch.no_grad():
            model.fc_latent.weight[0, 0] = float("nan")
        with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 0 "):
            fit(model, _images(64), _images(16, seed=1), _cfg(), "cpu", checkpoint_path=tmp_path / "ckpt.pt")
        assert not (tmp_path / "ckpt.pt").exists(), "a diverged run must not leave a checkpoint behind"

    def test_huge_learning_rate_diverges_loudly(self) -> None:
        cfg = _cfg(learning_rate=1e8, epochs=5, kl_warmup_epochs=0, free_bits=0.0)
        with pytest.raises(NonFiniteLossError, match=r"epoch \d+, batch \d+ \(0-based, of \d+\)"):
            fit(build_model(MODEL), _images(128), _images(16, seed=1), cfg, "cpu")


class TestCallbacks:
    def test_hooks_fire_in_order(self) -> None:
        recorder = _Recorder()
        fit(build_model(MODEL), _images(32), _images(16, seed=1), _cfg(epochs=2), "cpu", callbacks=[recorder])
        assert recorder.events == ["begin@0", "epoch1:1", "epoch2:2", "end:2"]


class TestProgressPrinter:
    def test_prints_one_line_per_epoch(self) -> None:
        stream = io.StringIO()
        fit(build_model(MODEL), _images(32), _images(16, seed=1), _cfg(epochs=2), "cpu", callbacks=[ProgressPrinter(stream)])
        lines = stream.getvalue().splitlines()
        assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
        assert all("val_neg_elbo=" in line for line in lines)


@pytest.mark.slow
class TestRealMnist:
    def test_a_short_run_lowers_the_loss(self, mnist_dir: Path) -> None:
        raw = read_raw_dataset(mnist_dir, "mnist")
        images = torch.from_numpy(raw.train_images[:3000].copy()).unsqueeze(1)  # (3000, 1, 28, 28) uint8
        cfg = TrainConfig(epochs=4, batch_size=100)
        history = fit(build_model(ModelConfig(hidden_dims=(200,))), images[:2500], images[2500:], cfg, "cpu")
        val = history.metric("val_neg_elbo")
        assert val[-1] < val[0] - 15.0
        assert history.metric("train_neg_elbo")[-1] < history.metric("train_neg_elbo")[0]
        assert val[-1] < 220.0  # far below the 543 nats of a model that ignores its input
        assert history.last["val_active_units"] >= 3
