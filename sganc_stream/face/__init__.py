"""Face geometry: landmarks, FFHQ alignment, tracking and paste-back.

Read in pipeline order: landmarks.py (68 points) → ffhq_quad.py (the FFHQ recipe's quad) → smoothing.py (One-Euro on
the quad) → crop.py (cut and resample) → tracker.py (per-frame driver; identity.py tells faces apart) → paste_back.py
(inverse, blended over the face only).
"""

from sganc_stream.face.crop import FaceCropper
from sganc_stream.face.ffhq_quad import Quad, quad_from_landmarks
from sganc_stream.face.paste_back import PasteBack, paste_back
from sganc_stream.face.tracker import AlignedFace, FaceFlags, VideoAligner

__all__ = ["AlignedFace", "FaceCropper", "FaceFlags", "PasteBack", "Quad", "VideoAligner", "paste_back",
           "quad_from_landmarks"]
