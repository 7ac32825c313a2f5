"""Models shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from sganc_stream.errors import InputError

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_LATENT_CODEC = ASSETS / "latent_codec_synthetic.safetensors"
DEFAULT_FACE_MODEL = ASSETS / "default_face_model.safetensors"
# 4 s (100 frames, 450x450, 25 fps, H.264, no audio) of President Obama's Oval Office address, from
# ../shared/data/clips/edtalk/uncrop_Obama.mp4 (EDTalk's test data): a work of the US federal government, so in the
# public domain. The demo's default input. Obama is a validation identity: the face model never trained on him.
DEMO_CLIP = ASSETS / "demo_obama.mp4"


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


def demo_clip() -> Path:
    """The bundled public-domain demo clip (see ``DEMO_CLIP``)."""
    if not DEMO_CLIP.is_file():
        raise InputError(f"demo clip missing from the installation ({DEMO_CLIP}); pass --input")
    return DEMO_CLIP
