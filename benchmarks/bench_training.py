"""Benchmark: our tensor-on-device fit loop against the conventional DataLoader loop, then quality.

Part 1 times, in one process on the same 60,000 MNIST training images, one epoch (training plus
a pass over the 10,000 test images) of
  (a) `vae_pipeline.core.train.fit`: the dataset is one tensor, batches are index slices;
  (b) the conventional loop of pytorch/examples `vae/main.py`: torchvision's MNIST dataset with
      transforms.ToTensor() and a shuffling DataLoader (num_workers=0, as the example uses on
      CPU), the default Adam and a `loss.item()` per batch.
Both train the same 784-400-20 model from the same initial weights with the same loss
(`elbo_terms`, Bernoulli BCE on grey-value targets, batch 128). Each loop runs two epochs; the
second (steady-state) epoch is reported, so one-time start-up costs do not count.

Part 2 trains the default configuration on the 50,000-image training split and reports the
negative ELBO and the IWAE NLL (Burda et al. 2015) on the test set binarized once with a seed.

Run: python benchmarks/bench_training.py [--epochs 10] [--iwae-k 5000] [--iwae-subset N]
The last line is `speedup_vs_dataloader=<ratio>`.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vae_pipeline.core.config import DataConfig, ModelConfig, TrainConfig
from vae_pipeline.core.idx import RAW_FILES, read_raw_dataset
from vae_pipeline.core.inference import iwae_nll
from vae_pipeline.core.losses import elbo_terms
from vae_pipeline.core.model import VAE, build_model
from vae_pipeline.core.tensor_store import build_store_arrays
from vae_pipeline.core.train import fit

REPO_ROOT = Path(__file__).resolve().parents[1]
# Each loop runs one warm-up epoch (allocation, kernel selection) and then this many measured ones,
# the two loops alternating epoch by epoch so that load from other processes hits both alike.
DEFAULT_ROUNDS = 3


def mnist_dir() -> Path:
    """The raw MNIST folder: $VAE_PIPELINE_MNIST_DIR, else ../shared/mnist/raw next to the repository."""
    configured = os.environ.get("VAE_PIPELINE_MNIST_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "mnist" / "raw"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def memory_report(device: torch.device) -> str:
    text = f"peak RSS {peak_rss_mib():.0f} MiB"
    if device.type == "cuda":
        text += f", peak CUDA allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    return text


def step_flops(model: VAE, x: torch.Tensor, train: bool) -> int:
    """Matmul/conv FLOPs of one batch, forward (+ backward when `train`), counted by torch's FlopCounterMode."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    counter = FlopCounterMode(display=False)
    with counter:
        if train:
            elbo_terms(model, x, generator=gen).loss.backward()
        else:
            with torch.no_grad():
                elbo_terms(model, x, generator=gen)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def epoch_flops(model: VAE, n_train: int, n_eval: int, batch: int, eval_batch: int, device: torch.device) -> tuple[int, int]:
    """(training FLOPs, evaluation FLOPs) of one epoch, from per-batch counts (linear in the batch size)."""
    train = step_flops(model, torch.rand(batch, 1, 28, 28, device=device), train=True) * n_train / batch
    evaluation = step_flops(model, torch.rand(eval_batch, 1, 28, 28, device=device), train=False) * n_eval / eval_batch
    return int(train), int(evaluation)


def fastest_thread_count(model_cfg: ModelConfig, device: torch.device, candidates: list[int]) -> int:
    """The intra-op thread count that runs a training step fastest right now.

    On a 2-core machine shared with other processes, OpenMP threads that wait at barriers for a
    descheduled sibling can make 2 threads many times slower than 1, so this is measured, not assumed.
    Both loops then run with the same count.
    """
    timings = {}
    x = torch.rand(128, 1, 28, 28, device=device)
    for threads in candidates:
        torch.set_num_threads(threads)
        model = build_model(model_cfg).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator(device=device).manual_seed(0)
        for i in range(40):
            if i == 10:  # the first steps pay for allocation and kernel selection
                t0 = time.perf_counter()
            optimizer.zero_grad()
            elbo_terms(model, x, generator=gen).loss.backward()
            optimizer.step()
        timings[threads] = (time.perf_counter() - t0) / 30
    print("ms per training step by thread count: " + ", ".join(f"{t}: {s * 1e3:.1f}" for t, s in timings.items()))
    return min(timings, key=timings.__getitem__)


def torchvision_root(raw_dir: Path, tmp: Path) -> Path:
    """A torchvision MNIST root built from the local files: it reads decompressed IDX files in root/MNIST/raw."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in RAW_FILES.values():
        gz = raw_dir / f"{stem}.gz"
        (raw / stem).write_bytes(gzip.decompress(gz.read_bytes()) if gz.is_file() else (raw_dir / stem).read_bytes())
    return tmp


class DataLoaderLoop:
    """The conventional loop of pytorch/examples vae/main.py on our model and loss, one epoch per call."""

    def __init__(self, model: VAE, root: Path, device: torch.device, seed: int) -> None:
        from torchvision import datasets, transforms

        torch.manual_seed(seed)  # the example seeds the global RNG; the DataLoader shuffles from it
        self.model, self.device = model, device
        self.train_loader = torch.utils.data.DataLoader(
            datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor()),
            batch_size=128,
            shuffle=True,
        )
        self.test_loader = torch.utils.data.DataLoader(
            datasets.MNIST(str(root), train=False, download=False, transform=transforms.ToTensor()),
            batch_size=128,
            shuffle=False,
        )
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self.model.train()
        train_loss = 0.0
        for data, _ in self.train_loader:
            data = data.to(self.device)
            self.optimizer.zero_grad()
            loss = elbo_terms(self.model, data).loss
            loss.backward()
            train_loss += loss.item()
            self.optimizer.step()
        t1 = time.perf_counter()
        self.model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data, _ in self.test_loader:
                test_loss += elbo_terms(self.model, data.to(self.device)).neg_elbo.item()
        t2 = time.perf_counter()
        return {"seconds": t2 - t0, "train_seconds": t1 - t0, "train_loss": train_loss / len(self.train_loader)}


def fit_one_more_epoch(model: VAE, train: torch.Tensor, test: torch.Tensor, cfg: TrainConfig, epoch: int,
                       device: torch.device, checkpoint: Path) -> dict[str, float]:
    """Epoch `epoch` of our loop: `fit` resumes from the checkpoint and runs exactly one more epoch."""
    return fit(model, train, test, replace(cfg, epochs=epoch), device, checkpoint_path=checkpoint).last


def summary(records: list[dict[str, float]], key: str) -> tuple[float, float]:
    """(best, median) of one timing over the measured rounds."""
    values = sorted(r[key] for r in records)
    return values[0], statistics.median(values)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the default config in part 2")
    parser.add_argument("--iwae-k", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--iwae-subset", type=int, default=None, help="first N test images for the IWAE NLL (default all)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: the fastest, measured)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="measured epochs per loop")
    parser.add_argument("--skip-quality", action="store_true", help="only run the speed comparison")
    args = parser.parse_args(argv)
    # Flush denormal floats to zero, for both loops alike. After a few epochs the logits of MNIST's
    # always-black border pixels are so negative that Adam squares gradients below 1e-38; denormal
    # arithmetic is microcoded and costs 15-20% of an epoch. The setting is per thread and OpenMP
    # workers inherit it only if it is made before the first parallel op, hence first thing here.
    torch.set_flush_denormal(True)

    device = torch.device(args.device)
    model_cfg = ModelConfig()  # 784-400-20, Bernoulli
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or fastest_thread_count(model_cfg, device, sorted({1, cores}))
    torch.set_num_threads(threads)
    raw = read_raw_dataset(mnist_dir(), "mnist")
    train_all = torch.from_numpy(raw.train_images.copy()).unsqueeze(1)  # (60000, 1, 28, 28) uint8
    test = torch.from_numpy(raw.test_images.copy()).unsqueeze(1)  # (10000, 1, 28, 28) uint8
    print(f"torch {torch.__version__}, device {device}, {threads} threads of {cores} cores, MNIST from {raw.directory}")

    # --- part 1: speed -----------------------------------------------------------------------
    speed_cfg = TrainConfig(epochs=1, batch_size=128, binarization="none", seed=0)  # grey targets, as the example
    train_flops, eval_flops = epoch_flops(build_model(model_cfg), 60_000, 10_000, 128, 1000, device)
    ours_model = build_model(model_cfg, seed=0)
    ours, base = [], []
    with tempfile.TemporaryDirectory() as tmp:
        loop = DataLoaderLoop(build_model(model_cfg, seed=0).to(device), torchvision_root(raw.directory, Path(tmp)), device, 0)
        for epoch in range(1, args.rounds + 2):
            ours.append(fit_one_more_epoch(ours_model, train_all, test, speed_cfg, epoch, device, Path(tmp) / "ckpt.pt"))
            base.append(loop.epoch())
            print(f"round {epoch - 1}{' (warm-up)' if epoch == 1 else ''}: fit {ours[-1]['seconds']:.2f} s, "
                  f"DataLoader {base[-1]['seconds']:.2f} s", flush=True)
    ours, base = ours[1:], base[1:]

    (ours_best, ours_median), (base_best, base_median) = summary(ours, "seconds"), summary(base, "seconds")
    ratio = base_best / ours_best
    print(f"\n== one epoch: 60,000 training + 10,000 evaluation images, batch 128, best (median) of {args.rounds} ==")
    for name, best, median, records in (("fit (tensor on device)", ours_best, ours_median, ours),
                                        ("DataLoader + ToTensor", base_best, base_median, base)):
        train_best = summary(records, "train_seconds")[0]
        print(
            f"{name:24s} {best:6.2f} s/epoch ({median:.2f})  training phase {train_best:.2f} s  "
            f"{(train_flops + eval_flops) / best / 1e9:6.1f} GFLOP/s overall, {train_flops / train_best / 1e9:6.1f} in training"
        )
    print(f"matmul FLOPs per epoch: training {train_flops / 1e9:.1f} GFLOP (forward + backward), evaluation {eval_flops / 1e9:.1f}")
    print(f"speedup: {ratio:.2f}x best-of-{args.rounds}, {base_median / ours_median:.2f}x median; training phase only "
          f"{summary(base, 'train_seconds')[0] / summary(ours, 'train_seconds')[0]:.2f}x")
    print(f"memory: {memory_report(device)} (process peak, both loops and the data)")

    # --- part 2: quality of the default config -------------------------------------------------
    if not args.skip_quality:
        store = build_store_arrays(raw, DataConfig().val_size, DataConfig().split_seed)
        train_x = torch.from_numpy(store["train/images"]).unsqueeze(1)  # (50000, 1, 28, 28) uint8
        val_x = torch.from_numpy(store["val/images"]).unsqueeze(1)  # (10000, 1, 28, 28) uint8
        cfg = TrainConfig(epochs=args.epochs)
        print(f"\n== default config, {args.epochs} epochs on 50,000 training images ==")
        t0 = time.perf_counter()
        model = build_model(model_cfg, seed=cfg.seed)
        history = fit(model, train_x, val_x, cfg, device)
        print(f"trained in {time.perf_counter() - t0:.1f} s ({statistics.median(history.metric('seconds')):.2f} s per epoch, "
              f"median, dynamic binarization, validation included); last epoch: train_neg_elbo={history.last['train_neg_elbo']:.2f} "
              f"val_neg_elbo={history.last['val_neg_elbo']:.2f}")
        gen = torch.Generator(device=device).manual_seed(1234)
        test_bin = torch.bernoulli(test.to(device).float().div_(255.0), generator=gen)  # (10000, 1, 28, 28) fixed draw
        model.eval()
        with torch.no_grad():
            sums = torch.zeros(3, device=device)
            for start in range(0, test_bin.shape[0], 1000):
                t = elbo_terms(model, test_bin[start : start + 1000], generator=gen)
                sums += torch.stack((t.neg_elbo, t.recon_nll, t.kl)) * test_bin[start : start + 1000].shape[0]
            neg_elbo, recon, kl = (sums / test_bin.shape[0]).tolist()
        print(f"test (binarized once, seed 1234): neg_elbo={neg_elbo:.2f} recon_nll={recon:.2f} kl={kl:.2f} nats")
        subset = test_bin[: args.iwae_subset] if args.iwae_subset else test_bin
        t0 = time.perf_counter()
        nll = iwae_nll(model, subset, k=args.iwae_k, device=device, generator=gen)
        print(f"test iwae_nll={nll.mean():.2f} nats (k={args.iwae_k}, {subset.shape[0]} images, "
              f"standard error {nll.std() / subset.shape[0] ** 0.5:.2f}) in {time.perf_counter() - t0:.1f} s")
        print(f"memory at the end: {memory_report(device)}")

    print(f"speedup_vs_dataloader={ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
