"""Entropy coding: frozen integer tables, the Irwin-Hall residual law, the learned factorized density, rANS."""
