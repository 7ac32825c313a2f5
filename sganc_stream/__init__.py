"""sganc-stream: a generative face-video codec (StyleGAN2 W+ → flow T → rANS)."""

__version__ = "0.1.0"
