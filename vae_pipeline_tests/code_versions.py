"""The hand-set code versions (training, judge, ingest) and the source each was last confirmed against.

These versions are part of a model's or a store's identity (fingerprint, data version, folder), so
they are set by hand: deriving them would retrain every model after any edit to core. So that a bump
cannot be forgotten, `code_versions.json` records, for each, the version and the digest of the source
it covers (the asset's module and every core module it imports, as `defs/reuse.py` derives it).
`defs/test_code_versions.py` fails when the source (or the version) differs from the record. After deciding,
run `python -m vae_pipeline_tests.code_versions` to record the new state: bump the version first when
the change can alter what the asset produces (it retrains or re-ingests); record as is when it cannot
(a comment, a message, a refactor with equal results).
"""

from __future__ import annotations

import json
from pathlib import Path

from vae_pipeline.defs.assets import ingest, judge, training
from vae_pipeline.defs.reuse import source_digest

LOCK = Path(__file__).with_name("code_versions.json")
HAND_SET = {  # module -> (constant's name, its value)
    training.__name__: ("TRAINING_CODE_VERSION", training.TRAINING_CODE_VERSION),
    judge.__name__: ("JUDGE_CODE_VERSION", judge.JUDGE_CODE_VERSION),
    ingest.__name__: ("INGEST_CODE_VERSION", ingest.INGEST_CODE_VERSION),
}


def current() -> dict[str, dict[str, str]]:
    """Each hand-set version as the code has it now, with the digest of the source it covers."""
    return {module: {"constant": name, "version": version, "source": source_digest(module)}
            for module, (name, version) in HAND_SET.items()}


def recorded() -> dict[str, dict[str, str]]:
    return json.loads(LOCK.read_text())


if __name__ == "__main__":
    LOCK.write_text(json.dumps(current(), indent=2, sort_keys=True) + "\n")
    print(f"recorded {LOCK}")
