"""The judge: config validation, seeded training on toy digits, batched outputs, self-describing checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vae_pipeline.core.evaluation.judge import (
    Judge,
    JudgeConfig,
    JudgeError,
    accuracy,
    judge_outputs,
    load_judge,
    require_accuracy,
    save_judge,
    train_judge,
)
from vae_pipeline.core.model.config import ConfigError

TOY = JudgeConfig(epochs=4, batch_size=32, feature_dim=16, channels=(4, 8))


def toy_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten classes that a CNN separates at once: class c lights a 6 x 5 patch at its own place, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    x = 0.3 * torch.rand(n, 1, 28, 28, generator=g)
    for i, c in enumerate(labels.tolist()):
        row, col = divmod(c, 5)
        x[i, 0, 4 + 12 * row : 10 + 12 * row, 2 + 5 * col : 7 + 5 * col] = 1.0
    return x, labels


@pytest.fixture(scope="module")
def trained() -> Judge:
    x, y = toy_digits(400, seed=0)
    return train_judge(x, y, TOY, "cpu")


class TestJudgeConfig:
    @pytest.mark.parametrize(
        ("field", "value"),
        [("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("channels", (4,)), ("kernel_size", 4),
         ("feature_dim", 1), ("min_test_accuracy", 1.5)],
    )
    def test_bad_values_name_the_field(self, field: str, value: object) -> None:
        with pytest.raises(ConfigError, match=field):
            JudgeConfig(**{field: value})


class TestTrainJudge:
    def test_learns_the_toy_digits_and_generalizes_to_fresh_noise(self, trained: Judge) -> None:
        x, y = toy_digits(200, seed=1)
        assert accuracy(trained, x, y, "cpu") == 1.0
        assert not trained.training

    def test_training_is_seeded(self) -> None:
        x, y = toy_digits(100, seed=0)
        cfg = JudgeConfig(epochs=1, batch_size=32, feature_dim=8, channels=(2, 4))
        a, b = train_judge(x, y, cfg, "cpu"), train_judge(x, y, cfg, "cpu")
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(pa, pb, msg=name)
        c = train_judge(x, y, JudgeConfig(epochs=1, batch_size=32, feature_dim=8, channels=(2, 4), seed=1), "cpu")
        assert not torch.equal(a.head.weight, c.head.weight)

    def test_uint8_images_and_bad_labels_are_refused(self) -> None:
        x, y = toy_digits(10, seed=0)
        with pytest.raises(JudgeError, match="float images"):
            train_judge((x * 255).to(torch.uint8), y, TOY, "cpu")
        with pytest.raises(JudgeError, match="0..9"):
            train_judge(x, y + 5, TOY, "cpu")
        with pytest.raises(JudgeError, match="channel"):
            train_judge(x[:, 0], y, TOY, "cpu")


class TestJudgeOutputs:
    def test_shapes_probabilities_and_batch_independence(self, trained: Judge) -> None:
        x, _ = toy_digits(25, seed=2)
        features, probs = judge_outputs(trained, x, "cpu", batch_size=7)
        assert features.shape == (25, TOY.feature_dim) and probs.shape == (25, 10)
        assert features.dtype == torch.float64
        # A float32 softmax stored in float64: its rows sum to 1 within float32's rounding, not float64's.
        torch.testing.assert_close(probs.sum(dim=1), torch.ones(25, dtype=torch.float64), rtol=0, atol=1e-6)
        f2, p2 = judge_outputs(trained, x, "cpu", batch_size=100)
        # Computed in float32, stored in float64: batch size changes the kernels' summation order.
        torch.testing.assert_close(features, f2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(probs, p2, rtol=1e-4, atol=1e-5)

    def test_floor_refuses_a_weak_judge(self) -> None:
        require_accuracy(0.995, JudgeConfig())
        with pytest.raises(JudgeError, match="min_test_accuracy=0.99"):
            require_accuracy(0.98, JudgeConfig())


class TestJudgeCheckpoint:
    def test_round_trip_keeps_outputs_config_and_record(self, trained: Judge, tmp_path) -> None:
        path = save_judge(trained, tmp_path / "judge.safetensors", test_accuracy=0.9912, data_version="abc123")
        loaded, record = load_judge(path, "cpu")
        assert record.config == TOY and record.test_accuracy == 0.9912 and record.data_version == "abc123"
        assert not loaded.training
        x, _ = toy_digits(10, seed=3)
        torch.testing.assert_close(judge_outputs(loaded, x, "cpu"), judge_outputs(trained, x, "cpu"))
        assert [p.name for p in tmp_path.iterdir()] == ["judge.safetensors"]

    def test_truncated_file_fails_with_the_fix(self, trained: Judge, tmp_path) -> None:
        path = save_judge(trained, tmp_path / "judge.safetensors", test_accuracy=1.0, data_version="v")
        path.write_bytes(path.read_bytes()[:100])
        with pytest.raises(JudgeError, match="retrain"):
            load_judge(path, "cpu")

    def test_a_safetensors_file_of_another_kind_is_refused(self, tmp_path) -> None:
        path = tmp_path / "other.safetensors"
        save_file({"images": torch.zeros(2, 2)}, str(path), metadata={"kind": "prior_samples"})
        with pytest.raises(JudgeError, match="not a judge checkpoint"):
            load_judge(path, "cpu")

    def test_missing_file_names_the_path(self, tmp_path) -> None:
        with pytest.raises(FileNotFoundError, match="judge.safetensors"):
            load_judge(tmp_path / "judge.safetensors", "cpu")
