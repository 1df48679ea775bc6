"""Helpers of the test suite (no tests here), one module a kind: `paths`, `models` (tiny models, the official
module re-typed), `datasets` (builders of each benchmark's original layout), `cli` (one way to run the commands,
readers of what they write). Fixtures are in tests/conftest.py; test modules import helpers from here, never from
each other."""
