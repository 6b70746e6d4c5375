"""Attach Gymnasium environments to an oni cluster over gRPC.

    import gymnasium as gym
    import oni_env

    oni_env.attach(lambda: gym.make("CartPole-v1"), "127.0.0.1:50061", num_envs=16)
"""

from .client import PROTOCOL_VERSION, AttachResult, attach
from .errors import (
    AuthenticationError,
    ConnectionLostError,
    HubError,
    InvalidArgumentError,
    OniEnvError,
    ProtocolVersionError,
    ResourceExhaustedError,
    UnsupportedSpaceError,
)
from .spaces import layout_of

__all__ = [
    "attach",
    "AttachResult",
    "layout_of",
    "PROTOCOL_VERSION",
    "OniEnvError",
    "UnsupportedSpaceError",
    "HubError",
    "InvalidArgumentError",
    "AuthenticationError",
    "ResourceExhaustedError",
    "ProtocolVersionError",
    "ConnectionLostError",
]
