"""The schema version this code needs: the newest migration it was written against.

A test keeps this equal to the newest file in supabase/migrations, so the
check in /readyz works the same from a checkout or an installed package.
"""

SCHEMA_VERSION = "20261206005300"
