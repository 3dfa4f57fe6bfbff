"""Quarry's background worker (procrastinate): ingest, Drive sync, export.

The jobs arrive with the ingestion issue; tenant work here goes through
gateway.db.act_as, exactly like the gateway's.
"""
