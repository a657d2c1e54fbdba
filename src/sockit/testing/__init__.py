"""Test helpers shipped as public API: fakes, memory streams and conformance suites.

* :mod:`sockit.testing.fakes`: a fake resolver and a fake socket factory with a virtual
  clock, for deterministic Happy Eyeballs and server tests.
* :mod:`sockit.testing.memory`: connected in-memory stream pairs.
* :mod:`sockit.testing.conformance`: ``check_stream`` / ``check_half_closeable_stream``,
  which every stream implementation (TCP, UNIX, socketpair, TLS, memory, aio) passes.

Nothing here is imported by ``import sockit``; import it in tests only.
"""
