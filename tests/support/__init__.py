"""Test support shared by unit, dist and e2e tests and by the benchmarks (not library code).

Pytest puts `tests/` on sys.path (its root conftest sits there, outside any package), so tests
import `support.shards` directly; scripts run outside pytest add `tests/` themselves.
"""
