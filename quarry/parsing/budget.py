"""What one text extraction may cost: memory for all parse children together, time per parse, text out."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
# A parse child has every parser imported before it starts: about 200 MiB of address space.
MIN_CHILD_MIB = 320


@dataclass(frozen=True)
class ExtractionBudget:
    """memory_mib for all parse children together, shared equally by processes; one parse ends after timeout_seconds."""

    memory_mib: int
    processes: int
    timeout_seconds: float
    max_text_chars: int

    @property
    def child_mib(self) -> int:
        return self.memory_mib // self.processes

    @property
    def child_address_space(self) -> int:
        return self.child_mib * MIB

    def exceeded_reason(self) -> str:
        return (
            "The file is too large or too complex to extract (it needed more than "
            f"{self.child_mib:,} MiB of memory or {self.timeout_seconds:g} seconds)."
        )
