"""What callers may choose: `Policy`, applied to each request after its options were read.

Stdlib and `_wire` only. `_options.request_options` has already kept the known sampling
options (checked for type) and dropped the rest with a WARNING; `apply_policy` then checks
their ranges and lets the operator's choices win: the model, a ``max_tokens`` ceiling and a
system prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._wire._dialect import ChatRequest
from ._options import InvalidOption

__all__ = ["OPTION_RANGES", "Policy", "apply_policy"]

log = logging.getLogger("aistream.server")

#: The accepted range of each numeric option, inclusive (what the providers accept).
OPTION_RANGES: Final[Mapping[str, tuple[float, float]]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "top_k": (1, 1000),
    "max_tokens": (1, 1_000_000),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "seed": (-(2**63), 2**63 - 1),
}


@dataclass(frozen=True, slots=True)
class Policy:
    """What the operator decides and callers may not.

    Attributes:
        model: The model every request uses; a caller's ``model`` is replaced unless
            `allow_client_model`. ``create_app(model=...)`` fills it when None.
        max_tokens: A ceiling: a caller's larger ``max_tokens`` is clamped to it, and a
            request without one gets it (so no reply runs to the provider's own maximum).
        system_prompt: The system prompt of every request. Unless `allow_client_system`, a
            caller's ``systemPrompt`` is replaced and its ``system`` messages are dropped
            (with a WARNING).
        allow_client_model: Callers may pick the model (only matters when `model` is set).
        allow_client_system: Callers may add their own system prompt and messages (only
            matters when `system_prompt` is set).

    ```py
    Policy(model="gpt-4o-mini", max_tokens=1024, system_prompt="You are our support bot.")
    ```
    """

    model: str | None = None
    max_tokens: int | None = None
    system_prompt: str | None = None
    allow_client_model: bool = False
    allow_client_system: bool = False

    def __post_init__(self) -> None:
        ceiling = self.max_tokens
        if ceiling is not None and (
            isinstance(ceiling, bool) or not isinstance(ceiling, int) or ceiling < 1
        ):
            raise ValueError(f"Policy.max_tokens must be a whole number >= 1; got {ceiling!r}")


def _check_range(name: str, value: Any) -> None:
    low, high = OPTION_RANGES[name]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and math.isfinite(value) and low <= value <= high:
        return
    shown = (
        f"{low} and {high}" if name in ("seed", "max_tokens", "top_k") else f"{low:g} and {high:g}"
    )
    raise InvalidOption(name, f'"{name}" must be between {shown}; got {value!r:.60}')


def apply_policy(policy: Policy, request: ChatRequest) -> ChatRequest:
    """`request` as the policy allows it: options in range, the operator's choices applied.

    ```py
    apply_policy(Policy(model="m", max_tokens=100), request)   # model "m", max_tokens <= 100
    ```

    Raises:
        InvalidOption: a numeric option out of its range (`OPTION_RANGES`).
    """
    options = dict(request.options)
    for name in OPTION_RANGES:
        if name in options:
            _check_range(name, options[name])
    if policy.max_tokens is not None:
        options["max_tokens"] = min(options.get("max_tokens", policy.max_tokens), policy.max_tokens)
    model = request.model
    if policy.model is not None and not (policy.allow_client_model and model):
        model = policy.model
    system = request.system_prompt
    messages = request.messages
    if policy.system_prompt is not None and not policy.allow_client_system:
        kept = tuple(m for m in messages if m.role != "system")
        if len(kept) != len(messages) or (system and system != policy.system_prompt):
            log.warning(
                "dropped the caller's system prompt (%d system messages%s); "
                "the operator's applies (Policy.allow_client_system is off)",
                len(messages) - len(kept),
                ", systemPrompt" if system and system != policy.system_prompt else "",
            )
        messages, system = kept, policy.system_prompt
    elif policy.system_prompt is not None and not system:
        system = policy.system_prompt
    return dataclasses.replace(
        request, messages=messages, model=model, system_prompt=system, options=options
    )
