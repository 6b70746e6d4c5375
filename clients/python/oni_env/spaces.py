"""Gymnasium spaces → the tensors a client declares in its Hello, and observations → bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np

from ._proto import env_hub_pb2 as pb
from .errors import UnsupportedSpaceError

# numpy dtype → (wire dtype, numpy dtype sent). Types the hub does not take are widened.
_DTYPES = {
    np.dtype(np.uint8): (pb.DTYPE_UINT8, np.uint8),
    np.dtype(np.bool_): (pb.DTYPE_UINT8, np.uint8),
    np.dtype(np.int8): (pb.DTYPE_INT8, np.int8),
    np.dtype(np.uint16): (pb.DTYPE_UINT16, np.uint16),
    np.dtype(np.int16): (pb.DTYPE_INT16, np.int16),
    np.dtype(np.int32): (pb.DTYPE_INT32, np.int32),
    np.dtype(np.uint32): (pb.DTYPE_INT64, np.int64),
    np.dtype(np.int64): (pb.DTYPE_INT64, np.int64),
    np.dtype(np.uint64): (pb.DTYPE_INT64, np.int64),
    np.dtype(np.float16): (pb.DTYPE_FLOAT32, np.float32),
    np.dtype(np.float32): (pb.DTYPE_FLOAT32, np.float32),
    np.dtype(np.float64): (pb.DTYPE_FLOAT64, np.float64),
}
_LE = {k: np.dtype(v).newbyteorder("<") for k, (_, v) in _DTYPES.items()}


@dataclass
class Tensor:
    """One declared observation tensor: `key` picks it out of a Dict observation."""

    name: str
    key: Optional[str]
    dtype: int
    np_dtype: np.dtype
    shape: tuple
    num_ids: int = 0

    def proto(self) -> pb.TensorSpec:
        return pb.TensorSpec(name=self.name, dtype=self.dtype, shape=list(self.shape), num_ids=self.num_ids)


@dataclass
class Layout:
    tensors: List[Tensor]
    message_key: Optional[str]
    num_actions: int

    def hello(self, env_name: str, num_envs: int, token: str, protocol_version: int) -> pb.Hello:
        return pb.Hello(
            protocol_version=protocol_version,
            token=token,
            env_name=env_name,
            observations=[t.proto() for t in self.tensors],
            has_message=self.message_key is not None,
            num_actions=self.num_actions,
            num_envs=num_envs,
        )

    def observations(self, obs: Sequence[Any]) -> List[bytes]:
        """The B observations' bytes per tensor, in declaration order."""
        out = []
        for t in self.tensors:
            parts = [o if t.key is None else o[t.key] for o in obs]
            try:
                out.append(np.asarray(parts, dtype=t.np_dtype).tobytes())
            except ValueError:
                # ragged (an env produced another shape): send what it produced; the actor
                # answers INVALID_ARGUMENT naming the tensor
                out.append(b"".join(np.asarray(p, dtype=t.np_dtype).tobytes() for p in parts))
        return out

    def message(self, obs: Any) -> bytes:
        m = obs[self.message_key]
        if isinstance(m, str):
            return m.encode("utf-8")[:256]
        raw = np.asarray(m, dtype=np.uint8).tobytes()
        end = raw.find(b"\0")
        return raw if end < 0 else raw[:end]


def _tensor(name: str, key: Optional[str], space: Any) -> Tensor:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return Tensor(name, key, pb.DTYPE_INT64, _LE[np.dtype(np.int64)], ())
    if isinstance(space, spaces.MultiBinary):
        return Tensor(name, key, pb.DTYPE_UINT8, _LE[np.dtype(np.uint8)], tuple(np.atleast_1d(space.n)))
    if isinstance(space, spaces.MultiDiscrete):
        return Tensor(name, key, pb.DTYPE_INT64, _LE[np.dtype(np.int64)], tuple(space.shape))
    if not isinstance(space, spaces.Box):
        raise UnsupportedSpaceError(f"observation `{name}`: {type(space).__name__} spaces are not supported (use Box, Discrete or a Dict of them)")
    dt = np.dtype(space.dtype)
    if dt not in _DTYPES:
        raise UnsupportedSpaceError(f"observation `{name}`: dtype {dt} is not supported")
    wire, _ = _DTYPES[dt]
    num_ids = 0
    if len(space.shape) == 2 and dt.kind in "iub":
        lo, hi = np.min(space.low), np.max(space.high)
        if lo >= 0 and hi < 65536:
            num_ids = int(hi) + 1
    return Tensor(name, key, wire, _LE[dt], tuple(space.shape), num_ids)


def layout_of(observation_space: Any, action_space: Any, message_key: Optional[str] = "auto") -> Layout:
    """Declares an env's spaces. A Dict entry named by `message_key` ("auto": an entry called
    `message` holding bytes) is sent as the step's text message instead of a tensor."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Discrete) or int(action_space.start) != 0:
        raise UnsupportedSpaceError(f"action space {action_space}: only Discrete(n) action spaces starting at 0 are supported")
    if isinstance(observation_space, spaces.Dict):
        keys = list(observation_space.spaces.keys())
        if message_key == "auto":
            m = observation_space.spaces.get("message")
            message_key = "message" if isinstance(m, (spaces.Box, spaces.Text)) and (isinstance(m, spaces.Text) or m.dtype == np.uint8) else None
        if message_key is not None and message_key not in keys:
            raise UnsupportedSpaceError(f"message_key `{message_key}` is not one of the observation keys {keys}")
        tensors = [_tensor(k, k, observation_space[k]) for k in keys if k != message_key]
    else:
        if message_key not in (None, "auto"):
            raise UnsupportedSpaceError("message_key needs a Dict observation space")
        message_key = None
        tensors = [_tensor("obs", None, observation_space)]
    return Layout(tensors, message_key, int(action_space.n))
