"""Test doubles that sit behind a real process boundary (HTTP), shared by the test folders."""
