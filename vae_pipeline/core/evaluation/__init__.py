"""What a trained model is judged on: the judge, regularity, probes, t-SNE, smoothness, reports, latents, plots."""
