"""Hypothesis profiles shared by the conformance suite and the unit tests.

``ci`` (selected when ``CI`` is set) is derandomized so CI failures reproduce exactly; every
failure prints its ``@reproduce_failure`` blob. Select another with ``HYPOTHESIS_PROFILE``.
"""

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def load() -> str:
    settings.register_profile("ci", derandomize=True, max_examples=20, **_COMMON)
    settings.register_profile("dev", max_examples=30, **_COMMON)
    settings.register_profile("thorough", max_examples=300, **_COMMON)
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    return name
