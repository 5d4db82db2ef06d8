"""The arrays pack: numpy array creation, element-wise operations and reductions.

Array ports have the type ``ndarray``; a list or a number given as a literal is
turned into an array by the node.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np

from integration.graph import Port, node

PACK = "arrays"

Array = np.ndarray

# creation ----------------------------------------------------------------------------


@node
def array(values: Array, dtype: str | None = None) -> Array:
    """An array from a (nested) list of numbers."""
    return np.asarray(values, dtype=dtype)


@node
def zeros(shape: list, dtype: str = "float64") -> Array:
    """An array of zeros with the given shape."""
    return np.zeros(shape, dtype=dtype)


@node
def ones(shape: list, dtype: str = "float64") -> Array:
    """An array of ones with the given shape."""
    return np.ones(shape, dtype=dtype)


@node
def full(shape: list, fill_value: float) -> Array:
    """An array of the given shape filled with one value."""
    return np.full(shape, fill_value)


@node
def arange(start: float = 0, stop: float = 10, step: float = 1) -> Array:
    """Evenly spaced values in [start, stop)."""
    return np.arange(start, stop, step)


@node
def linspace(start: float, stop: float, num: Annotated[int, Port(min=1)] = 50) -> Array:
    """num evenly spaced values from start to stop inclusive."""
    return np.linspace(start, stop, num)


@node
def random(shape: list, seed: Annotated[int, Port(min=0)] = 0) -> Array:
    """Uniform random values in [0, 1), reproducible from the seed."""
    return np.random.default_rng(seed).random(shape)


# element-wise ------------------------------------------------------------------------


@node
def add(a: Array, b: Array) -> Array:
    """a + b, element-wise with broadcasting."""
    return np.add(a, b)


@node
def subtract(a: Array, b: Array) -> Array:
    """a - b, element-wise with broadcasting."""
    return np.subtract(a, b)


@node
def multiply(a: Array, b: Array) -> Array:
    """a * b, element-wise with broadcasting."""
    return np.multiply(a, b)


@node
def divide(a: Array, b: Array) -> Array:
    """a / b, element-wise with broadcasting."""
    return np.divide(a, b)


@node
def power(a: Array, exponent: float) -> Array:
    """a ** exponent, element-wise."""
    return np.power(a, exponent)


@node
def sqrt(a: Array) -> Array:
    """The element-wise square root."""
    return np.sqrt(a)


@node
def exp(a: Array) -> Array:
    """The element-wise exponential."""
    return np.exp(a)


@node
def log(a: Array) -> Array:
    """The element-wise natural logarithm."""
    return np.log(a)


@node(name="abs")
def abs_(a: Array) -> Array:
    """The element-wise absolute value."""
    return np.abs(a)


@node
def clip(a: Array, low: float, high: float) -> Array:
    """Values limited to [low, high]."""
    return np.clip(a, low, high)


@node
def matmul(a: Array, b: Array) -> Array:
    """The matrix product a @ b."""
    return np.matmul(a, b)


@node
def reshape(a: Array, shape: list) -> Array:
    """The same values in a new shape."""
    return np.reshape(a, shape)


# reductions --------------------------------------------------------------------------


@node
def reduce(
    a: Array,
    op: Literal["sum", "mean", "min", "max", "std", "prod"] = "sum",
    axis: int | None = None,
) -> Array:
    """Reduce an array with sum, mean, min, max, std or prod, over one axis or all."""
    return getattr(np, op)(a, axis=axis)


@node(name="sum")
def sum_(a: Array) -> float:
    """The sum of all elements."""
    return float(np.sum(a))


@node
def mean(a: Array) -> float:
    """The mean of all elements."""
    return float(np.mean(a))


@node(name="min")
def min_(a: Array) -> float:
    """The smallest element."""
    return float(np.min(a))


@node(name="max")
def max_(a: Array) -> float:
    """The largest element."""
    return float(np.max(a))


@node
def std(a: Array) -> float:
    """The standard deviation of all elements."""
    return float(np.std(a))


@node
def shape(a: Array) -> list:
    """The array's shape as a list."""
    return list(np.shape(a))


@node
def to_list(a: Array) -> list:
    """The array as nested Python lists."""
    return np.asarray(a).tolist()
