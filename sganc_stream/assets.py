"""Models shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from sganc_stream.errors import InputError

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_LATENT_CODEC = ASSETS / "latent_codec_synthetic.safetensors"
DEFAULT_FACE_MODEL = ASSETS / "default_face_model.safetensors"


def default_latent_codec() -> Path:
    """The default latent codec (trained on synthetic 18x512 sequences until the face model ships)."""
    if not DEFAULT_LATENT_CODEC.is_file():
        raise InputError(f"default latent codec missing from the installation ({DEFAULT_LATENT_CODEC})")
    return DEFAULT_LATENT_CODEC


def default_face_model() -> Path:
    """The embedded face model bundle (generator, encoder, latent codec): the default of every video command."""
    if not DEFAULT_FACE_MODEL.is_file():
        raise InputError(f"default face model missing from the installation ({DEFAULT_FACE_MODEL}); pass --model")
    return DEFAULT_FACE_MODEL
