"""The fast path: Triton kernels with PyTorch fallbacks, the DiT model and the trainer. Never imports pyro."""
