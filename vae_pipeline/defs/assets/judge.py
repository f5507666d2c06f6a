"""The judge: an independent CNN digit classifier whose features and verdicts score decoded images."""

import dataclasses
import hashlib
import json
from pathlib import Path

import dagster as dg

from vae_pipeline.core.data.tensor_store import load_tensor_store
from vae_pipeline.core.evaluation.judge import JudgeConfig, accuracy, require_accuracy, save_judge, train_judge
from vae_pipeline.core.model.checkpoint import file_sha256
from vae_pipeline.core.model.config import to_dict
from vae_pipeline.core.model.device import resolve_device
from vae_pipeline.defs.automation import on_new_data
from vae_pipeline.defs.config_classes import dagster_config, to_core
from vae_pipeline.defs.manifests import DigitClassifier, MnistTensors, read_manifest, write_manifest
from vae_pipeline.defs.storage.folder import PipelineStorage, write_json_atomic

GROUP = "evaluation"
# Bump when a change to the judge's code should retrain judges whose config and data are unchanged.
JUDGE_CODE_VERSION = "1"

DigitClassifierConfig = dagster_config(
    "DigitClassifierConfig",
    JudgeConfig.__doc__,
    JudgeConfig,
    module=__name__,
    extra={"device": (str, "auto")},  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
)


def _fingerprint(cfg: JudgeConfig, data_version: str, device_type: str) -> str:
    key = {"judge": to_dict(cfg), "data": data_version, "code": JUDGE_CODE_VERSION, "device": device_type}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _reusable(summary_path: Path, storage: PipelineStorage) -> tuple[DigitClassifier | None, str | None]:
    """The finished judge's summary if its file is the one recorded, else why not."""
    if not summary_path.is_file():
        return None, None
    summary = read_manifest("digit_classifier", json.loads(summary_path.read_text()))
    path = storage.resolve(summary.checkpoint)
    if not path.is_file():
        return None, f"its checkpoint {path} is missing"
    if file_sha256(path) != summary.checkpoint_sha256:
        return None, f"its checkpoint {path} does not match the sha256 recorded when it was written"
    return summary, None


@dg.asset(group_name=GROUP, code_version=JUDGE_CODE_VERSION, kinds={"pytorch"}, automation_condition=on_new_data(),
          pool="gpu")  # trains on the accelerator: a deployment with the daemon runs one such step at a time
def digit_classifier(
    context: dg.AssetExecutionContext, config: DigitClassifierConfig, storage: PipelineStorage, mnist_tensors: MnistTensors
) -> dg.MaterializeResult:
    """A small CNN trained on the training split (never on test): the judge of decoded samples, reused while the data is unchanged."""
    cfg = to_core(config, JudgeConfig)
    device = resolve_device(config.device)
    data_version = mnist_tensors.content_sha256
    fingerprint = _fingerprint(cfg, data_version, device.type)
    folder = storage.working_folder("models", "judge", fingerprint)
    summary_path, checkpoint = folder / "summary.json", folder / "judge.safetensors"
    summary, problem = _reusable(summary_path, storage)
    if problem is not None:
        context.log.warning(f"judge {fingerprint}: not reusing it: {problem}; training it again")
    if summary is None:
        store = load_tensor_store(storage.resolve(mnist_tensors.path))
        train, test = store["train"], store["test"]
        context.log.info(f"training the judge on {len(train)} training images ({cfg.epochs} epochs, {device})")
        judge = train_judge(train.float_images(), train.labels, cfg, device)
        test_accuracy = accuracy(judge, test.float_images(), test.labels, device)
        save_judge(judge, checkpoint, test_accuracy, data_version)
        require_accuracy(test_accuracy, cfg)  # a weak judge fails loudly, and is not recorded as finished
        summary = DigitClassifier(
            checkpoint=storage.relative(checkpoint),
            checkpoint_sha256=file_sha256(checkpoint),
            fingerprint=fingerprint,
            data_version=data_version,
            store_path=mnist_tensors.path,
            test_accuracy=test_accuracy,
            config=to_dict(cfg),
        )
        storage.publish(checkpoint)
        write_json_atomic(summary_path, write_manifest(summary))  # last: its presence means "finished"
        storage.publish(summary_path)
        reused = False
    else:
        context.log.info(f"judge {fingerprint}: config, data and code unchanged; not retraining")
        storage.publish(checkpoint)  # a publication cut short (nothing to do otherwise)
        storage.publish(summary_path)
        reused = True
    return dg.MaterializeResult(
        value=dataclasses.replace(summary, reused=reused),
        data_version=dg.DataVersion(fingerprint),
        metadata={
            "test_accuracy": round(summary.test_accuracy, 4),
            "min_test_accuracy": cfg.min_test_accuracy,
            "reused": reused,
            "fingerprint": fingerprint,
            "checkpoint": summary.checkpoint,
        },
    )
