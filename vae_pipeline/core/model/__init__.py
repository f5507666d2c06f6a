"""The VAE itself: configs, the network, its losses in nats, training with checkpoints, inference, device and memory."""
