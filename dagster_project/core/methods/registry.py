"""Registry of unlearning methods: each method file registers itself by name, once.

Modelled on peft's `register_peft_method`: keyword-only, refuses duplicates and bad names, so
a typo or a second definition fails at import time instead of silently shadowing a method.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dagster_project.core.methods.base import MethodConfig, UnlearningMethod

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type[MethodConfig]
    method_cls: type[UnlearningMethod]


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(*, name: str, config_cls: type[MethodConfig], method_cls: type[UnlearningMethod]) -> None:
    if not _NAME.match(name):
        raise ValueError(f"method name must match {_NAME.pattern}, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered (by {_REGISTRY[name].method_cls.__qualname__})")
    if not issubclass(config_cls, MethodConfig) or not issubclass(method_cls, UnlearningMethod):
        raise TypeError(f"method {name!r}: config_cls must subclass MethodConfig and method_cls UnlearningMethod")
    _REGISTRY[name] = MethodSpec(name=name, config_cls=config_cls, method_cls=method_cls)


def get_method(name: str) -> MethodSpec:
    import dagster_project.core.methods  # noqa: F401  (importing the package registers every method file)

    if name not in _REGISTRY:
        raise KeyError(f"unknown unlearning method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[name]


def available_methods() -> list[str]:
    import dagster_project.core.methods  # noqa: F401

    return sorted(_REGISTRY)
