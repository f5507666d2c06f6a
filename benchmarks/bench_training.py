"""Benchmark: our tensor-on-device fit loop against the conventional DataLoader loop, then quality.

Part 1 times, in one process on the same 60,000 MNIST training images, one epoch (training plus
a pass over the 10,000 test images) of
  (a) `vae_pipeline.core.model.train.fit`: the dataset is one uint8 tensor, batches are index slices;
  (b) the conventional loop of pytorch/examples `vae/main.py`: torchvision's MNIST dataset with
      transforms.ToTensor() and a shuffling DataLoader (num_workers=0, as the example uses on
      CPU), the default Adam and a `loss.item()` per batch.
Both train the same 784-400-20 model from the same initial weights with the same loss
(`elbo_terms`, Bernoulli BCE on grey-value targets, batch 128), so the ratio measures the loop,
the data path and the optimizer, not the model. Each loop first runs one warm-up epoch; then
each repetition runs one epoch of each, back to back, in alternating order, so load from other
processes (this machine is shared) hits both alike. A repetition's ratio is DataLoader seconds
over fit seconds, and the reported speedup is the median of those ratios.

Part 2 trains the default configuration on the 50,000-image training split and reports the
negative ELBO and the IWAE NLL (Burda et al. 2015) on the test set binarized once with a seed.

Run: python benchmarks/bench_training.py [--rounds 5] [--threads N] [--skip-quality] [--epochs 10]
     [--iwae-k 5000] [--iwae-subset N] [--device cpu|cuda]
The last line is `speedup_vs_dataloader=<median ratio>`.
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

from vae_pipeline.core.data.idx import RAW_FILES, read_raw_dataset
from vae_pipeline.core.data.tensor_store import build_store_arrays
from vae_pipeline.core.model.config import DataConfig, ModelConfig, TrainConfig
from vae_pipeline.core.model.inference import iwae_nll
from vae_pipeline.core.model.losses import elbo_terms
from vae_pipeline.core.model.train import fit
from vae_pipeline.core.model.vae import VAE, build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
# Measured repetitions, each one epoch of each loop. Other processes' load comes and goes within
# minutes here, so single epochs vary by 2x and more; the median of five paired ratios is steady.
DEFAULT_ROUNDS = 5


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


def fastest_thread_count(
    model_cfg: ModelConfig, device: torch.device, candidates: list[int], trials: int = 3
) -> tuple[int, dict[int, float]]:
    """The intra-op thread count that runs a training step fastest right now, and each count's median s/step.

    On a 2-core machine shared with other processes, OpenMP threads that wait at barriers for a
    descheduled sibling can make 2 threads many times slower than 1 (a fused Adam step measured
    1.2 ms on 1 thread and 11-85 ms on 2 under a load of 4), so this is measured, not assumed,
    before every repetition; both loops of that repetition then run with the same count. A larger
    count must be at least 10% faster to be chosen: its cost swings with the load, and a count that
    wins a one-second trial by a hair can lose a whole epoch several times over.
    """
    x = torch.rand(128, 1, 28, 28, device=device)
    model = build_model(model_cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)

    def steps(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            optimizer.zero_grad()
            elbo_terms(model, x, generator=gen).loss.backward()
            optimizer.step()
        return (time.perf_counter() - t0) / n

    timings: dict[int, list[float]] = {t: [] for t in candidates}
    for threads in candidates:  # the first steps at a count pay for thread start-up and allocation
        torch.set_num_threads(threads)
        steps(3)
    for _ in range(trials):
        for threads in candidates:
            torch.set_num_threads(threads)
            timings[threads].append(steps(8))
    medians = {t: statistics.median(v) for t, v in timings.items()}
    best = candidates[0]
    for threads in candidates[1:]:
        if medians[threads] < 0.9 * medians[best]:
            best = threads
    torch.set_num_threads(best)
    return best, medians


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


def median_of(records: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in records)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the default config in part 2")
    parser.add_argument("--iwae-k", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--iwae-subset", type=int, default=None, help="first N test images for the IWAE NLL (default all)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: the fastest, measured)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="measured repetitions (one epoch of each loop)")
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
    candidates = [args.threads] if args.threads else sorted({1, cores})

    def choose_threads() -> str:
        """Set the thread count for the next repetition; returns how it was chosen, for the log."""
        if len(candidates) == 1:
            torch.set_num_threads(candidates[0])
            return f"{candidates[0]} threads (--threads)"
        best, medians = fastest_thread_count(model_cfg, device, candidates)
        trial = ", ".join(f"{t}: {s * 1e3:.1f}" for t, s in medians.items())
        return f"{best} threads; ms/step by count {trial}"

    raw = read_raw_dataset(mnist_dir(), "mnist")
    train_all = torch.from_numpy(raw.train_images.copy()).unsqueeze(1)  # (60000, 1, 28, 28) uint8
    test = torch.from_numpy(raw.test_images.copy()).unsqueeze(1)  # (10000, 1, 28, 28) uint8
    print(f"torch {torch.__version__}, device {device}, intra-op threads chosen from {candidates} per repetition "
          f"({cores} cores), MNIST from {raw.directory}")

    # --- part 1: speed -----------------------------------------------------------------------
    speed_cfg = TrainConfig(epochs=1, batch_size=128, binarization="none", seed=0)  # grey targets, as the example
    train_flops, eval_flops = epoch_flops(build_model(model_cfg), 60_000, 10_000, 128, 1000, device)
    ours_model = build_model(model_cfg, seed=0)
    ours: list[dict[str, float]] = []
    base: list[dict[str, float]] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        loop = DataLoaderLoop(build_model(model_cfg, seed=0).to(device), torchvision_root(raw.directory, Path(tmp)), device, 0)
        checkpoint = Path(tmp) / "ckpt.pt"
        ours_epochs = 0

        def ours_epoch() -> dict[str, float]:
            nonlocal ours_epochs
            ours_epochs += 1
            return fit_one_more_epoch(ours_model, train_all, test, speed_cfg, ours_epochs, device, checkpoint)

        chosen = choose_threads()
        warm_ours, warm_base = ours_epoch(), loop.epoch()  # allocation, kernel selection, file caches
        print(f"warm-up ({chosen}): fit {warm_ours['seconds']:.2f} s, DataLoader {warm_base['seconds']:.2f} s", flush=True)
        for rep in range(args.rounds):
            chosen = choose_threads()
            if rep % 2 == 0:  # alternate which loop goes first, so a trend in the load favours neither
                o = ours_epoch()
                b = loop.epoch()
            else:
                b = loop.epoch()
                o = ours_epoch()
            ours.append(o)
            base.append(b)
            ratios.append(b["seconds"] / o["seconds"])
            print(f"repetition {rep + 1}/{args.rounds} ({chosen}): fit {o['seconds']:.2f} s/epoch, "
                  f"DataLoader {b['seconds']:.2f} s/epoch, ratio {ratios[-1]:.2f}", flush=True)

    ratio = statistics.median(ratios)
    ours_s, base_s = median_of(ours, "seconds"), median_of(base, "seconds")
    ours_train, base_train = median_of(ours, "train_seconds"), median_of(base, "train_seconds")
    print(f"\n== one epoch: 60,000 training + 10,000 evaluation images, batch 128, medians of {args.rounds} repetitions ==")
    for name, seconds, train_s in (("fit (tensor on device)", ours_s, ours_train), ("DataLoader + ToTensor", base_s, base_train)):
        print(
            f"{name:24s} {seconds:6.2f} s/epoch  training phase {train_s:.2f} s  "
            f"{(train_flops + eval_flops) / seconds / 1e9:6.1f} GFLOP/s overall, {train_flops / train_s / 1e9:6.1f} in training"
        )
    print(f"matmul FLOPs per epoch: training {train_flops / 1e9:.1f} GFLOP (forward + backward), evaluation {eval_flops / 1e9:.1f}")
    train_ratios = [b["train_seconds"] / o["train_seconds"] for o, b in zip(ours, base)]
    print(f"speedup: median {ratio:.2f}x (repetitions {min(ratios):.2f}x to {max(ratios):.2f}x); "
          f"training phase only {statistics.median(train_ratios):.2f}x")
    print(f"memory: {memory_report(device)} (process peak, both loops and the data)")

    # --- part 2: quality of the default config -------------------------------------------------
    if not args.skip_quality:
        store = build_store_arrays(raw, DataConfig().val_size, DataConfig().split_seed)
        train_x = torch.from_numpy(store["train/images"]).unsqueeze(1)  # (50000, 1, 28, 28) uint8
        val_x = torch.from_numpy(store["val/images"]).unsqueeze(1)  # (10000, 1, 28, 28) uint8
        cfg = TrainConfig(epochs=args.epochs)
        print(f"\n== default config, {args.epochs} epochs on 50,000 training images ({choose_threads()}) ==")
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
