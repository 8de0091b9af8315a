"""`nextbest load`: a user's own files of customers, actions and logged interactions.

Bring your own world (docs/byo.md): after writing the world configuration, a user loads
their Parquet or CSV files into the data dir, where the Feast repository and training
read them:

    <data_dir>/sources/<entity>s.parquet     one per entity with feature views (Feast FileSources)
    <data_dir>/sources/interactions.parquet  the logged decisions `nextbest train` learns from
    <data_dir>/catalog.json                  the action catalog (service/catalog.py format)

Every file is checked against the configured world before anything is written, and an
error names the file, the column and, for a bad value, the row (the file's own row
number, the header being row 0) and what is allowed. Files are written under a
temporary name and renamed, so a refused load leaves what was there.

Entity files carry the entity's join key, one column per feature the world declares for
the entity, and `event_timestamp`, when the row's values became true (several rows per
entity are a history: a decision is trained on the row in effect when it was made).
Without `event_timestamp`, `as_of` stamps every row; a decision made before it finds no
feature row and is trained on the world's defaults. A missing value is stored as
missing, which the service and training read as the world's default.

The interaction log has one row per (decision, shown action): `event_timestamp`,
`action_id` (the action entity's join key), the customer's join key (in a world with
customers), `channel`, `placement`, `label` (1 when the customer accepted, else 0), and
optionally `propensity` (the logging policy's probability of the shown action; without
it off-policy evaluation cannot use the log), `reward` (default: label x the catalog
value), `decision_id`, and one column per request context field of the world (an
`id_list` field as ids joined by commas, or a list).

The catalog comes from `catalog` (a catalog JSON file) or, without one, from the actions
file's latest row per action: `name`, `kind`, `category`, `value`, `channels` and
`placements` (lists, or values joined by `|` or `,`), `lever` and `active` where present.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.config import (
    SOURCES_DIR,
    CategoryField,
    FeatureType,
    IdListField,
    NumberField,
    World,
    interactions_path,
    source_path,
)
from service.catalog import Catalog, CatalogFile

#: Catalog columns an actions file may carry (besides the features).
CATALOG_COLUMNS = ("name", "kind", "category", "value", "channels", "placements", "lever", "active")
INTERACTION_COLUMNS = ("event_timestamp", "channel", "placement", "label")
#: How many offending rows an error quotes.
QUOTED = 5


class LoadError(ValueError):
    """A file that does not fit the world; the message names the file, column and rows."""


@dataclass
class LoadResult:
    """What was written: path -> rows, and warnings worth reading."""

    written: dict[Path, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        return [f"wrote {rows} rows to {path}" for path, rows in self.written.items()]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (`.csv`) or Parquet (`.parquet`, `.pq`) file as a frame."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    if suffix == ".csv":
        return pd.read_csv(path, keep_default_na=True, dtype=str)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise LoadError(f"{path}: expected a .csv or .parquet file")


def _rows(mask: np.ndarray | pd.Series, values: pd.Series | None = None) -> str:
    rows = np.flatnonzero(np.asarray(mask))
    shown = [f"{r + 1} ({values.iloc[r]!r})" if values is not None else str(r + 1)
             for r in rows[:QUOTED]]
    more = f" and {len(rows) - QUOTED} more" if len(rows) > QUOTED else ""
    return f"row{'s' if len(rows) > 1 else ''} {', '.join(shown)}{more}"


def _require(frame: pd.DataFrame, columns: Iterable[str], file: Path, why: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LoadError(f"{file}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(missing)} ({why}); it has {', '.join(map(str, frame.columns))}")


def _timestamps(frame: pd.DataFrame, column: str, file: Path) -> pd.Series:
    raw = frame[column]
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed") \
        if raw.dtype == object else pd.to_datetime(raw, utc=True, errors="coerce")
    bad = parsed.isna()
    if bad.any():
        raise LoadError(f"{file}: column {column}: not a timestamp at {_rows(bad, raw)}")
    return parsed.dt.as_unit("us")


def _typed(raw: pd.Series, kind: FeatureType, file: Path, column: str) -> pd.Series:
    """`raw` as the Feast type `kind`; missing values stay missing."""
    present = raw.notna() & (raw.astype(str).str.strip() != "") if raw.dtype == object else raw.notna()
    if kind == "string":
        return raw.where(present, None).map(lambda v: None if v is None else str(v)).astype(object)
    numbers = pd.to_numeric(raw.where(present, None), errors="coerce")
    bad = present & numbers.isna()
    if kind == "int":
        bad |= present & numbers.notna() & (numbers % 1 != 0)
    if bad.any():
        what = "an integer" if kind == "int" else "a number"
        raise LoadError(f"{file}: column {column}: not {what} at {_rows(bad, raw)}")
    if kind == "int":
        return numbers.astype("Int64")
    return numbers.astype("float32")


def entity_frame(world: World, entity: str, frame: pd.DataFrame, file: Path,
                 as_of: datetime | None = None) -> pd.DataFrame:
    """`frame` as the Feast source of `entity`: join key, timestamps, typed features."""
    key = world.join_key(entity)
    features = world.features_of(entity)
    views = ", ".join(world.views_of(entity))
    _require(frame, [key, *features], file, f"the {entity} entity's join key and the features "
             f"of its feature views ({views})")
    keys = frame[key]
    missing_key = keys.isna() | (keys.astype(str).str.strip() == "")
    if missing_key.any():
        raise LoadError(f"{file}: column {key}: empty at {_rows(missing_key)}")
    if "event_timestamp" in frame.columns:
        stamps = _timestamps(frame, "event_timestamp", file)
    elif as_of is not None:
        stamp = pd.Timestamp(as_of)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        stamps = pd.Series(stamp, index=frame.index).dt.as_unit("us")
    else:
        raise LoadError(f"{file}: no event_timestamp column: add one (when each row's values "
                        "became true), or give --as-of to stamp every row")
    out = pd.DataFrame({key: keys.astype(str).to_numpy(), "event_timestamp": stamps.to_numpy()})
    created = _timestamps(frame, "created", file) if "created" in frame.columns else stamps
    out["created"] = created.to_numpy()
    for name, kind in features.items():
        out[name] = _typed(frame[name], kind, file, name).to_numpy()
    duplicated = out.duplicated([key, "event_timestamp"], keep=False)
    if duplicated.any():
        raise LoadError(f"{file}: two rows for the same {key} and event_timestamp at "
                        f"{_rows(duplicated, out[key])}")
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    out["created"] = pd.to_datetime(out["created"], utc=True)
    return out


def _as_list(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value if str(v)]
    text = str(value).strip()
    separator = "|" if "|" in text else ","
    return [v.strip() for v in text.split(separator) if v.strip()]


def catalog_from_actions(world: World, frame: pd.DataFrame, file: Path,
                         version: str) -> dict[str, Any]:
    """The catalog document of an actions file: its latest row per action."""
    key = world.join_key(world.action_entity)
    _require(frame, [key], file, "the action entity's join key")
    latest = frame
    if "event_timestamp" in frame.columns:
        order = _timestamps(frame, "event_timestamp", file).argsort(kind="stable")
        latest = frame.iloc[np.asarray(order)]
    latest = latest.drop_duplicates(key, keep="last")
    actions = []
    for row in latest.to_dict("records"):
        action: dict[str, Any] = {"action_id": str(row[key])}
        for column in CATALOG_COLUMNS:
            value = row.get(column)
            if column not in latest.columns or value is None or (
                    isinstance(value, float) and np.isnan(value)):
                continue
            if column in ("channels", "placements"):
                action[column] = _as_list(value)
            elif column == "active":
                action[column] = str(value).strip().lower() in ("1", "true", "yes")
            elif column in ("value", "lever"):
                action[column] = float(value)
            else:
                action[column] = str(value)
        actions.append(action)
    return {"version": version, "actions": actions}


def checked_catalog(world: World, document: dict[str, Any], file: Path) -> Catalog:
    try:
        return Catalog(CatalogFile.model_validate(document), world)
    except ValueError as exc:
        raise LoadError(f"{file}: the catalog is invalid: {exc}") from None


def interactions_frame(world: World, frame: pd.DataFrame, file: Path,
                       catalog: Catalog) -> pd.DataFrame:
    """`frame` as the interaction log training reads, checked against `world` and `catalog`."""
    action_key = world.join_key(world.action_entity)
    keys = [action_key]
    if world.customer_entity is not None:
        keys.append(world.join_key(world.customer_entity))
    _require(frame, [*INTERACTION_COLUMNS, *keys], file, "what training needs of each decision")
    out = pd.DataFrame({"event_timestamp": _timestamps(frame, "event_timestamp", file).to_numpy()})
    for key in keys:
        values = frame[key]
        empty = values.isna() | (values.astype(str).str.strip() == "")
        if empty.any():
            raise LoadError(f"{file}: column {key}: empty at {_rows(empty)}")
        out[key] = values.astype(str).to_numpy()
    unknown = ~out[action_key].isin([a.action_id for a in catalog.actions])
    if unknown.any():
        raise LoadError(f"{file}: column {action_key}: not in the catalog at "
                        f"{_rows(unknown, out[action_key])}")
    out["channel"] = _in_vocabulary(frame["channel"], list(world.channels), file, "channel")
    out["placement"] = _in_vocabulary(frame["placement"], list(world.placements), file, "placement")
    allowed = {(c, p) for p, channels in world.placements.items() for c in channels}
    misplaced = ~pd.Series([pair in allowed for pair in zip(out["channel"], out["placement"],
                                                            strict=True)])
    if misplaced.any():
        raise LoadError(f"{file}: columns channel, placement: a placement not allowed on its "
                        f"channel (world `placements`) at {_rows(misplaced, out['placement'])}")
    label = _typed(frame["label"], "int", file, "label")
    bad = label.isna() | ~label.isin([0, 1])
    if bad.any():
        raise LoadError(f"{file}: column label: expected 0 or 1 at {_rows(bad, frame['label'])}")
    out["label"] = label.astype(np.int64).to_numpy()
    if "propensity" in frame.columns:
        p = _typed(frame["propensity"], "float", file, "propensity").astype(np.float64)
        bad = p.isna() | (p <= 0) | (p > 1)
        if bad.any():
            raise LoadError(f"{file}: column propensity: expected a probability in (0, 1] at "
                            f"{_rows(bad, frame['propensity'])}")
        out["propensity"] = p.to_numpy()
    else:
        out["propensity"] = np.nan
    if "reward" in frame.columns:
        out["reward"] = _typed(frame["reward"], "float", file, "reward").astype(np.float64) \
            .fillna(0.0).to_numpy()
    else:
        values = {a.action_id: a.value for a in catalog.actions}
        out["reward"] = out["label"] * out[action_key].map(values).to_numpy(np.float64)
    out["decision_id"] = (frame["decision_id"].astype(str).to_numpy() if "decision_id" in frame.columns
                          else [f"loaded-{i:08d}" for i in range(len(frame))])
    for name, spec in world.context.items():
        if name in frame.columns:
            out[name] = _context_column(spec, frame[name], file, name, world).to_numpy()
    return out.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def _in_vocabulary(raw: pd.Series, allowed: list[str], file: Path, column: str,
                   missing_ok: bool = False) -> pd.Series:
    values = raw.where(raw.notna(), None).map(lambda v: None if v is None else str(v))
    bad = ~values.isin(allowed) & (values.notna() if missing_ok else True)
    if bad.any():
        raise LoadError(f"{file}: column {column}: not one of {', '.join(allowed)} at "
                        f"{_rows(bad, raw)}")
    return values.astype(object)


def _context_column(spec: Any, raw: pd.Series, file: Path, name: str, world: World) -> pd.Series:
    if isinstance(spec, CategoryField):
        return _in_vocabulary(raw, world.vocabulary(spec.vocabulary), file, name, missing_ok=True)
    if isinstance(spec, NumberField):
        numbers = _typed(raw, "float", file, name).astype(np.float64)
        bad = numbers.notna() & ((numbers < spec.min) | (numbers > spec.max))
        if bad.any():
            raise LoadError(f"{file}: column {name}: outside [{spec.min:g}, {spec.max:g}] at "
                            f"{_rows(bad, raw)}")
        return numbers
    if isinstance(spec, IdListField):
        lists = raw.map(_as_list)
        long = lists.map(len) > spec.max_items
        if long.any():
            raise LoadError(f"{file}: column {name}: more than {spec.max_items} items at {_rows(long)}")
        return lists.map(",".join).astype(object)
    return raw.where(raw.notna(), None).map(lambda v: None if v is None else str(v)).astype(object)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _write_json(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, path)


def load(
    world: World, data_dir: Path, *, files: dict[str, Path] | None = None,
    interactions: Path | None = None, catalog: Path | None = None,
    as_of: datetime | None = None, catalog_file: Path | None = None,
) -> LoadResult:
    """Check every given file against `world`, then write them into `data_dir`.

    `files`: entity name (e.g. `customer`, `action`) -> its file. The catalog is written
    when `catalog` is given, or derived from the action entity's file; the interaction
    log is checked against the catalog being written (or the one already there).
    `catalog_file` is where the service reads the catalog (default `<data_dir>/catalog.json`).
    """
    files = dict(files or {})
    data_dir = Path(data_dir)
    catalog_target = catalog_file or data_dir / "catalog.json"
    result = LoadResult()
    with_views = [e for e in world.entities if world.views_of(e)]
    for entity in files:
        if entity not in with_views:
            raise LoadError(f"{files[entity]}: the world declares no feature views of entity "
                            f"{entity!r} (entities with features: {', '.join(with_views)})")
    frames = {entity: entity_frame(world, entity, read_table(path), path, as_of)
              for entity, path in files.items()}
    document: dict[str, Any] | None = None
    if catalog is not None:
        try:
            document = json.loads(Path(catalog).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LoadError(f"{catalog}: not a readable catalog JSON file: {exc}") from None
        checked = checked_catalog(world, document, Path(catalog))
    elif world.action_entity in files:
        path = files[world.action_entity]
        version = f"loaded-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S}"
        document = catalog_from_actions(world, read_table(path), path, version)
        checked = checked_catalog(world, document, path)
    elif catalog_target.is_file():
        checked = checked_catalog(world, json.loads(catalog_target.read_text()), catalog_target)
    else:
        checked = None
    log = None
    if interactions is not None:
        if checked is None:
            raise LoadError(f"{interactions}: the interaction log is checked against the catalog: "
                            f"give --catalog or the actions file (no {catalog_target} yet)")
        log = interactions_frame(world, read_table(interactions), Path(interactions), checked)
        if log["propensity"].isna().all():
            result.warnings.append(f"{interactions}: no propensity column: off-policy "
                                   "evaluation cannot use this log")
    if checked is not None and world.action_entity in frames:
        ids = set(frames[world.action_entity][world.join_key(world.action_entity)])
        missing = [a.action_id for a in checked.actions if a.action_id not in ids]
        if missing:
            result.warnings.append(f"catalog actions without a feature row (they read the "
                                   f"world's defaults): {', '.join(missing[:QUOTED])}")
    for entity, frame in frames.items():
        path = source_path(data_dir, entity)
        _write_parquet(frame, path)
        result.written[path] = len(frame)
    if document is not None:
        _write_json(document, catalog_target)
        result.written[catalog_target] = len(document.get("actions", []))
    if log is not None:
        path = interactions_path(data_dir)
        _write_parquet(log, path)
        result.written[path] = len(log)
    for entity in with_views:
        if not source_path(data_dir, entity).is_file():
            result.warnings.append(f"no {entity} source yet in {data_dir / SOURCES_DIR}: "
                                   f"load one before `nextbest materialize`")
    return result
