"""Unit-test set-up: the shared hypothesis profiles (derandomized in CI)."""

from lacss_core.conformance import profiles

profiles.load()
