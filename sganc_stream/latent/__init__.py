"""Latent coding: the flow T, stage groups, the frozen codec model and the per-stream coder."""
