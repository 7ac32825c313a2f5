"""Fuzz harness for sganc-stream: targets (targets.py), a libFuzzer runner (run.py), replay (replay.py).

The benchmark that runs it at scale is benchmarks/fuzz_campaign.py; found inputs become tests in tests/test_fuzz_regressions.py.
"""
