"""Whole latent sequences (latent/sequence.py): decimation and the decoder's interpolation (bitstream v5)."""

import numpy as np
import pytest

from sganc_stream.bitstream.container import decode_container
from sganc_stream.latent.codec import StreamParams
from sganc_stream.latent.sequence import decode_bytes, encode_sequence, interpolate, interpolated_frames
from sganc_stream.latent.synthetic import synthetic_latents

from conftest import TINY_ROWS, TINY_WIDTH


def test_interpolate_rule():
    """Linear between two face packets; held before an intra packet, around a no-face packet and after the last."""
    p = np.array([[[0.0]], [[3.0]], [[np.nan]], [[6.0]], [[9.0]], [[12.0]]], np.float32)
    intra = [True, False, False, False, True, False]
    out, mask = interpolate(p, intra, 3)
    assert out[:, 0, 0].tolist()[:6] == [0.0, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert np.isnan(out[6:9]).all()  # the no-face packet: no face, and nothing drawn towards the next face
    assert out[9:12, 0, 0].tolist() == [6.0, 6.0, 6.0]  # packet 4 is intra: 6 held
    assert out[12:, 0, 0].tolist() == [9.0, 10.0, 11.0, 12.0, 12.0, 12.0]
    assert np.flatnonzero(mask).tolist() == [1, 2, 13, 14]
    same, none = interpolate(p, intra, 1)
    assert same is p and not none.any()


@pytest.mark.parametrize("d", [2, 3])
def test_decimated_stream_codes_every_dth_frame_and_decodes_to_the_recon(tiny_codec, d):
    lat = synthetic_latents("walk", 23, TINY_ROWS, TINY_WIDTH, seed=31)
    lat[9:11] = np.nan
    full = encode_sequence(tiny_codec, lat, StreamParams("open", 4, 1), fps=30.0)
    dec = encode_sequence(tiny_codec, lat, StreamParams("open", 4, 1, decimation=d), fps=30.0, new_faces=(16,))
    c = decode_container(dec.data)
    assert c.header.version == 5 and c.header.decimation == d and c.header.fps == 30.0 / d
    assert len(c.packets) == -(-23 // d) and len(dec.data) < len(full.data)
    out = decode_bytes(tiny_codec, dec.data)
    assert out.shape == (len(c.packets) * d, TINY_ROWS, TINY_WIDTH)
    assert np.array_equal(out, dec.recon, equal_nan=True)
    new = [k for k, p in enumerate(c.packets) if p.type.label == "new_face"]
    assert new == [-(-16 // d)]
    between = interpolated_frames(c)
    assert between and all(i % d for i in between)
    face = ~np.isnan(lat[:: d]).reshape(len(c.packets), -1).all(axis=1)
    assert [not np.isnan(out[k * d]).all() for k in range(len(c.packets))] == face.tolist()
    # the interpolated frames lie between their packets' decoded frames, closer to the truth than holding
    k = 1
    assert k * d + 1 in between
    held = np.mean((out[k * d] - lat[k * d + 1]) ** 2)
    assert np.mean((out[k * d + 1] - lat[k * d + 1]) ** 2) < held
