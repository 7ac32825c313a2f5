"""The live call: signaling, WebRTC data-channel transport, and the peer that sends and/or receives a face.

``signaling`` pairs two peers (aiohttp rooms with a token, or copy-paste SDP); ``transport`` carries the
bitstream's packets over one unreliable, unordered data channel with pacing, keyframe requests and the
parameter handshake; ``media`` reads cameras/clips and shows or records frames; ``session`` runs one peer of a
call on top of the pipeline's FrameEncoder / FrameDecoder; ``loopback`` lets calls run on 127.0.0.1 only.
"""
