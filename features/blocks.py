"""The compiled form of the world's encoded blocks: where each declared feature's columns sit.

`compile_block` turns a block's declared encodings (`features/config.py`: numeric,
one-hot, count) into positions and vocabulary indexes once; `features/encoding.py` reads
features into blocks through them, for training and serving alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.config import Count, Encoding, Numeric, OneHot, World


@dataclass(frozen=True)
class OneHotSpec:
    feature: str
    offset: int
    index: dict[str, int]
    width: int
    other: int  # position of the `=other` column, -1 without one


@dataclass(frozen=True)
class NumericSpec:
    feature: str
    position: int
    clip_min: float | None
    clip_max: float | None
    log1p: bool

    def encode(self, value: float) -> float:
        if self.clip_min is not None:
            value = max(value, self.clip_min)
        if self.clip_max is not None:
            value = min(value, self.clip_max)
        return math.log1p(value) if self.log1p else value


@dataclass(frozen=True)
class CountSpec:
    feature: str
    position: int
    clip_max: int


@dataclass(frozen=True)
class BlockSpec:
    width: int
    numerics: tuple[NumericSpec, ...]
    one_hots: tuple[OneHotSpec, ...]
    counts: tuple[CountSpec, ...]

    def features(self) -> set[str]:
        return ({n.feature for n in self.numerics} | {h.feature for h in self.one_hots}
                | {k.feature for k in self.counts})

    def one_hot_of(self, feature: str) -> OneHotSpec | None:
        return next((h for h in self.one_hots if h.feature == feature), None)


def compile_block(world: World, encodings: Sequence[Encoding]) -> BlockSpec:
    """A block's declared encodings, in order, as column positions and vocabulary indexes."""
    numerics: list[NumericSpec] = []
    one_hots: list[OneHotSpec] = []
    counts: list[CountSpec] = []
    position = 0
    for encoding in encodings:
        width = len(encoding.columns(world))
        if isinstance(encoding, Numeric):
            numerics.append(NumericSpec(encoding.feature, position, encoding.clip_min,
                                        encoding.clip_max, encoding.transform == "log1p"))
        elif isinstance(encoding, OneHot):
            values = world.vocabulary(encoding.vocabulary)
            other = position + len(values) if encoding.unknown == "other" else -1
            one_hots.append(OneHotSpec(encoding.feature, position,
                                       {v: i for i, v in enumerate(values)}, width, other))
        elif isinstance(encoding, Count):
            counts.append(CountSpec(encoding.feature, position, encoding.clip_max))
        position += width
    return BlockSpec(position, tuple(numerics), tuple(one_hots), tuple(counts))


def set_one_hot(block: np.ndarray, h: OneHotSpec, value: Any) -> int:
    """Set `value`'s column of one-hot `h` in `block`; its code (-1 unknown)."""
    i = h.index.get(value, -1) if isinstance(value, str) else -1
    if i >= 0:
        block[h.offset + i] = 1.0
    elif h.other >= 0:
        block[h.other] = 1.0
    return i


def read_field(ctx: Any, name: str) -> Any:
    """A request context field by its declared name: the request model's attribute, or a key."""
    if isinstance(ctx, Mapping):
        return ctx.get(name)
    return getattr(ctx, name, None)


def number_of(raw: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> float:
    """Feature `name` of `raw` as a float, its default (else 0) when missing."""
    value = raw.get(name)
    if value is None:
        value = defaults.get(name, 0.0)
    return float(value)


def length_of(value: Any) -> int:
    """The length of a list feature (0 for anything else)."""
    return len(value) if isinstance(value, list | tuple) else 0
