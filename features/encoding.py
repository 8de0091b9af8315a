"""Raw features -> the model's float32 input matrix, compiled from the world's `model:` section.

One encoder serves training and serving so they cannot drift. `Encoder(world)` reads the
declared encodings and crosses once, into positions, vocabulary indexes and gather tables,
and then works on blocks in the world's column order:

    [ customer block | context block | action block | crosses ]

At decision time the customer and context blocks are one row each and are broadcast over
the candidates; the action block is encoded for the whole catalog ahead of time and
gathered by index; the crosses are one gather over the candidates. Each customer's
vector carries its affinity tables already transformed (`CustomerVector.crosses`; the
log applied), and each action row of the catalog carries, per cross column, where its
value sits in one decision's values (`ActionMatrix.cross_index`): in the customer's
tables at the action's value code, or among what the context and the basket give the
decision as a whole. No per-candidate Python runs, and nothing here names a feature of a
particular world: the basket, the affinity prefixes and the features the crosses read
all come from the declarations. Training passes one row per example for every block
(`Encoder.encode_examples`) and gets the same columns.

Unknown values: a one-hot with `unknown: other` sets its `<feature>=other` column, with
`zeros` leaves the block all zero; either way the value's code is -1, which the crosses
read as "no affinity, not in the basket". Missing features take `world.defaults`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from features.blocks import (
    OneHotSpec,
    compile_block,
    length_of,
    number_of,
    read_field,
    set_one_hot,
)
from features.config import (
    Affinity,
    BasketHas,
    BasketShare,
    CategoryField,
    IdListField,
    InBasket,
    NumberField,
    OneHot,
    World,
)

#: the request fields every world has, besides its declared `context`
REQUEST_FIELDS = ("channel", "placement")


@dataclass(frozen=True)
class CustomerVector:
    """One customer's encoded block, the affinity tables the crosses gather from, and the
    customer's value of each string feature (after the request's overrides)."""

    block: np.ndarray  # (customer columns,) float32
    #: one per affinity table of the encoder: the value per vocabulary entry, then a 0 that
    #: code -1 (an unknown value) reads
    affinities: tuple[np.ndarray, ...]
    labels: Mapping[str, str]
    #: the affinity crosses' tables, one after the other, as their columns read them (the
    #: log applied); None: derived from `affinities` when needed
    crosses: np.ndarray | None = field(default=None, compare=False, repr=False)


class ContextVector(NamedTuple):
    """The request's encoded block and the value codes the context affinities gather with
    (a tuple: one is built per decision, cheaper than a dataclass)."""

    block: np.ndarray  # (context columns,) float32
    codes: tuple[int, ...]  # one per context feature an affinity reads (-1 unknown)


@dataclass(frozen=True)
class ActionMatrix:
    """The encoded action block of a whole catalog, row i = action i."""

    ids: list[str]
    block: np.ndarray  # (n_actions, action columns) float32
    features: tuple[str, ...]  # the one-hot encoded action features, in `codes` order
    codes: tuple[np.ndarray, ...]  # per feature: (n_actions,) int64 index into its vocabulary, -1 unknown
    #: (n_actions, cross columns): where each cross value of an action sits in a decision's
    #: values (`Encoder.encode_candidates`); None: derived from `codes` when needed
    cross_index: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.ids)}

    def code(self, feature: str) -> np.ndarray:
        """Each action's value code of a one-hot encoded action `feature` (-1 unknown)."""
        return self.codes[self.features.index(feature)]


#: combinations of categorical context values whose encoded block is kept (validated
#: requests only name declared values, so this bounds what an odd world could hold)
MAX_CONTEXT_TEMPLATES = 4096


# crosses: (kind, column position, table or feature index, extra)
_AFFINITY_ACTION, _AFFINITY_CONTEXT, _SHARE, _IN_BASKET, _HAS = range(5)


@dataclass(frozen=True)
class _Cross:
    kind: int
    position: int
    width: int
    table: int = -1  # affinity: the customer's table
    code: int = -1  # affinity of an action feature: its code column; of the context: its code
    log_floor: float | None = None  # affinity with `log`: the floor
    basket_feature: int = -1  # share / has: index into the encoder's basket features


class Encoder:
    """The world's encoding, compiled once; see the module docstring."""

    def __init__(self, world: World) -> None:
        self.world = world
        model = world.model
        self.columns: list[str] = world.model_columns()
        self._customer = compile_block(world, model.customer)
        self._context = compile_block(world, model.context)
        self._action = compile_block(world, model.action)
        a = self._customer.width
        b = a + self._context.width
        c = b + self._action.width
        self._offsets = (a, b, c)

        customer_entity = world.customer_entity
        customer_features = world.features_of(customer_entity)
        self._customer_defaults: Mapping[str, Any] = world.defaults.get(customer_entity or "", {})
        self._action_defaults: Mapping[str, Any] = world.defaults.get(world.action_entity, {})
        self._labels = tuple(f for f, t in customer_features.items() if t == "string")

        context_defaults: dict[str, Any] = {}
        for name, spec in world.context.items():
            if isinstance(spec, CategoryField | NumberField):
                context_defaults[name] = spec.default
        #: context field -> (the customer feature it overrides, that feature's one-hot or None)
        self._overrides = tuple(
            (name, spec.overrides, self._customer.one_hot_of(spec.overrides))
            for name, spec in world.context.items()
            if isinstance(spec, CategoryField) and spec.overrides is not None
        )

        self.action_features = tuple(h.feature for h in self._action.one_hots)
        tables: list[tuple[str, str]] = []  # (prefix, vocabulary)
        self._context_code_features: list[OneHotSpec] = []
        basket_features: list[int] = []
        baskets: set[str] = set()
        crosses: list[_Cross] = []
        position = c
        for cross in model.crosses:
            width = len(world._cross_columns(cross))
            if isinstance(cross, Affinity):
                floor = cross.floor if cross.log else None
                if cross.of == "action":
                    vocabulary = world.action_vocabulary(cross.feature)
                    key = (cross.prefix, vocabulary)
                    if key not in tables:
                        tables.append(key)
                    crosses.append(_Cross(_AFFINITY_ACTION, position, width, tables.index(key),
                                          self.action_features.index(cross.feature), floor))
                else:
                    vocabulary = self._context_vocabulary(cross.feature)
                    key = (cross.prefix, vocabulary)
                    if key not in tables:
                        tables.append(key)
                    values = world.vocabulary(vocabulary)
                    self._context_code_features.append(
                        OneHotSpec(cross.feature, 0, {v: i for i, v in enumerate(values)}, 0, -1))
                    crosses.append(_Cross(_AFFINITY_CONTEXT, position, width, tables.index(key),
                                          len(self._context_code_features) - 1, floor))
            elif isinstance(cross, BasketShare | BasketHas):
                baskets.add(cross.basket)
                k = self.action_features.index(self._coded(cross.feature))
                if k not in basket_features:
                    basket_features.append(k)
                kind = _SHARE if isinstance(cross, BasketShare) else _HAS
                crosses.append(_Cross(kind, position, width, code=k,
                                      basket_feature=basket_features.index(k)))
            elif isinstance(cross, InBasket):
                baskets.add(cross.basket)
                crosses.append(_Cross(_IN_BASKET, position, width))
            position += width
        if len(baskets) > 1:
            raise ValueError(f"model.crosses read {len(baskets)} baskets ({sorted(baskets)}); "
                             "the encoder supports one")
        #: the id_list context field the basket crosses read (None: no basket cross)
        self.basket: str | None = next(iter(baskets), None)
        if self.basket is not None:
            assert isinstance(world.context[self.basket], IdListField)
        self._tables = tuple((prefix, tuple(f"{prefix}{v}" for v in world.vocabulary(vocabulary)))
                             for prefix, vocabulary in tables)
        self._basket_features = tuple(basket_features)
        self._basket_widths = tuple(len(self._action.one_hots[k].index) for k in basket_features)
        self._crosses = tuple(crosses)
        self._empty_context_codes = tuple(-1 for _ in self._context_code_features)
        read = self._context.features() | {h.feature for h in self._context_code_features}
        #: (context field, its default) of every field the context block or a cross reads
        self._context_reads = tuple((name, context_defaults.get(name)) for name in world.context
                                    if name in read)
        #: the categorical values a context block depends on, in a fixed order
        self._context_keys = tuple(dict.fromkeys(
            [h.feature for h in self._context.one_hots]
            + [h.feature for h in self._context_code_features]))
        self._context_templates: dict[tuple[Any, ...], ContextVector] = {}
        self._compile_gather(position)
        self.defaults = self.encode_customer({})
        self.encoding: dict[str, Any] = self._describe()

    def _compile_gather(self, width: int) -> None:
        """Where each cross column reads its value in a decision's values, which are

            [ customer block | context block | customer's cross tables | decision values ]

        The customer's cross tables (`CustomerVector.crosses`): each affinity cross's
        table, the code -1 reading its last entry. The decision values: each context
        affinity's value, each basket_has's columns, each basket_share's table over the
        basket feature's codes (and a 0 for code -1), and a last 0 (in_basket, set after).
        """
        assert width == len(self.columns)
        segments: dict[int, tuple[int, int]] = {}  # cross position -> (start, length)
        start = 0
        for x in self._crosses:
            if x.kind in (_AFFINITY_ACTION, _AFFINITY_CONTEXT):
                length = len(self._tables[x.table][1]) + 1
                segments[x.position] = (start, length)
                start += length
        self._segments = segments
        slots: dict[int, int] = {}  # cross position -> its first decision value
        n = 0
        for x in self._crosses:
            if x.kind in (_AFFINITY_CONTEXT, _HAS, _SHARE):
                slots[x.position] = n
                n += x.width if x.kind != _SHARE else self._basket_widths[x.basket_feature] + 1
        self._slots = slots
        self._n_values = n + 1
        self._base = self._offsets[1] + start  # where the decision values begin
        #: (value, start, length, context code) of each context affinity
        self._context_values = tuple((slots[x.position], *segments[x.position], x.code)
                                     for x in self._crosses if x.kind == _AFFINITY_CONTEXT)
        #: (first value, width, basket feature, share?) of each basket cross read per decision
        self._basket_values = tuple(
            (slots[x.position], self._basket_widths[x.basket_feature], x.basket_feature, x.kind == _SHARE)
            for x in self._crosses if x.kind in (_HAS, _SHARE))
        self._in_basket = tuple(x.position for x in self._crosses if x.kind == _IN_BASKET)

    def _customer_crosses(self, tables: Sequence[np.ndarray]) -> np.ndarray:
        """A customer's cross tables (see `_compile_gather`)."""
        parts = [tables[x.table] if x.log_floor is None else np.log(np.maximum(tables[x.table], x.log_floor))
                 for x in self._crosses if x.kind in (_AFFINITY_ACTION, _AFFINITY_CONTEXT)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def _cross_index(self, codes: Sequence[np.ndarray], n: int) -> np.ndarray:
        """Per action row and cross column, where its value sits (see `_compile_gather`)."""
        c = self._offsets[2]
        b, base = self._offsets[1], self._base
        index = np.empty((n, len(self.columns) - c), dtype=np.int32)
        for x in self._crosses:
            q = x.position - c
            if x.kind == _AFFINITY_ACTION:
                start, length = self._segments[x.position]
                index[:, q] = b + start + np.where(codes[x.code] >= 0, codes[x.code], length - 1)
            elif x.kind == _AFFINITY_CONTEXT:
                index[:, q] = base + self._slots[x.position]
            elif x.kind == _HAS:
                index[:, q:q + x.width] = base + self._slots[x.position] + np.arange(x.width)
            elif x.kind == _SHARE:
                unknown = self._basket_widths[x.basket_feature]
                index[:, q] = base + self._slots[x.position] + np.where(codes[x.code] >= 0, codes[x.code], unknown)
            else:
                index[:, q] = base + self._n_values - 1
        return index

    def _describe(self) -> dict[str, Any]:
        """What the encoding depends on, as plain JSON: the `model:` section's blocks and
        crosses, the vocabularies and context fields they read, the defaults of the
        features they read. Manifests record it (and its fingerprint); a change to any of
        it changes what a column means."""
        world = self.world
        model = world.model.model_dump(mode="json", exclude={"feature_service"})
        vocabularies = sorted({
            *(e.vocabulary for block in (world.model.customer, world.model.context, world.model.action)
              for e in block if isinstance(e, OneHot)),
            *(world.action_vocabulary(x.feature) for x in world.model.crosses
              if isinstance(x, BasketHas | BasketShare) or (isinstance(x, Affinity) and x.of == "action")),
            *(self._context_vocabulary(x.feature) for x in world.model.crosses
              if isinstance(x, Affinity) and x.of == "context"),
        })
        read_customer = self._customer.features() | {f for _, features in self._tables for f in features}
        read_action = self._action.features()
        defaults = {
            "customer": {f: v for f, v in self._customer_defaults.items() if f in read_customer},
            "action": {f: v for f, v in self._action_defaults.items() if f in read_action},
        }
        fields = {name for name, _ in self._context_reads} | {name for name, _, _ in self._overrides}
        if self.basket is not None:
            fields.add(self.basket)
        return {
            **model,
            "vocabularies": {name: world.vocabulary(name) for name in vocabularies},
            "context_fields": {name: world.context[name].model_dump(mode="json", exclude={"description"})
                               for name in world.context if name in fields},
            "defaults": defaults,
        }

    # -- vocabularies the crosses index ----------------------------------------------------
    def _coded(self, feature: str) -> str:
        if feature not in self.action_features:
            raise ValueError(f"no one_hot encoding of action feature {feature!r} names its vocabulary")
        return feature

    def _context_vocabulary(self, feature: str) -> str:
        encoding = self.world.model.one_hot("context", feature)
        if encoding is not None:
            return encoding.vocabulary
        if feature == "channel":
            return "channels"
        if feature == "placement":
            return "placements"
        spec = self.world.context.get(feature)
        if isinstance(spec, CategoryField):
            return spec.vocabulary
        raise ValueError(f"context feature {feature!r} has no vocabulary to take an affinity over")

    # -- customers ------------------------------------------------------------------------
    def encode_customer(self, raw: Mapping[str, Any], ctx: Any = None) -> CustomerVector:
        """Encode one customer's raw features (missing ones take the world's defaults).

        `ctx`, when given, is the request context: a field that `overrides` a customer
        feature replaces it when the request names it.
        """
        d = self._customer_defaults
        spec = self._customer
        block = np.zeros(spec.width, dtype=np.float32)
        for n in spec.numerics:
            block[n.position] = n.encode(number_of(raw, n.feature, d))
        for h in spec.one_hots:
            set_one_hot(block, h, raw.get(h.feature) or d.get(h.feature))
        for k in spec.counts:
            block[k.position] = min(length_of(raw.get(k.feature)), k.clip_max)
        tables = tuple(
            np.array([*(number_of(raw, f, d) for f in features), 0.0], dtype=np.float32)
            for _, features in self._tables
        )
        labels = {}
        for f in self._labels:
            value = raw.get(f) or d.get(f)
            labels[f] = "" if value is None else str(value)
        customer = CustomerVector(block, tables, labels, self._customer_crosses(tables))
        return customer if ctx is None else self.with_context(customer, ctx)

    def with_context(self, customer: CustomerVector, ctx: Any) -> CustomerVector:
        """`customer` with the request's overriding fields applied (none named: unchanged).

        Equal to encoding the raw features again with `ctx`, without doing so: the service
        caches each customer's vector and a request's context may name, say, a stage.
        """
        block: np.ndarray | None = None
        labels: dict[str, str] | None = None
        for name, feature, h in self._overrides:
            value = read_field(ctx, name)
            if not value or value == customer.labels.get(feature):
                continue
            if labels is None:
                labels = dict(customer.labels)
            labels[feature] = value
            if h is not None:
                if block is None:
                    block = customer.block.copy()
                block[h.offset:h.offset + h.width] = 0.0
                set_one_hot(block, h, value)
        if labels is None:
            return customer
        return replace(customer, block=customer.block if block is None else block, labels=labels)

    # -- the request ----------------------------------------------------------------------
    def encode_context(self, channel: str, placement: str, ctx: Any) -> ContextVector:
        """Encode the request: its channel, placement and context fields (read by name).

        The one-hot part and the affinity codes depend only on the categorical values,
        of which a world has few combinations: they are built once per combination
        (`_context_template`) and copied; the numbers and counts are set per request.
        """
        values: dict[str, Any] = {"channel": channel, "placement": placement}
        read = ctx.get if isinstance(ctx, Mapping) else functools.partial(getattr, ctx)
        for name, default in self._context_reads:
            value = read(name, None)
            values[name] = default if value is None else value
        key = tuple([values[name] for name in self._context_keys])
        try:
            template = self._context_templates.get(key)
        except TypeError:  # a one-hot over a value that is not hashable: nothing to reuse
            template = self._context_template(values)
        else:
            if template is None:
                template = self._context_template(values)
                if len(self._context_templates) < MAX_CONTEXT_TEMPLATES:
                    self._context_templates[key] = template
        block = template.block.copy()
        for n in self._context.numerics:
            value = values[n.feature]
            block[n.position] = n.encode(float(value if value is not None else 0.0))
        for k in self._context.counts:
            block[k.position] = min(length_of(values[k.feature]), k.clip_max)
        return ContextVector(block, template.codes)

    def _context_template(self, values: Mapping[str, Any]) -> ContextVector:
        """The one-hot columns and affinity codes of one combination of categorical values."""
        block = np.zeros(self._context.width, dtype=np.float32)
        for h in self._context.one_hots:
            set_one_hot(block, h, values[h.feature])
        if not self._context_code_features:
            return ContextVector(block, self._empty_context_codes)
        return ContextVector(block, tuple(h.index.get(values[h.feature], -1)
                                          for h in self._context_code_features))

    # -- actions --------------------------------------------------------------------------
    def encode_actions(self, rows: Mapping[str, Mapping[str, Any]]) -> ActionMatrix:
        """Encode every action's raw features; called at start-up and on cache refresh."""
        ids = list(rows)
        spec = self._action
        d = self._action_defaults
        block = np.zeros((len(ids), spec.width), dtype=np.float32)
        codes = [np.full(len(ids), -1, dtype=np.int64) for _ in spec.one_hots]
        for r, action_id in enumerate(ids):
            raw = rows[action_id]
            row = block[r]
            for j, h in enumerate(spec.one_hots):
                codes[j][r] = set_one_hot(row, h, raw.get(h.feature) or d.get(h.feature))
            for n in spec.numerics:
                row[n.position] = n.encode(number_of(raw, n.feature, d))
            for k in spec.counts:
                row[k.position] = min(length_of(raw.get(k.feature)), k.clip_max)
        return ActionMatrix(ids, block, self.action_features, tuple(codes),
                            self._cross_index(codes, len(ids)))

    # -- the model input ------------------------------------------------------------------
    def action_affinity(self) -> tuple[int, int] | None:
        """(affinity table, action code column) of the first cross of a customer's affinity
        with an action feature (retail: the category), None without one: what tells a
        customer's strongest categories (`CustomerVector.affinities[table]` per code of
        `ActionMatrix.codes[column]`)."""
        for x in self._crosses:
            if x.kind == _AFFINITY_ACTION:
                return x.table, x.code
        return None

    def encode_candidates(
        self,
        customer: CustomerVector,
        context: ContextVector,
        actions: ActionMatrix,
        candidate_rows: np.ndarray,
        basket_rows: np.ndarray,
    ) -> np.ndarray:
        """The model input for one decision: one row per candidate, vectorised.

        `basket_rows` are the catalog rows of the basket's items (ids the catalog does not
        know dropped). The customer and context blocks and every cross are read from one
        array of the decision's values (`_compile_gather`), the crosses by one gather.
        """
        _, b, c = self._offsets
        crosses = customer.crosses
        if crosses is None:
            crosses = self._customer_crosses(customer.affinities)
        index = actions.cross_index
        if index is None:
            index = self._cross_index(actions.codes, len(actions.ids))
        values = np.zeros(self._n_values, dtype=np.float32)
        for slot, start, length, k in self._context_values:
            values[slot] = crosses[start + context.codes[k] % length]
        size = basket_rows.size
        if size:
            counts = []
            for i, k in enumerate(self._basket_features):
                held = actions.codes[k][basket_rows]
                counts.append(np.bincount(held[held >= 0], minlength=self._basket_widths[i]))
            for slot, width, i, share in self._basket_values:
                values[slot:slot + width] = counts[i] / size if share else counts[i] > 0
        decision = np.concatenate((customer.block, context.block, crosses, values))
        out = np.empty((len(candidate_rows), len(self.columns)), dtype=np.float32)
        out[:, :b] = decision[:b]
        out[:, b:c] = actions.block[candidate_rows]
        out[:, c:] = decision[index[candidate_rows]]
        if size and self._in_basket:
            mask = np.zeros(len(actions.ids), dtype=bool)
            mask[basket_rows] = True
            for p in self._in_basket:
                out[:, p] = mask[candidate_rows]
        return out

    def encode_decision(
        self, customer: CustomerVector, channel: str, placement: str, ctx: Any,
        actions: ActionMatrix, candidate_rows: np.ndarray, basket_rows: np.ndarray,
    ) -> tuple[CustomerVector, np.ndarray]:
        """One decision's features: the customer as the request sees it (its overrides
        applied) and the model input over the candidates."""
        customer = self.with_context(customer, ctx)
        context = self.encode_context(channel, placement, ctx)
        return customer, self.encode_candidates(customer, context, actions, candidate_rows, basket_rows)

    def encode_examples(
        self,
        customers: Sequence[CustomerVector],
        contexts: Sequence[ContextVector],
        actions: ActionMatrix,
        catalog: ActionMatrix,
        basket_rows: Sequence[np.ndarray],
        catalog_rows: np.ndarray,
    ) -> np.ndarray:
        """The model input for training: row i = (customers[i], contexts[i], actions row i).

        The basket crosses read the `catalog` (what the service reads them from):
        `basket_rows[i]` are example i's basket items as catalog rows, `catalog_rows[i]`
        the catalog row of its action (-1 none). Equal, row by row, to `encode_candidates`.
        """
        n = len(actions.ids)
        a, b, c = self._offsets
        rows = np.arange(n)
        out = np.empty((n, len(self.columns)), dtype=np.float32)
        out[:, :a] = np.stack([x.block for x in customers]) if a else 0.0
        out[:, a:b] = np.stack([x.block for x in contexts]) if b > a else 0.0
        out[:, b:c] = actions.block
        tables = [np.stack([x.affinities[t] for x in customers]) for t in range(len(self._tables))]
        context_codes = np.array([x.codes for x in contexts], dtype=np.int64).reshape(n, -1)
        sizes = np.array([r.size for r in basket_rows], dtype=np.int64)
        counts = [np.zeros((n, w), dtype=np.int64) for w in self._basket_widths]
        in_basket = np.zeros(n, dtype=np.float32)
        for i, held_rows in enumerate(basket_rows):
            if not held_rows.size:
                continue
            for j, k in enumerate(self._basket_features):
                held = catalog.codes[k][held_rows]
                counts[j][i] = np.bincount(held[held >= 0], minlength=self._basket_widths[j])
            in_basket[i] = catalog_rows[i] >= 0 and bool(np.any(held_rows == catalog_rows[i]))
        for x in self._crosses:
            p = x.position
            if x.kind == _AFFINITY_ACTION:
                value = tables[x.table][rows, actions.codes[x.code]]
            elif x.kind == _AFFINITY_CONTEXT:
                value = tables[x.table][rows, context_codes[:, x.code]]
            elif x.kind == _IN_BASKET:
                out[:, p] = in_basket
                continue
            elif x.kind == _HAS:
                out[:, p:p + x.width] = counts[x.basket_feature] > 0
                continue
            else:
                cats = actions.codes[x.code]
                held = counts[x.basket_feature][rows, np.maximum(cats, 0)]
                share = np.divide(held, sizes, out=np.zeros(n), where=sizes > 0)
                out[:, p] = np.where(cats >= 0, share, 0.0)
                continue
            out[:, p] = value if x.log_floor is None else np.log(np.maximum(value, x.log_floor))
        return out
