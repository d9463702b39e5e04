"""`modal.call_graph`: what `FunctionCall.get_call_graph()` returns, with Modal's names and values.

Modal's server answers a call-graph request with two flat lists (function calls, and their inputs), and
the client rebuilds the tree (`modal/call_graph.py::_reconstruct_call_graph`). The store here keeps the
same two kinds of facts, so the rebuilding below follows Modal's rules: an input whose function call
has no parent input is a root; one whose parent input is unknown is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class InputStatus(IntEnum):
    """Enum representing status of a function input."""

    # Modal's values (api_pb2.GenericResult.GenericStatus), so int(status) matches Modal's too.
    PENDING = 0
    SUCCESS = 1
    FAILURE = 2
    INIT_FAILURE = 5
    TERMINATED = 3
    TIMEOUT = 4

    @classmethod
    def _missing_(cls, value: object) -> InputStatus:
        return cls.PENDING  # as Modal: a status this client does not know reads as pending


@dataclass
class InputInfo:
    """Simple data structure storing information about a function input."""

    input_id: str
    function_call_id: str
    task_id: str
    status: InputStatus
    function_name: str
    module_name: str
    children: list[InputInfo]


@dataclass(frozen=True)
class FunctionCallNode:
    """One function call, as the store knows it (Modal's FunctionCallCallGraphInfo)."""

    function_call_id: str
    parent_input_id: str  # "" for a call made outside any input (a root)
    function_name: str
    module_name: str


@dataclass(frozen=True)
class InputNode:
    """One input of a function call (Modal's InputCallGraphInfo)."""

    input_id: str
    function_call_id: str
    task_id: str
    status: InputStatus


def reconstruct_call_graph(function_calls: Iterable[FunctionCallNode], inputs: Iterable[InputNode]) -> list[InputInfo]:
    """The roots of the tree the flat lists describe, children in the order their inputs are listed."""
    calls_by_id = {fc.function_call_id: fc for fc in function_calls}
    inputs_by_id = {i.input_id: i for i in inputs}
    built: dict[str, InputInfo] = {}
    roots: list[InputInfo] = []

    def build(input_id: str) -> InputInfo | None:
        if input_id in built:
            return built[input_id]
        node = inputs_by_id.get(input_id)
        if node is None:
            return None  # not recorded (or forgotten): its subtree is left out, as on Modal
        fc = calls_by_id.get(node.function_call_id)
        if fc is None:
            return None
        info = built[input_id] = InputInfo(
            node.input_id, node.function_call_id, node.task_id, InputStatus(node.status), fc.function_name,
            fc.module_name, [],
        )
        if fc.parent_input_id:
            parent = build(fc.parent_input_id)
            if parent is not None:
                parent.children.append(info)
        else:
            roots.append(info)
        return info

    for input_id in inputs_by_id:
        build(input_id)
    return roots


# Modal's own name for the rebuilding (private there too).
_reconstruct_call_graph = reconstruct_call_graph

__all__ = ["InputInfo", "InputStatus"]
