"""The canonical episode schema, fast arrow-to-numpy episode iteration, and the checks that reject bad data.

One row per episode, every field with one entry per step (T steps):

- `observations`: T float32 state vectors, or for Atari T uint8 84x84 frames (the newest frame of each stack);
- `actions`: T float32 action vectors (continuous) or T int64 action indices (discrete);
- `rewards`: T float32 rewards received after each action;
- `terminations` / `truncations`: T bools, Gymnasium's end-of-episode flags;
- `initial_frames` (Atari only, optional): the 3 frames that precede `observations[0]` in the first 4-frame stack
  (zeros when absent). Every 84x84 frame is thus stored once; the stack of step t is frames t-3..t, built on
  access by the window dataset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Array3D, Dataset, Features, IterableDataset, Value
from datasets import Sequence as SequenceFeature

OBSERVATIONS = "observations"
ACTIONS = "actions"
REWARDS = "rewards"
TERMINATIONS = "terminations"
TRUNCATIONS = "truncations"
INITIAL_FRAMES = "initial_frames"
CANONICAL_COLUMNS = (OBSERVATIONS, ACTIONS, REWARDS, TERMINATIONS, TRUNCATIONS)

FRAME_SHAPE = (84, 84)
FRAME_STACK = 4


def canonical_features(*, atari: bool, discrete: bool) -> Features:
    """`datasets` features of the canonical schema (vector states or Atari frames; continuous or discrete)."""
    action = Value("int64") if discrete else SequenceFeature(Value("float32"))
    features = {
        OBSERVATIONS: SequenceFeature(SequenceFeature(Value("float32"))),
        ACTIONS: SequenceFeature(action),
        REWARDS: SequenceFeature(Value("float32")),
        TERMINATIONS: SequenceFeature(Value("bool")),
        TRUNCATIONS: SequenceFeature(Value("bool")),
    }
    if atari:
        features[OBSERVATIONS] = Array3D(shape=(None, *FRAME_SHAPE), dtype="uint8")
        features[INITIAL_FRAMES] = Array3D(shape=(FRAME_STACK - 1, *FRAME_SHAPE), dtype="uint8")
    return Features(features)


@dataclasses.dataclass
class EpisodeSpec:
    """What every episode must look like; `None` fields are taken from the first episode seen."""

    state_shape: tuple[int, ...] | None = None
    act_dim: int | None = None
    action_space: str | None = None  # "continuous" | "discrete"
    n_actions: int | None = None
    source: str = "the first episode"
    env_id: str | None = None  # only named in error messages

    @property
    def is_atari(self) -> bool:
        """Whether steps are 84x84 frames."""
        return self.state_shape is not None and tuple(self.state_shape[-2:]) == FRAME_SHAPE


def _fail(index: int, field: str, problem: str, expected: str) -> ValueError:
    return ValueError(f"episode {index}: {field!r} {problem}; expected {expected}.")


def check_columns(
    columns: Iterable[str], required: Sequence[str] = CANONICAL_COLUMNS, where: str = "dataset"
) -> None:
    """Raise a `ValueError` naming every required column that is missing."""
    columns = list(columns)
    missing = [name for name in required if name not in columns]
    if missing:
        raise ValueError(
            f"{where} is missing column(s) {missing}; expected the canonical episode columns {list(required)} "
            f"(found {columns})."
        )


def _check_lengths(index: int, episode: Mapping[str, np.ndarray]) -> int:
    """Every per-step field has the same, non-zero, number of steps; return it."""
    length = len(episode[ACTIONS])
    if length == 0:
        raise _fail(index, ACTIONS, "is empty", "at least one step per episode")
    for field in (OBSERVATIONS, REWARDS, TERMINATIONS, TRUNCATIONS):
        if field in episode and len(episode[field]) != length:
            raise _fail(
                index,
                field,
                f"has {len(episode[field])} steps but 'actions' has {length}",
                "every per-step field to have one entry per step (ragged episode)",
            )
    if np.prod(episode[REWARDS].shape[1:], dtype=int) != 1:
        raise _fail(index, REWARDS, f"has shape {episode[REWARDS].shape}", "one scalar reward per step")
    return length


def _first_bad_step(values: np.ndarray, bad: np.ndarray) -> tuple[int, Any]:
    """(step, original value) of the first True entry of the per-entry mask `bad`."""
    position = int(np.flatnonzero(bad.reshape(-1))[0])
    width = max(1, int(np.prod(values.shape[1:], dtype=int)))
    return position // width, values.reshape(-1)[position]


def _unconvertible(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Per-entry mask of the values numpy cannot cast to `dtype` (the slow path, only taken after a failed cast)."""

    def fails(value: Any) -> bool:
        try:
            np.asarray(value).astype(dtype)
        except (TypeError, ValueError):
            return True
        return False

    return np.vectorize(fails, otypes=[bool])(values)


def check_finite(index: int, field: str, values: np.ndarray, original: np.ndarray | None = None) -> None:
    """Raise naming episode, field and step if a float array holds NaN or inf; `original` (the values before a
    cast) lets the error show the value as stored, e.g. a finite 1e300 that overflowed float32."""
    if values.dtype.kind != "f" or np.isfinite(values).all():
        return
    bad = ~np.isfinite(values)
    step, value = _first_bad_step(values if original is None else original, bad)
    value = value.item() if isinstance(value, np.generic) else value
    detail = f"{value:.7g}" if isinstance(value, float) else repr(value)
    if isinstance(value, float) and math.isfinite(value):
        detail += f", which overflows {values.dtype}"
    limit = float(np.finfo(values.dtype).max)
    raise _fail(
        index,
        field,
        f"contains NaN or inf at step {step}",
        f"finite values within {values.dtype}'s range (|x| <= {limit:.3g}), got {detail}",
    )


def training_dtype(field: str, spec: EpisodeSpec) -> np.dtype:
    """The dtype a field is trained in: uint8 frames or float32 states, int64 or float32 actions, float32 rewards."""
    if field == OBSERVATIONS and spec.is_atari:
        return np.dtype(np.uint8)
    if field == ACTIONS and spec.action_space == "discrete":
        return np.dtype(np.int64)
    return np.dtype(np.float32)


def to_training_dtype(
    index: int, episode: Mapping[str, np.ndarray], spec: EpisodeSpec
) -> dict[str, np.ndarray]:
    """`episode` with observations, actions and rewards cast to their training dtypes, then checked.

    The check runs after the cast, so that strings such as "nan" and float64 values beyond float32 (1e300 -> inf)
    are caught here, naming episode, column and step, instead of at a random training step.
    """
    out = dict(episode)
    for field in (OBSERVATIONS, ACTIONS, REWARDS):
        if field not in episode:
            continue
        values, dtype = np.asarray(episode[field]), training_dtype(field, spec)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                out[field] = values.astype(dtype, copy=False)
        except (TypeError, ValueError):
            step, value = _first_bad_step(values, _unconvertible(values, dtype))
            raise _fail(index, field, f"has {value!r} at step {step}", f"{dtype} numbers") from None
        check_finite(index, field, out[field], original=values)
    return out


def _check_observation_shape(index: int, observations: np.ndarray, spec: EpisodeSpec) -> None:
    shape = tuple(observations.shape[1:])
    if spec.state_shape is None:
        spec.state_shape = shape
        spec.source = f"episode {index}"
    elif shape != tuple(spec.state_shape):
        expected = f"{tuple(spec.state_shape)} ({spec.source})"
        if spec.is_atari:
            expected += ": 84x84 grayscale frames, as the Atari protocol and the atari_cnn encoder use"
        raise _fail(index, OBSERVATIONS, f"has shape {shape} per step", expected)
    if spec.is_atari and observations.dtype != np.uint8:
        raise _fail(index, OBSERVATIONS, f"are {observations.dtype} frames", "uint8 frames (0-255)")


def _action_range(spec: EpisodeSpec) -> str:
    """`[0, n)`, naming the game whose action set that is when known."""
    if spec.n_actions is None:
        return "non-negative indices"
    game = f" of {spec.env_id}" if spec.env_id else ""
    return (
        f"[0, {spec.n_actions}), the {spec.n_actions} actions{game} ({spec.source}); was the data recorded in "
        "another game or with the full action set?"
    )


def _check_actions(index: int, actions: np.ndarray, spec: EpisodeSpec) -> None:
    kind = "discrete" if actions.ndim == 1 and actions.dtype.kind in "iu" else "continuous"
    if spec.action_space is None:
        spec.action_space = kind
    if kind != spec.action_space:
        raise _fail(
            index, ACTIONS, f"are {kind} (dtype {actions.dtype}, shape {actions.shape})", spec.action_space
        )
    if kind == "discrete":
        high = int(actions.max())
        if actions.min() < 0 or (spec.n_actions is not None and high >= spec.n_actions):
            raise _fail(index, ACTIONS, f"has indices in [{int(actions.min())}, {high}]", _action_range(spec))
        return
    width = int(np.prod(actions.shape[1:]))
    if spec.act_dim is None:
        spec.act_dim = width
    elif width != spec.act_dim:
        raise _fail(index, ACTIONS, f"has size {width} per step", f"act_dim={spec.act_dim} ({spec.source})")


def checked_episode(
    index: int, episode: Mapping[str, np.ndarray], spec: EpisodeSpec
) -> dict[str, np.ndarray]:
    """Validate one episode in numpy form against `spec` (filling its unknown fields); return it in the training
    dtypes (see `to_training_dtype`)."""
    check_columns(episode.keys(), (OBSERVATIONS, ACTIONS, REWARDS), where=f"episode {index}")
    _check_lengths(index, episode)
    _check_observation_shape(index, episode[OBSERVATIONS], spec)
    _check_actions(index, episode[ACTIONS], spec)
    return to_training_dtype(index, episode, spec)


def check_episode(index: int, episode: Mapping[str, np.ndarray], spec: EpisodeSpec) -> int:
    """Validate one episode in numpy form against `spec` (filling its unknown fields); return its length."""
    return len(checked_episode(index, episode, spec)[ACTIONS])


# Arrow -> numpy ---------------------------------------------------------------------------------------------


def _storage(array: pa.Array) -> pa.Array:
    return array.storage if isinstance(array.type, pa.ExtensionType) else array


def _is_list(array: pa.Array) -> bool:
    return (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or pa.types.is_fixed_size_list(array.type)
    )


def _offsets(array: pa.Array) -> np.ndarray:
    if pa.types.is_fixed_size_list(array.type):
        return np.arange(len(array) + 1, dtype=np.int64) * array.type.list_size
    offsets = array.offsets.to_numpy()
    return (offsets - offsets[0]).astype(np.int64)


def column_to_numpy(
    column: pa.Array | pa.ChunkedArray, field: str, first_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a list-per-episode arrow column into (all steps stacked on axis 0, row offsets), zero-copy if possible."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    column = _storage(column)
    offsets = _offsets(column)
    values, shape = _storage(column.flatten()), []
    while _is_list(values):
        inner = _offsets(values)
        lengths = np.diff(inner)
        if len(lengths) and (lengths != lengths[0]).any():
            bad = int(np.argmax(lengths != lengths[0]))
            row = first_index + int(np.searchsorted(offsets, bad, side="right") - 1)
            raise _fail(
                row, field, f"mixes per-step sizes {int(lengths[0])} and {int(lengths[bad])}", "one size"
            )
        shape.append(int(lengths[0]) if len(lengths) else 0)
        values = _storage(values.flatten())
    if values.null_count:
        raise ValueError(f"column {field!r} contains missing (null) values; expected a value at every step.")
    return values.to_numpy(zero_copy_only=False).reshape(-1, *shape), offsets


def _table_episodes(
    table: pa.Table, columns: Sequence[str], first_index: int
) -> Iterator[dict[str, np.ndarray]]:
    converted = {name: column_to_numpy(table.column(name), name, first_index) for name in columns}
    for row in range(table.num_rows):
        yield {name: values[offsets[row] : offsets[row + 1]] for name, (values, offsets) in converted.items()}


def _as_arrays(row: Mapping[str, Any], columns: Sequence[str], index: int) -> dict[str, np.ndarray]:
    episode = {}
    for name in columns:
        try:
            episode[name] = np.asarray(row[name])
        except ValueError as error:  # ragged nested lists
            raise _fail(
                index, name, f"cannot be stacked into an array ({error})", "one size per step"
            ) from None
    return episode


def _select(columns: Iterable[str] | None, wanted: Sequence[str] | None, where: str) -> list[str]:
    """The wanted columns that exist, after checking that every required one does."""
    wanted = list(wanted) if wanted is not None else [*CANONICAL_COLUMNS, INITIAL_FRAMES]
    if columns is None:  # a stream without declared features: checked on its first batch
        return wanted
    columns = list(columns)
    check_columns(columns, [name for name in wanted if name != INITIAL_FRAMES], where=where)
    return [name for name in wanted if name in columns]


def iter_episodes(
    episodes: Dataset | IterableDataset | Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    batch_size: int = 32,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield each episode as a dict of numpy arrays; `datasets` inputs go through arrow (fast, streaming-safe).

    `columns` defaults to the canonical columns (plus `initial_frames` when present); missing ones raise.
    """
    if isinstance(episodes, (Dataset, IterableDataset)):
        wanted = _select(episodes.column_names, columns, "dataset")
        index = 0
        for table in episodes.with_format("arrow").iter(batch_size=batch_size):
            yield from _table_episodes(table, _select(table.column_names, wanted, "dataset"), index)
            index += table.num_rows
        return
    for index, row in enumerate(episodes):
        yield _as_arrays(row, _select(row.keys(), columns, f"episode {index}"), index)


# numpy -> Arrow ---------------------------------------------------------------------------------------------


def _nested_lists(arrays: Sequence[np.ndarray]) -> pa.Array:
    """Per-episode (T_i, *inner) arrays as one list<list<...>> arrow array, built from buffers (no Python lists)."""
    values = pa.array(np.concatenate([np.asarray(a).reshape(-1) for a in arrays]) if arrays else np.zeros(0))
    inner_shape = np.asarray(arrays[0]).shape[1:] if arrays else ()
    for size in reversed(inner_shape):
        values = pa.ListArray.from_arrays(
            pa.array(np.arange(0, len(values) + 1, size, dtype=np.int32)), values
        )
    lengths = [len(a) for a in arrays]
    return pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), values
    )


def _typed(array: pa.Array, target: pa.DataType) -> pa.Array:
    if isinstance(target, pa.ExtensionType):
        return pa.ExtensionArray.from_storage(target, array.cast(target.storage_type))
    return array.cast(target)


def episodes_to_table(episodes: Sequence[Mapping[str, np.ndarray]], features: Features) -> pa.Table:
    """Numpy episodes as an arrow table with the schema (and `datasets` metadata) of `features`."""
    schema = features.arrow_schema
    columns = []
    for field in schema:
        arrays = [episode[field.name] for episode in episodes]
        nested = (
            _nested_lists([a[None] for a in arrays]).flatten()
            if field.name == INITIAL_FRAMES
            else _nested_lists(arrays)
        )
        columns.append(_typed(nested, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
