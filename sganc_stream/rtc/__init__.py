"""The live call: pairing, the WebRTC data-channel protocol, and the peer that sends and/or receives a face.

``signaling`` is the pairing server (aiohttp rooms with a token) and copy-paste lines; ``pairing`` puts both behind
one signaling interface and turns descriptions into connections; ``channel`` is the data channel behind one small
interface (plus loss injection and an in-process test transport); ``transport`` is the call protocol (hello,
redundancy, gaps, keyframe requests; SPEC.md §8); ``worker`` runs the model off the event loop; ``media`` reads
cameras/clips and shows or records frames; ``session`` is the peer; ``stats`` its log; ``wire`` the one wire-cost
formula; ``loopback`` lets calls run on 127.0.0.1 only.
"""
