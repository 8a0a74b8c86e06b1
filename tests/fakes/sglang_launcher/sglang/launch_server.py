"""`python -m sglang.launch_server` for tests: the fake server with the same flags."""

from tests.fakes.fake_sglang import main

if __name__ == "__main__":
    main()
