"""Quarry's HTTP gateway: a thin Starlette layer over Postgres."""
