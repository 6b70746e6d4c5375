"""Typed errors. Errors the actor reports carry its gRPC status code and message."""

from __future__ import annotations

import grpc


class OniEnvError(Exception):
    """Base class of every error this package raises."""


class UnsupportedSpaceError(OniEnvError):
    """The environment's spaces cannot be declared (checked before connecting)."""


class HubError(OniEnvError):
    """The actor refused or ended the stream. `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidArgumentError(HubError):
    """A declared space or a step was wrong; `details` names the field."""


class AuthenticationError(HubError):
    """Missing or wrong token."""


class ResourceExhaustedError(HubError):
    """The actor serves its maximum of clients or envs, or a step is too large."""


class ProtocolVersionError(HubError):
    """The client and the actor speak different protocol versions, or the spaces differ
    from the ones the cluster trains."""


class ConnectionLostError(HubError):
    """The actor could not be reached (after the configured reconnect attempts)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: ProtocolVersionError,
    grpc.StatusCode.UNAVAILABLE: ConnectionLostError,
}


def from_rpc(e: grpc.RpcError) -> HubError:
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    return _BY_CODE.get(code, HubError)(code, details or "")


# Reconnecting helps with these; the others need the user to change something.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
