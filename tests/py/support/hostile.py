"""Hostile files for the parser and upload tests: quarry.dev.hostile, where bench/abuse.py finds them too."""

from __future__ import annotations

from quarry.dev.hostile import MIB, write_docx_bomb, write_hostile_files

__all__ = ["MIB", "write_docx_bomb", "write_hostile_files"]
