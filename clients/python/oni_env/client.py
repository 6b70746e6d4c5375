"""`attach`: drives a batch of Gymnasium environments against an oni actor's env hub."""

from __future__ import annotations

import inspect
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import grpc

from ._proto import env_hub_pb2 as pb
from ._proto import env_hub_pb2_grpc as pb_grpc
from .errors import RETRYABLE, ConnectionLostError, HubError, InvalidArgumentError, from_rpc
from .spaces import Layout, layout_of

log = logging.getLogger("oni_env")

PROTOCOL_VERSION = pb.PROTOCOL_VERSION_CURRENT


@dataclass
class AttachResult:
    """What a finished `attach` did: env steps, finished episodes and their returns."""

    steps: int = 0
    episodes: int = 0
    returns: List[float] = field(default_factory=list)
    reconnects: int = 0


class _Outbox:
    """The request side of the bidirectional stream: messages are queued by the stepping
    loop and handed to gRPC's sending thread; `None` closes the stream."""

    def __init__(self) -> None:
        self._q: "queue.Queue[Optional[pb.ClientMessage]]" = queue.Queue()

    def put(self, m: Optional[pb.ClientMessage]) -> None:
        self._q.put(m)

    def __iter__(self):
        while True:
            m = self._q.get()
            if m is None:
                return
            yield m


def _make_envs(make_env: Callable[..., Any], n: int) -> list:
    takes_index = len(inspect.signature(make_env).parameters) >= 1
    return [make_env(i) if takes_index else make_env() for i in range(n)]


class _Batch:
    """B envs stepped together, reset when an episode ends (terminated or truncated)."""

    def __init__(self, envs: list, layout: Layout, seed: Optional[int]) -> None:
        self.envs, self.layout, self.seed = envs, layout, seed
        self.episode_return = [0.0] * len(envs)
        self.episodes = 0

    def reset(self) -> pb.EnvStep:
        obs = []
        for i, env in enumerate(self.envs):
            o, _ = env.reset(seed=None if self.seed is None else self.seed + 7919 * i + self.episodes)
            obs.append(o)
        self.episode_return = [0.0] * len(self.envs)
        messages = [self.layout.message(o) for o in obs] if self.layout.message_key else []
        return pb.EnvStep(initial=True, observations=self.layout.observations(obs), messages=messages)

    def step(self, actions, result: AttachResult) -> pb.EnvStep:
        obs, rewards, term, trunc, success, messages, finals = [], [], [], [], [], [], []
        for i, (env, a) in enumerate(zip(self.envs, actions)):
            o, r, te, tr, info = env.step(int(a))
            if self.layout.message_key:
                messages.append(self.layout.message(o))
            self.episode_return[i] += float(r)
            if tr and not te:
                # A time limit: the learner bootstraps from the observation it cut.
                finals.append(o)
            if te or tr:
                result.episodes += 1
                result.returns.append(self.episode_return[i])
                self.episode_return[i] = 0.0
                self.episodes += 1
                o, _ = env.reset()
            obs.append(o)
            rewards.append(float(r))
            term.append(bool(te))
            trunc.append(bool(tr))
            success.append(bool(info.get("success", info.get("is_success", False))) if isinstance(info, dict) else False)
        result.steps += len(self.envs)
        return pb.EnvStep(
            observations=self.layout.observations(obs),
            rewards=rewards,
            terminated=term,
            truncated=trunc,
            success=success,
            messages=messages,
            final_observations=self.layout.observations(finals) if finals else [],
        )


def attach(
    make_env: Callable[..., Any],
    address: str = "127.0.0.1:50061",
    num_envs: int = 1,
    token: Optional[str] = None,
    *,
    message_key: Optional[str] = "auto",
    env_name: Optional[str] = None,
    max_steps: Optional[int] = None,
    stop: Optional[threading.Event] = None,
    reconnect: bool = True,
    max_reconnect_seconds: float = 300.0,
    seed: Optional[int] = None,
    protocol_version: int = PROTOCOL_VERSION,
    tls_ca: Optional[str] = None,
    tls_domain: Optional[str] = None,
) -> AttachResult:
    """Attaches `num_envs` environments made by `make_env()` (or `make_env(index)`) to the
    actor at `address` and steps them with the actions it sends, until `max_steps` env
    steps, until `stop` is set, or until the actor refuses the stream.

    Observations are declared from the first env's spaces (Box, Discrete, MultiDiscrete,
    MultiBinary, or a Dict of them; a Dict entry `message` of bytes, or the one named by
    `message_key`, becomes the step's text message). The action space must be Discrete.

    When the connection drops, the envs are reset and the stream is reopened with backoff
    (the actor discards the interrupted rollouts), for up to `max_reconnect_seconds` without
    success. Refusals raise a subclass of `HubError` naming the field at fault.

    With `tls_ca` (a PEM file; `ONI_TLS_CA` by default) the stream runs over TLS and the
    hub's certificate must be signed by that CA; `tls_domain` is the name to check in it when
    it differs from the host dialled."""
    import os

    token = token if token is not None else os.environ.get("ONI_TOKEN", "")
    tls_ca = tls_ca if tls_ca is not None else os.environ.get("ONI_TLS_CA") or None
    channel = _channel_maker(tls_ca, tls_domain)
    envs = _make_envs(make_env, num_envs)
    layout = layout_of(envs[0].observation_space, envs[0].action_space, message_key)
    name = env_name or getattr(getattr(envs[0], "spec", None), "id", None) or type(envs[0]).__name__
    hello = layout.hello(name, num_envs, token, protocol_version)
    batch = _Batch(envs, layout, seed)
    result = AttachResult()
    stop = stop or threading.Event()
    delay, down_since = 0.1, None
    try:
        while not stop.is_set() and (max_steps is None or result.steps < max_steps):
            try:
                _session(channel(address), hello, batch, result, max_steps, stop)
                return result
            except grpc.RpcError as e:
                err = from_rpc(e)
            if not reconnect or err.code not in RETRYABLE:
                raise err
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > max_reconnect_seconds:
                raise ConnectionLostError(err.code, f"no connection to {address} for {max_reconnect_seconds:.0f} s: {err.details}")
            result.reconnects += 1
            log.warning("stream to %s lost (%s); reconnecting in %.1f s", address, err, delay)
            stop.wait(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
        return result
    finally:
        for env in envs:
            try:
                env.close()
            except Exception:  # closing is best effort
                pass


def _channel_maker(tls_ca: Optional[str], tls_domain: Optional[str]) -> Callable[[str], grpc.Channel]:
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    if tls_ca is None:
        return lambda address: grpc.insecure_channel(address, options=options)
    with open(tls_ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    if tls_domain:
        options.append(("grpc.ssl_target_name_override", tls_domain))
    return lambda address: grpc.secure_channel(address, credentials, options=options)


def _session(channel: grpc.Channel, hello: pb.Hello, batch: _Batch, result: AttachResult, max_steps: Optional[int], stop: threading.Event) -> None:
    with channel:
        stub = pb_grpc.EnvHubStub(channel)
        out = _Outbox()
        out.put(pb.ClientMessage(hello=hello))
        responses = stub.Attach(iter(out))
        try:
            first = next(responses)
            if first.WhichOneof("kind") != "welcome":
                raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, "the actor did not answer the Hello with a Welcome")
            log.info("attached %d envs to actor %s (slots from %d)", len(batch.envs), first.welcome.actor_id, first.welcome.first_slot)
            out.put(pb.ClientMessage(step=batch.reset()))
            for m in responses:
                if m.WhichOneof("kind") != "actions":
                    continue
                actions = m.actions.actions
                if len(actions) != len(batch.envs):
                    raise HubError(grpc.StatusCode.INTERNAL, f"the actor sent {len(actions)} actions for {len(batch.envs)} envs")
                out.put(pb.ClientMessage(step=batch.step(actions, result)))
                if stop.is_set() or (max_steps is not None and result.steps >= max_steps):
                    return
        finally:
            out.put(None)
            responses.cancel()
