"""Baselines for the bitrate-versus-g benchmark: pixel codecs through PyAV, and the naive latent coding.

Pixel codecs code the same aligned crops (RGB → yuv420p → codec → yuv420p → RGB) in low-delay settings: no
B-frames, one keyframe (the first), no lookahead, zerolatency tuning where the encoder has it, one thread (x265 also
one frame thread and one thread pool: by default it picks frame threads from the core count, which changed its bytes
between machines and runs). The rate is measured from the encoded packets (the elementary stream, no container), so it compares with our payload.

The naive latent coding is what the earlier GAN-compression papers did with W+: round each value to a fixed step,
store the integers, and compress them with a general-purpose compressor (zlib, bzip2), frame by frame (streamable)
or the whole clip at once (a lower bound, not streamable).
"""

from __future__ import annotations

import bz2
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from rd import quantize_fixed, smallest_int_dtype


@dataclass(frozen=True)
class PixelCodec:
    name: str
    encoder: str
    decoder: str
    raw_suffix: str  # elementary-stream file suffix for kept files ('' = not kept: needs a container)


PIXEL_CODECS = {
    "x264": PixelCodec("x264", "libx264", "h264", ".h264"),
    "x265": PixelCodec("x265", "libx265", "hevc", ".hevc"),
    "svtav1": PixelCodec("svtav1", "libsvtav1", "libdav1d", ""),
    "vp9": PixelCodec("vp9", "libvpx-vp9", "vp9", ""),
}


def low_delay_options(codec: str, frames: int) -> dict[str, str]:
    """Encoder options for low delay: one keyframe over ``frames`` frames, no B-frames, no lookahead."""
    if codec == "x264":
        return {"preset": "medium", "tune": "zerolatency",
                "x264-params": f"keyint={frames}:min-keyint={frames}:scenecut=0:bframes=0:rc-lookahead=0"}
    if codec == "x265":
        return {"preset": "medium", "tune": "zerolatency",
                "x265-params": f"keyint={frames}:min-keyint={frames}:scenecut=0:bframes=0:rc-lookahead=0:pools=1:frame-threads=1:log-level=error"}
    if codec == "svtav1":
        # pred-struct=1 is low delay; SVT-AV1 only allows CBR (rc=2) there
        return {"preset": "8", "svtav1-params": f"pred-struct=1:rc=2:keyint={frames}:scd=0"}
    if codec == "vp9":
        return {"deadline": "realtime", "cpu-used": "6", "lag-in-frames": "0", "auto-alt-ref": "0"}
    raise ValueError(f"unknown pixel codec {codec}")


@dataclass
class PixelResult:
    decoded: np.ndarray  # (n, S, S, 3) uint8
    packet_bytes: list[int]  # one entry per encoded packet, in decode order
    stream: bytes  # concatenated packets (the elementary stream)
    keyframes: int


def code_pixels(frames: np.ndarray, codec: str, target_kbps: float, fps: float) -> PixelResult:
    """Encode and decode ``frames`` (n, S, S, 3) uint8 at a target bitrate with the codec's low-delay settings."""
    spec = PIXEL_CODECS[codec]
    n, h, w = frames.shape[:3]
    rate = Fraction(fps).limit_denominator(1001)
    enc = av.CodecContext.create(spec.encoder, "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base, enc.framerate = 1 / rate, rate
    enc.bit_rate = int(target_kbps * 1000)
    enc.gop_size, enc.max_b_frames, enc.thread_count = n, 0, 1
    enc.options = low_delay_options(codec, n)
    packets = []
    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        packets += enc.encode(vf)
    packets += enc.encode(None)
    dec = av.CodecContext.create(spec.decoder, "r")
    dec.thread_count = 1
    out = []
    for p in packets:
        out += dec.decode(p)
    out += dec.decode(None)
    decoded = np.stack([f.to_ndarray(format="rgb24") for f in out])
    if decoded.shape != frames.shape:
        raise RuntimeError(f"{codec}: decoded {decoded.shape}, expected {frames.shape}")
    sizes = [p.size for p in packets]
    return PixelResult(decoded, sizes, b"".join(bytes(p) for p in packets), sum(p.is_keyframe for p in packets))


def keep_stream(result: PixelResult, codec: str, stem: Path) -> Path | None:
    """Write the elementary stream to ``stem`` + .h264/.hevc where the codec has a raw format; None otherwise."""
    suffix = PIXEL_CODECS[codec].raw_suffix
    if not suffix:
        return None
    out = stem.with_name(stem.name + suffix)
    out.write_bytes(result.stream)
    return out


COMPRESSORS = {"zlib": lambda b: zlib.compress(b, 9), "bzip2": lambda b: bz2.compress(b, 9)}


def naive_code(latents: np.ndarray, step: float, compressor: str) -> dict[str, Any]:
    """Naive coding of W+ ``(n, rows, width)``: bytes of each frame (``frame_bytes``) and their mean, bytes of the
    whole clip at once, the decoded W+ (``recon``, float64) and the latent MSE it leaves."""
    q = quantize_fixed(latents, step)
    dt = smallest_int_dtype(q)
    qi = q.astype(dt)
    compress = COMPRESSORS[compressor]
    per_frame = [len(compress(f.tobytes())) for f in qi]
    recon = q.astype(np.float64) * step
    return {"step": step, "compressor": compressor, "dtype": dt.name, "frame_bytes": per_frame,
            "bytes_per_frame": float(np.mean(per_frame)), "clip_bytes": len(compress(qi.tobytes())),
            "recon": recon, "latent_mse": float(np.mean((recon - latents) ** 2))}
