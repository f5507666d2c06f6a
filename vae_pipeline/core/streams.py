"""Independent random streams derived from one seed by name, so that one draw never shifts another.

When two models are measured "with the same seed", each kind of draw must be the same for both.
With one generator shared by all draws, a step that draws for one model only (a VAE's posterior
samples, which an auto-encoder does not need) shifts every later draw, and the two models get
different "N(0, I) draws" under the same seed. A stream per kind of draw, seeded from the seed and
the stream's name, makes each kind depend on nothing else.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def stream_seed(seed: int, name: str) -> int:
    """A seed for the stream `name` of `seed`: the same pair always gives the same one, other names unrelated ones."""
    # SeedSequence mixes its entropy well, so neighbouring seeds and names give unrelated streams.
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))  # 63 bits: torch seeds are signed 64-bit


def stream(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on `device` for the stream `name` of `seed`."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, name))


__all__ = ["stream", "stream_seed"]
