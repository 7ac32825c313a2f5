"""Bitstream v1: packets (msgpack records) and the .sgnc container; see bitstream_spec/SPEC.md."""
