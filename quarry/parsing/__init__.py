"""Uploads in, text out: content sniffing (`quarry.parsing.sniff`) and text
extraction (`quarry.parsing.extract`).

sniff runs at upload and raises UnsupportedDocument (HTTP 415); extract runs
in the worker and raises UnreadableDocument (the document fails with reason).
Import extract from its module where it is needed: it loads the PDF and Office
parsers, which the gateway never needs (a test checks that it does not load them).
The worker does not load them either: it extracts through quarry.parsing.pool,
in child processes with a memory and time budget (quarry.parsing.budget).
"""
