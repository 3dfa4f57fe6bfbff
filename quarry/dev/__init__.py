"""Development tooling: local database, dev signing key, token minting, dev runner.

None of it may run with QUARRY_ENV=production (see quarry.settings).
"""
