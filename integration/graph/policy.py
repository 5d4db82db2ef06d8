"""Error policies: what to do when a node fails.

    >>> from integration.graph.policy import ErrorPolicy, RetryPolicy
    >>> RetryPolicy(attempts=3, delay_seconds=0.5, backoff_factor=2).delays()
    [0.5, 1.0, 2.0]
    >>> ErrorPolicy.model_validate("skip").action
    'skip'

A policy has three parts, each optional:

- ``retry``: try again, with backoff (Prefect ``retries``, ``retry_delay_seconds``,
  ``retry_jitter_factor`` and ``retry_condition_fn``);
- ``timeout_seconds``: fail as ``timeout`` when one attempt runs longer (Prefect
  ``timeout_seconds``, enforced by the engine on every strategy);
- ``action``: what happens once the retries are spent: ``fail`` (the default; the
  node's dependents do not run and the run fails), ``fallback`` (a fallback node type
  or default outputs stand in, and dependents run), ``skip`` (the node and its
  dependents are skipped and the run ends ``partial``) or ``halt`` (nothing new
  starts, running nodes finish, and the run ends ``halted``, ready to resume).

A node type sets a default (``@node(on_error=...)``), a node in a document overrides it
field by field (``on_error:``), and ``execution.retry_attempts``, ``retry_delay`` and
``timeout_seconds`` fill what neither sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from integration.errors import ErrorType, classify_exception

if TYPE_CHECKING:
    from integration.config import NodegraphConfig

MAX_TIMEOUT_SECONDS = 30 * 86400.0
"""The longest ``timeout_seconds`` (30 days): Python's and Prefect's timers overflow on
values such as 1e30."""
MAX_RETRY_DELAY_SECONDS = 86400.0
"""The longest delay before a retry (one day)."""

# Which failures a retry may help by default: not bad inputs, not a failed upstream.
DEFAULT_RETRY_ON = (ErrorType.RUNTIME.value, ErrorType.TIMEOUT.value, ErrorType.RESOURCE.value)


class RetryPolicy(BaseModel):
    """Retry a failed node with exponential backoff.

    ``on`` lists error types (``runtime``, ``timeout``, ``resource``, ``validation``,
    ``dependency``) and exception class names (``ConnectionError``, or qualified like
    ``requests.exceptions.HTTPError``); a failure qualifies when it matches any of them,
    including by a base class. By default runtime, timeout and resource errors qualify.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    attempts: int = Field(ge=0, le=50, description="Retries after the first try.")
    delay_seconds: float = Field(
        default=1.0, ge=0, le=MAX_RETRY_DELAY_SECONDS, description="The first retry's delay."
    )
    backoff_factor: float = Field(default=2.0, ge=1, le=100, description="Delay growth per retry.")
    jitter: float = Field(
        default=0.0, ge=0, le=10, description="Random extra delay, as a fraction."
    )
    on: tuple[str, ...] = Field(default=DEFAULT_RETRY_ON, description="What qualifies.")

    @field_validator("on", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bounded_delays(self) -> RetryPolicy:
        # Prefect sleeps each delay; a sleep past what the clock can count overflows.
        if self.attempts and self.delays()[-1] > MAX_RETRY_DELAY_SECONDS:
            raise ValueError(
                f"the last retry's delay, delay_seconds * backoff_factor ** (attempts - 1) "
                f"= {self.delays()[-1]:.3g} s, is over the max retry delay of "
                f"{MAX_RETRY_DELAY_SECONDS:g} s (one day)"
            )
        return self

    def delays(self) -> list[float]:
        """The delay before each retry, in seconds."""
        return [self.delay_seconds * self.backoff_factor**i for i in range(self.attempts)]

    def qualifies(self, exc: BaseException) -> bool:
        """Whether a retry may help with ``exc``."""
        if classify_exception(exc).value in self.on:
            return True
        names = set()
        for cls in type(exc).__mro__:
            names.add(cls.__name__)
            names.add(f"{cls.__module__}.{cls.__qualname__}")
        return any(entry in names for entry in self.on)


class FallbackPolicy(BaseModel):
    """What stands in for a node that failed: another node type run on the same inputs
    (``type``, with extra ``params``), or fixed values per output port (``outputs``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str | None = Field(default=None, description="A node type run on the same inputs.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Literal inputs of the fallback type."
    )
    outputs: dict[str, Any] | None = Field(
        default=None, description="A value for each output port of the node."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> FallbackPolicy:
        if (self.type is None) == (self.outputs is None):
            raise ValueError("a fallback names either a node 'type' or default 'outputs'")
        if self.params and self.type is None:
            raise ValueError("fallback 'params' go with a fallback 'type'")
        return self


Action = Literal["fail", "fallback", "skip", "halt"]


class ErrorPolicy(BaseModel):
    """A node's error policy (``on_error:`` in a document).

    A bare action is shorthand: ``on_error: skip`` is ``{action: skip}``. A ``fallback``
    without an ``action`` implies ``action: fallback``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    retry: RetryPolicy | None = None
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, description="Longest one attempt may run."
    )
    action: Action | None = Field(
        default=None, description="What happens once retries are spent (default: fail)."
    )
    fallback: FallbackPolicy | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"action": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> ErrorPolicy:
        if self.fallback is not None and self.action is None:
            object.__setattr__(self, "action", "fallback")
        if self.action == "fallback" and self.fallback is None:
            raise ValueError("action 'fallback' needs a 'fallback' (a node type or outputs)")
        if self.fallback is not None and self.action != "fallback":
            raise ValueError(f"a 'fallback' is given but the action is {self.action!r}")
        return self

    @property
    def final_action(self) -> Action:
        """The action that applies when the node finally fails."""
        return self.action or "fail"

    def merged_over(self, default: ErrorPolicy | None) -> ErrorPolicy:
        """This policy, with fields it leaves unset taken from ``default``."""
        if default is None:
            return self
        own_action = self.action is not None
        return ErrorPolicy(
            retry=self.retry if self.retry is not None else default.retry,
            timeout_seconds=(
                self.timeout_seconds
                if self.timeout_seconds is not None
                else default.timeout_seconds
            ),
            action=self.action if own_action else default.action,
            fallback=self.fallback if own_action else default.fallback,
        )


def default_policy(config: NodegraphConfig) -> ErrorPolicy:
    """The policy the configuration gives nodes: retries and timeout."""
    return ErrorPolicy(
        retry=default_retry(config), timeout_seconds=config.execution.timeout_seconds
    )


def default_retry(config: NodegraphConfig) -> RetryPolicy | None:
    """The retry policy ``execution.retry_attempts`` / ``retry_delay`` give, if any."""
    attempts = config.execution.retry_attempts
    if attempts <= 0:
        return None
    return RetryPolicy(attempts=attempts, delay_seconds=config.execution.retry_delay)
