"""Error policies: what to do when a node fails. Today: retries.

    >>> from integration.graph.policy import RetryPolicy
    >>> RetryPolicy(attempts=3, delay_seconds=0.5, backoff_factor=2).delays()
    [0.5, 1.0, 2.0]

A node type sets a default (``@node(on_error=...)``), a node in a document overrides it
(``on_error:``), and ``execution.retry_attempts`` / ``execution.retry_delay`` give the
default for nodes that set nothing. The Prefect translator maps a retry policy onto the
task's ``retries``, ``retry_delay_seconds``, ``retry_jitter_factor`` and
``retry_condition_fn``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from integration.errors import ErrorType, classify_exception

# Which failures a retry may help by default: not bad inputs, not a failed upstream.
DEFAULT_RETRY_ON = (ErrorType.RUNTIME.value, ErrorType.TIMEOUT.value, ErrorType.RESOURCE.value)


class RetryPolicy(BaseModel):
    """Retry a failed node with exponential backoff.

    ``on`` lists error types (``runtime``, ``timeout``, ``resource``, ``validation``,
    ``dependency``) and exception class names (``ConnectionError``, or qualified like
    ``requests.exceptions.HTTPError``); a failure qualifies when it matches any of them,
    including by a base class. By default runtime, timeout and resource errors qualify.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(ge=0, le=50, description="Retries after the first try.")
    delay_seconds: float = Field(default=1.0, ge=0, description="The first retry's delay.")
    backoff_factor: float = Field(default=2.0, ge=1, description="Delay growth per retry.")
    jitter: float = Field(default=0.0, ge=0, description="Random extra delay, as a fraction.")
    on: tuple[str, ...] = Field(default=DEFAULT_RETRY_ON, description="What qualifies.")

    @field_validator("on", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

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


class ErrorPolicy(BaseModel):
    """A node's error policy (``on_error:`` in a document)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry: RetryPolicy | None = None

    def merged_over(self, default: ErrorPolicy | None) -> ErrorPolicy:
        """This policy, with fields it leaves unset taken from ``default``."""
        if default is None:
            return self
        return ErrorPolicy(retry=self.retry if self.retry is not None else default.retry)
