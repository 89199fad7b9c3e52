"""The output file's memory: one 8-byte slot per item index saying where its record is (never the record)."""
from __future__ import annotations

from array import array
from typing import Iterator, Tuple

__all__ = ["IndexTable"]


class IndexTable:
    """index → byte offset of the record compaction keeps (the latest finished one, else the latest error).

    One `array('q')` slot per index (8 bytes): a finished record is stored as its offset, an error
    record as `-offset - 2`, no record as -1. Not thread-safe on its own (the checkpoint locks it).
    """

    def __init__(self) -> None:
        self._slots = array("q")
        self.done_count = 0

    def get(self, index: int) -> Tuple[int, bool]:
        """(offset, finished) of the record kept for `index`; offset -1 when there is none."""
        slot = self._slots[index] if index < len(self._slots) else -1
        return (slot, True) if slot >= 0 else (-slot - 2 if slot < -1 else -1, False)

    def __contains__(self, index: object) -> bool:
        """True when `index` has a finished record."""
        return isinstance(index, int) and 0 <= index < len(self._slots) and self._slots[index] >= 0

    def __len__(self) -> int:
        return self.done_count

    def __iter__(self) -> Iterator[int]:
        """Finished indexes, ascending."""
        return (i for i, slot in enumerate(self._slots) if slot >= 0)

    def note(self, index: int, offset: int, done: bool) -> bool:
        """Remember a record at `offset`; True when it supersedes (or is superseded by) another one."""
        if index >= len(self._slots):
            self._slots.extend(array("q", [-1]) * (index + 1 - len(self._slots)))
        slot = self._slots[index]
        if slot >= 0 and not done:
            return True  # an error after a success (never written by us): the success stays
        if done and slot < 0:
            self.done_count += 1
        self._slots[index] = offset if done else -offset - 2
        return slot != -1

    def forget(self, index: int) -> bool:
        """Count `index` as not finished (a redo); returns False, the `done` flag to note its record with."""
        if index in self:
            self._slots[index] = -1
            self.done_count -= 1
        return False

    def kept(self) -> Iterator[Tuple[int, int]]:
        """(index, offset) of every kept record, by index."""
        for index, slot in enumerate(self._slots):
            if slot != -1:
                yield index, slot if slot >= 0 else -slot - 2

    def has(self, index: int) -> bool:
        """True when `index` has any record (finished or not)."""
        return 0 <= index < len(self._slots) and self._slots[index] != -1


class IndexSet:
    """A set of item indexes as a bitmap: one bit per index up to the largest. Not thread-safe on its own."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self._count = 0

    def add(self, index: int) -> None:
        byte, mask = index >> 3, 1 << (index & 7)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        if not self._bits[byte] & mask:
            self._bits[byte] |= mask
            self._count += 1

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0:
            return False
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        """The indexes, ascending."""
        for byte, bits in enumerate(self._bits):
            if bits:
                for bit in range(8):
                    if bits >> bit & 1:
                        yield byte * 8 + bit
