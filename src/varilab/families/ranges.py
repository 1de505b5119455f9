"""A numeric option's declared range. Every int or float option names one as its `check`, so a typo (1e9 for 1e-3,
an extra zero) is refused in one line before anything is built, never left to allocate until the process is killed.

    positive_int                     1 .. 1,000,000
    positive_int.upto(4096)          1 .. 4,096
    between(0, 1, open_lo=True)      (0, 1]
    positive.upto(10, also=("learned",))   a number in (0, 10], or the word "learned"

As a check (value -> error text or None) it refuses NaN, the infinities and every value outside; a list is checked
value by value."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    integer: bool = False
    open_lo: bool = False
    open_hi: bool = False
    also: tuple = ()  # words accepted beside numbers (e.g. "learned")
    below: str = ""  # how a value under lo is described ("a positive integer"); "" names the interval
    each: bool = False  # a list option: every value in the range, at least one value

    def upto(self, hi: float, **changes) -> Range:
        """The same range with another upper end (and any other field changed)."""
        return dataclasses.replace(self, hi=hi, **changes)

    def contains(self, v) -> bool:
        if isinstance(v, str):  # an option that takes a word or a number: "learned", "0.3"
            return v in self.also or (_number(v) is not None and self.contains(_number(v)))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            return False
        if self.integer and not float(v).is_integer():
            return False
        above_lo = v > self.lo if self.open_lo else v >= self.lo
        below_hi = v < self.hi if self.open_hi else v <= self.hi
        return above_lo and below_hi

    def interval(self) -> str:
        """'[1, 1,000,000]', '(0, 1)'; integers as integers."""
        return f"{'(' if self.open_lo else '['}{self._num(self.lo)}, {self._num(self.hi)}{')' if self.open_hi else ']'}"

    def __call__(self, v) -> str | None:
        if v is None:
            return None
        if self.each:
            if not isinstance(v, (list, tuple)) or not v:
                return f"must be one value or more, got {v}"
            return next((self._problem(x, v) for x in v if self._problem(x, v)), None)
        return self._problem(v, v)

    def _problem(self, x, given) -> str | None:
        if self.contains(x):
            return None
        words = "".join(f" or {w!r}" for w in self.also)
        x = _number(x) if isinstance(x, str) and _number(x) is not None else x
        number = isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)
        if number and self.below:
            if x <= self.lo if self.open_lo else x < self.lo:
                return f"must be {self.below}{words}, got {given}"
            if x >= self.hi if self.open_hi else x > self.hi:
                return f"must be at most {self._num(self.hi)}{words}, got {given}"
        if self.integer:
            return f"must be {'integers' if self.each else 'an integer'} in {self.interval()}{words}, got {given}"
        return f"must lie in {self.interval()}{words}, got {given}"

    def _num(self, x) -> str:
        return f"{int(x):,}" if self.integer or (float(x).is_integer() and abs(x) >= 1) else f"{x:g}"

    def __str__(self) -> str:
        return self.interval() + "".join(f" or {w!r}" for w in self.also)


def _number(text: str) -> float | int | None:
    """'3' -> 3, '0.5' -> 0.5, 'learned' -> None."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def between(lo: float, hi: float, *, integer: bool = False, open_lo: bool = False, open_hi: bool = False,
            also: tuple = ()) -> Range:
    """A two-sided range, described by its interval: "must lie in (0, 1)"."""
    return Range(lo, hi, integer=integer, open_lo=open_lo, open_hi=open_hi, also=also)


MILLION = 1_000_000
positive_int = Range(1, MILLION, integer=True, below="a positive integer")
non_negative_int = Range(0, MILLION, integer=True, below="a non-negative integer")
positive = Range(0, 1e6, open_lo=True, below="positive")
non_negative = Range(0, 1e6, below="non-negative")
unit_interval = between(0, 1, open_lo=True, open_hi=True)
positive_ints = Range(1, MILLION, integer=True, below="positive integers", each=True)
any_seed = Range(0, 2**32 - 1, integer=True, below="a non-negative integer")  # what NumPy's and PyTorch's seeding accept
