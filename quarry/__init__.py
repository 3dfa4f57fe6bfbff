"""Quarry's shared core: everything the gateway (HTTP) and the worker (jobs) both use.

Nothing here imports gateway/ or worker/ (tests/py/test_layout.py); see the
README, "What runs where".
"""
