"""Quarry's background worker (procrastinate): jobs only.

Each domain's tasks live in a module of their own (worker/ingest.py), listed
in worker/app.py; the work itself is the core's (quarry/), done for the job's
tenant through act_as exactly like a request through the gateway.
"""
