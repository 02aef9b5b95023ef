"""The conformance suite: every ``lacss_core.ops`` function against its ``lacss_core.oracle`` twin.

Run it for the current backend with ``pytest --pyargs lacss_core.conformance`` or for every
installed backend with ``python -m lacss_core.conformance``.
"""
