"""A stand-in `sglang` package for tests: with tests/fakes/sglang_launcher first on PYTHONPATH (and the repository
root after it), `python -m sglang.launch_server ...` runs the fake server (tests/fakes/fake_sglang.py)."""
