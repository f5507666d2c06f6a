"""Benchmark: is the VAE's latent space more regular than the plain auto-encoder's? Full MNIST, default config.

Trains, on the 50,000-image training split (val_size 10,000, split_seed 0):
  - the default VAE: build_model(ModelConfig()), fit with TrainConfig() (10 epochs) on the CPU;
  - the plain auto-encoder: the same with variational=False;
  - the judge (core.evaluation.judge, JudgeConfig()), scored on the 10,000 test images.
Then prints, for the VAE prior N(0, I), the AE prior N(0, I) and the AE with a Gaussian fitted to
its training codes: Fréchet distance of judge features to the test images, mean max probability,
confident share and class coverage; the same at midpoints between test codes of different
classes; MMD and holes against N(0, I); the verdict sentence; and the seconds of each stage.

Run: python benchmarks/bench_regularity.py [--raw-dir /work/shared/mnist/raw] [--samples 2000]
     [--pairs 1000] [--seed 0] [--epochs 10] [--latent-dim 20] [--threads N] [--plots-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial
from pathlib import Path

import torch

from vae_pipeline.core.data.idx import read_raw_dataset
from vae_pipeline.core.data.tensor_store import Split, build_store_arrays
from vae_pipeline.core.evaluation import plots
from vae_pipeline.core.evaluation.judge import JudgeConfig, judge_outputs, train_judge
from vae_pipeline.core.evaluation.regularity import (
    CONFIDENT_PROB,
    HOLE_QUANTILE,
    SampleQuality,
    class_coverage,
    fit_gaussian,
    prior_fit,
    regularity_figures,
    regularity_verdict,
    sample_gaussian,
)
from vae_pipeline.core.model.config import DataConfig, ModelConfig, TrainConfig
from vae_pipeline.core.model.inference import active_units, decode_latents, encode_mean
from vae_pipeline.core.model.train import fit
from vae_pipeline.core.model.vae import build_model
from vae_pipeline.core.stopwatch import Stopwatch


def quality_row(name: str, q: SampleQuality) -> str:
    return f"{name:<34} {q.n:>6} {q.fd:>9.2f} {q.mean_max_prob:>13.3f} {q.confident_share:>15.3f} {q.class_coverage:>9.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-dir", default="/work/shared/mnist/raw")
    parser.add_argument("--samples", type=int, default=2000, help="decoded prior / fitted-Gaussian draws per model")
    parser.add_argument("--pairs", type=int, default=1000, help="midpoints between different-class test codes per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-dim", type=int, default=ModelConfig().latent_dim,
                        help="2 also writes the decoded quantile-grid manifolds and the code scatters (with --plots-dir)")
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="VAE / AE epochs (default: TrainConfig's)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads; on a CPU shared with other jobs 1 avoids OpenMP oversubscription "
        "(measured: a judge step took 416 ms at 2 threads vs 106 ms at 1 under load)",
    )
    parser.add_argument("--plots-dir", type=Path, default=None, help="write the comparison PNGs here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    watch = Stopwatch()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    with watch("load data"):
        data_cfg = DataConfig()
        arrays = build_store_arrays(read_raw_dataset(args.raw_dir), data_cfg.val_size, data_cfg.split_seed)
        splits = {
            name: Split(*(torch.from_numpy(arrays[f"{name}/{key}"]) for key in ("images", "labels", "index")))
            for name in ("train", "val", "test")
        }
        train_x, val_x, test_x = (splits[n].float_images() for n in ("train", "val", "test"))  # (n, 1, 28, 28)
        train_y, test_y = splits["train"].labels, splits["test"].labels

    models = {}
    train_cfg = dataclasses.replace(TrainConfig(), epochs=args.epochs)
    vae_cfg = dataclasses.replace(ModelConfig(), latent_dim=args.latent_dim)
    for name, model_cfg in (("vae", vae_cfg), ("ae", dataclasses.replace(vae_cfg, variational=False))):
        with watch(f"train {name} ({train_cfg.epochs} epochs)"):
            model = build_model(model_cfg, seed=train_cfg.seed)
            history = fit(model, train_x, val_x, train_cfg, device)
            models[name] = model.eval()
        print(f"{name}: val negative ELBO {history.last['val_neg_elbo']:.2f} nats after {len(history)} epochs, "
              f"{active_units(encode_mean(model, val_x, device=device)[0])} of {model.latent_dim} units active")

    judge_cfg = JudgeConfig()
    with watch("train judge"):
        judge = train_judge(train_x, train_y, judge_cfg, device)
    with watch("judge test accuracy + reference features"):
        reference, test_probs = judge_outputs(judge, test_x, device)  # (10000, k), (10000, 10)
        test_accuracy = float((test_probs.argmax(1) == test_y).double().mean())  # as judge.accuracy, without a second pass
    print(
        f"judge: test accuracy {test_accuracy:.4f} (floor {judge_cfg.min_test_accuracy}), trained "
        f"{watch.seconds['train judge']:.1f} s on {len(train_x)} training images; on real test digits: mean max "
        f"prob {test_probs.max(1).values.mean():.3f}, confident share (>= {CONFIDENT_PROB}) "
        f"{(test_probs.max(1).values >= CONFIDENT_PROB).double().mean():.3f}, class coverage "
        f"{class_coverage(test_probs.argmax(1)):.4f}"
    )

    figures, codes = {}, {}
    for name, model in models.items():
        with watch(f"encode {name} (train + test)"):
            mu_train, logvar_train = encode_mean(model, train_x, device=device)  # (50000, d) each; logvar None for the AE
            mu_test, _ = encode_mean(model, test_x, device=device)  # (10000, d)
            codes[name] = (mu_train, logvar_train)
        with watch(f"regularity figures {name}"):
            figures[name] = regularity_figures(
                judge, partial(decode_latents, model, device=device), mu_train, logvar_train, mu_test, test_y,
                reference, device, seed=args.seed, n_samples=args.samples, n_pairs=args.pairs,
            )
    regular, sentence = regularity_verdict(figures["vae"], figures["ae"], figures["ae"].fitted)

    vae, ae = figures["vae"], figures["ae"]
    print()
    print(f"{'decoded images':<34} {'n':>6} {'FD':>9} {'mean max prob':>13} {'confident share':>15} {'coverage':>9}")
    print(quality_row("VAE reconstructions (test codes)", vae.reconstructions))
    print(quality_row("AE reconstructions (test codes)", ae.reconstructions))
    print(quality_row("VAE prior N(0, I)", vae.prior))
    print(quality_row("AE prior N(0, I)", ae.prior))
    print(quality_row("AE fitted full-cov Gaussian", ae.fitted))
    print(quality_row("VAE fitted full-cov Gaussian", vae.fitted))
    print(quality_row("VAE midpoints (t = 0.5)", vae.midpoints))
    print(quality_row("AE midpoints (t = 0.5)", ae.midpoints))
    print()
    print("training codes as the decoder saw them: one z ~ q(z|x) per image for the VAE, the code for the AE")
    print(f"{'codes vs N(0, I)':<34} {'MMD^2':>9} {'bandwidth':>10} {'holes':>8} {'hole radius':>12} {'codes':>6} {'draws':>6}")
    vae_means = prior_fit(codes["vae"][0], args.seed)  # the brief's protocol: means, not draws; see training_codes
    for name, p in (("VAE training codes z ~ q(z|x)", vae.prior_fit), ("VAE training means mu", vae_means),
                    ("AE training codes", ae.prior_fit)):
        print(f"{name:<34} {p.mmd2:>9.4f} {p.bandwidth:>10.3f} {p.holes_share:>8.1%} {p.hole_radius:>12.3f} {p.n_codes:>6} {p.n_draws:>6}")
    print(f"(holes: prior draws farther from every code than the {HOLE_QUANTILE:.0%} quantile of code-to-nearest-code distances)")
    print()
    print(f"verdict: {regular}: {sentence}")

    if args.plots_dir is not None:
        with watch("plots"):
            generator = torch.Generator().manual_seed(args.seed)
            n_show = 100
            panels = []
            for title, model, z in (
                (f"VAE, N(0, I): FD {vae.prior.fd:.1f}", models["vae"], torch.randn(n_show, models["vae"].latent_dim, generator=generator)),
                (f"AE, N(0, I): FD {ae.prior.fd:.1f}", models["ae"], torch.randn(n_show, models["vae"].latent_dim, generator=generator)),
                (f"AE, fitted Gaussian: FD {ae.fitted.fd:.1f}", models["ae"],
                 sample_gaussian(fit_gaussian(codes["ae"][0]), n_show, generator)),  # the AE's codes are its means
            ):
                panels.append((title, decode_latents(model, z, device)))
            written = [plots.image_panels_png(panels, args.plots_dir / "prior_samples_vae_vs_ae.png", nrow=10)]
            if args.latent_dim == 2:
                n_grid = 20
                grid = torch.from_numpy(plots.gaussian_quantile_grid(n_grid)).float()  # (n_grid^2, 2)
                written.append(plots.image_panels_png(
                    [(f"{name.upper()}: decoded Gaussian quantiles", decode_latents(models[name], grid, device))
                     for name in ("vae", "ae")],
                    args.plots_dir / "manifold_vae_vs_ae.png", nrow=n_grid,
                ))
                written.append(plots.latent_scatter_panels_png(
                    [(f"{name.upper()}: test codes", encode_mean(models[name], test_x, device=device)[0], test_y)
                     for name in ("vae", "ae")],
                    args.plots_dir / "codes_vae_vs_ae.png",
                ))
        for path in written:
            print(f"wrote {path}")

    print()
    print("seconds per stage:")
    for name, seconds in watch.seconds.items():
        print(f"  {name:<44} {seconds:7.1f}")
    evaluation = sum(s for n, s in watch.seconds.items() if n.startswith(("regularity", "judge test")))
    print(f"  {'evaluation (reference features + figures)':<44} {evaluation:7.1f}")
    print(f"  {'total':<44} {sum(watch.seconds.values()):7.1f}")


if __name__ == "__main__":
    main()
