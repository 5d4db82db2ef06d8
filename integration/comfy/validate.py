"""Check a prompt the way ComfyUI's ``validate_prompt`` does, with its error types.

    >>> from integration.graph import NodeRegistry
    >>> registry = NodeRegistry.default()
    >>> prompt = {"1": {"class_type": "StubInt", "inputs": {}},
    ...           "2": {"class_type": "TestRecord", "inputs": {"value": ["1", 0]}}}
    >>> try:
    ...     validate_prompt(prompt, registry.comfy_types())
    ... except GraphValidationError as exc:
    ...     exc.node_errors["1"]["errors"][0]["type"]
    'required_input_missing'

Validation starts at the output nodes (or the nodes asked for) and walks their inputs,
so nodes that nothing needs are not checked, as in ComfyUI. Every problem is collected
in one pass and raised as a ``GraphValidationError`` whose ``node_errors`` has
ComfyUI's shape: ``required_input_missing``, ``bad_linked_input``,
``return_type_mismatch``, ``invalid_input_type``, ``value_smaller_than_min``,
``value_bigger_than_max``, ``value_not_in_list``, ``custom_validation_failed``,
``exception_during_validation``, ``missing_node_type``, ``dependency_cycle``,
``invalid_prompt`` (an entry, or the prompt, of the wrong shape; reported alone, since
nothing else can be checked then) and, for the prompt as a whole, ``prompt_no_outputs``.

Literal values are converted as ComfyUI converts them (``INT`` to ``int`` and so on);
the converted prompt is returned.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from integration.comfy import dynamic
from integration.comfy.nodes import ComfyNodeType, map_over_list
from integration.comfy.runtime import ExecutionBlocker, is_link
from integration.comfy.shapes import api_entry_problems, document_problem, name_of
from integration.comfy.signatures import InputSpec, Signatures
from integration.comfy.workflow import to_api
from integration.errors import summarize_value
from integration.graph.nodetype import NodeType
from integration.graph.order import CycleError, topological_order
from integration.graph.validate import GRAPH, GraphValidationError, Problem

_CONVERSIONS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


@dataclass
class ValidPrompt:
    """A prompt that passed: its converted copy and the output nodes to run; where only
    some outputs passed (partial validation), ``rejected`` holds why the others did not."""

    prompt: dict[str, Any]
    outputs: list[str]
    rejected: GraphValidationError | None = None

    @property
    def node_errors(self) -> dict[str, dict[str, Any]]:
        """ComfyUI's ``node_errors`` of the outputs left out (empty when none were)."""
        return {} if self.rejected is None else self.rejected.node_errors


def types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's ``validate_node_input``: ``*`` and MatchType match anything; comma lists
    are unions."""
    if received == expected or dynamic.MATCH_TYPE in (received, expected):
        return True  # a MatchType takes its type from what is linked
    if isinstance(expected, list | tuple):
        expected = "COMBO"
    if isinstance(received, list | tuple):
        received = "COMBO"
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    received_types = {t.strip() for t in received.split(",")}
    expected_types = {t.strip() for t in expected.split(",")}
    if "*" in received_types or "*" in expected_types:
        return True
    return bool(received_types & expected_types)


def output_nodes(prompt: Mapping[str, Any], types: Mapping[str, NodeType]) -> list[str]:
    """The prompt's output nodes (``OUTPUT_NODE = True``), in prompt order."""
    found = []
    for node_id, entry in prompt.items():
        node_type = types.get(entry.get("class_type", ""))
        if isinstance(node_type, ComfyNodeType) and node_type.signature.output_node:
            found.append(node_id)
    return found


def validate_prompt(
    prompt: Mapping[str, Any],
    types: Mapping[str, NodeType],
    targets: Sequence[str] | None = None,
    name: str = "workflow",
    partial: bool = False,
) -> ValidPrompt:
    """Check the nodes the targets (default: every output node) need.

    ``types`` maps class types to node types (``NodeRegistry.comfy_types()`` plus any
    nodegraph types the prompt uses). With ``partial``, as ComfyUI queues a prompt, the
    outputs whose nodes all pass are kept and the others left out, with their problems
    in ``rejected``; only a prompt with no valid output (or a problem of the whole
    prompt) raises. Without it, as ``nodegraph validate``, any problem raises.
    """
    too_big = document_problem(prompt)
    shapes = [Problem(GRAPH, "invalid_prompt", too_big)] if too_big else []
    shapes += [
        Problem(str(node_id), "invalid_prompt", problem)
        for node_id, entry in prompt.items()
        for problem in api_entry_problems(str(node_id), entry, inputs_required=False)
    ]
    if shapes:
        # Nothing below can read a malformed entry, so these are reported alone.
        raise GraphValidationError(name, shapes, _class_types(prompt))
    checker = _Checker(copy.deepcopy(dict(prompt)), types)
    unknown = [node_id for node_id, entry in prompt.items() if entry.get("class_type") not in types]
    for node_id in unknown:
        class_type = prompt[node_id].get("class_type")
        checker.add(
            node_id,
            "missing_node_type",
            f"Node '{class_type}' not found. The custom node may not be installed.",
            f"node {node_id} has class_type {class_type!r}; load the pack that defines it",
        )
    if targets is None:
        roots = output_nodes(prompt, types)
    else:
        roots = []
        for target in targets:
            if target in prompt:
                roots.append(target)
            else:
                checker.add(
                    GRAPH,
                    "invalid_target",
                    f"Node {target!r} is not in the workflow",
                    "outputs asked for must be node ids of the workflow",
                )
    if not roots and not unknown and targets is None:
        checker.add(GRAPH, "prompt_no_outputs", "Prompt has no outputs", "add an output node")
    cycle = _cycle(prompt)
    if cycle:
        checker.add(
            cycle[0],
            "dependency_cycle",
            "Dependency cycle detected",
            " -> ".join(cycle),
        )
    else:
        for root in roots:
            checker.check(root)
    if checker.problems:
        dependent = checker.dependent_outputs(roots)
        error = GraphValidationError(name, checker.problems, _class_types(prompt), dependent)
        if partial and all(p.node_id != GRAPH for p in checker.problems):
            failed = {root for outputs in dependent.values() for root in outputs}
            passed = [root for root in roots if root not in failed]
            if passed:
                return ValidPrompt(checker.prompt, passed, rejected=error)
        raise error
    return ValidPrompt(checker.prompt, roots)


def _class_types(prompt: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(node_id): entry["class_type"]
        for node_id, entry in prompt.items()
        if isinstance(entry, Mapping) and isinstance(entry.get("class_type"), str)
    }


def _cycle(prompt: Mapping[str, Any]) -> list[str] | None:
    predecessors = {
        node_id: [str(v[0]) for v in (entry.get("inputs") or {}).values() if is_link(v)]
        for node_id, entry in prompt.items()
    }
    predecessors = {n: [p for p in ps if p in predecessors] for n, ps in predecessors.items()}
    try:
        topological_order(predecessors)
    except CycleError as exc:
        return exc.path
    return None


class _Checker:
    def __init__(self, prompt: dict[str, Any], types: Mapping[str, NodeType]) -> None:
        self.prompt = prompt
        self.types = types
        self.problems: list[Problem] = []
        self.checked: set[str] = set()

    def add(self, node_id: str, code: str, message: str, details: str = "") -> None:
        self.problems.append(Problem(node_id, code, message, details))

    def dependent_outputs(self, roots: Sequence[str]) -> dict[str, list[str]]:
        """Per node with a problem, the roots that link to it, directly or not.

        Each node gets a bit set of the roots above it, spread from the roots up the
        links: linear in the links, where a walk per root is roots times nodes."""
        bad = dict.fromkeys(p.node_id for p in self.problems)
        linked = {node_id: self._linked(node_id) for node_id in self.prompt}
        masks: dict[str, int] = {}
        for index, root in enumerate(roots):
            if root in self.prompt:
                masks[root] = masks.get(root, 0) | 1 << index
        try:
            order = topological_order(linked)
        except CycleError:
            order = None
        if order is not None:  # consumers before what they link to: each node once
            for node_id in reversed(order):
                for source_id in linked[node_id] if node_id in masks else ():
                    masks[source_id] = masks.get(source_id, 0) | masks[node_id]
        else:
            work = list(masks)
            while work:
                node_id = work.pop()
                for source_id in linked[node_id]:
                    merged = masks.get(source_id, 0) | masks[node_id]
                    if merged != masks.get(source_id, 0):
                        masks[source_id] = merged
                        work.append(source_id)
        found: dict[str, list[str]] = {}
        for node_id in bad:
            bits = bin(masks.get(node_id, 0))[:1:-1]  # bit i is roots[i]
            index = bits.find("1")
            while index >= 0:
                found.setdefault(node_id, []).append(roots[index])
                index = bits.find("1", index + 1)
        return found

    def check(self, root: str) -> None:
        """Check a node and, first, every node it links to, with a stack: a chain of any
        length costs no recursion. Cycles were ruled out before."""
        stack = [(root, False)]
        while stack:
            node_id, sources_done = stack.pop()
            if sources_done:
                self._check_node(node_id)
                continue
            if node_id in self.checked:
                continue
            self.checked.add(node_id)
            stack.append((node_id, True))
            for source_id in reversed(self._sources(node_id)):
                if source_id not in self.checked:
                    stack.append((source_id, False))

    def _linked(self, node_id: str) -> list[str]:
        """The nodes that ``node_id`` links to, except through a slot its source does not
        have (that link is the problem, not a dependency)."""
        found = []
        for value in (self.prompt[node_id].get("inputs") or {}).values():
            if not is_link(value) or value[0] not in self.prompt:
                continue
            source_type = self.types.get(self.prompt[value[0]]["class_type"])
            if source_type is None or int(value[1]) < len(_return_types(source_type)):
                found.append(value[0])
        return found

    def _sources(self, node_id: str) -> list[str]:
        """The nodes that ``node_id``'s well-formed links reach (``_link`` checks them)."""
        entry = self.prompt[node_id]
        if entry.get("class_type") not in self.types:
            return []
        found = []
        for value in (entry.get("inputs") or {}).values():
            if not is_link(value) or value[0] not in self.prompt:
                continue
            source_type = self.types.get(self.prompt[value[0]]["class_type"])
            if source_type is not None and 0 <= int(value[1]) < len(_return_types(source_type)):
                found.append(value[0])
        return found

    def _check_node(self, node_id: str) -> None:
        entry = self.prompt[node_id]
        node_type = self.types.get(entry.get("class_type", ""))
        if node_type is None:
            return
        inputs = entry.setdefault("inputs", {})
        received: dict[str, Any] = {}
        for input_name, value in list(inputs.items()):
            if isinstance(value, list) and not is_link(value) and _looks_like_link(value):
                self.add(
                    node_id,
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    f"{input_name}, {summarize_value(value)}",
                )
            elif is_link(value):
                received_type = self._link(node_id, node_type, input_name, value)
                if received_type is not None:
                    received[input_name] = received_type
        if isinstance(node_type, ComfyNodeType):
            self._comfy_inputs(node_id, node_type, inputs, received)

    def _link(self, node_id: str, node_type: NodeType, input_name: str, value: list[Any]) -> Any:
        source_id, slot = str(value[0]), int(value[1])
        if source_id not in self.prompt:
            self.add(
                node_id,
                "bad_linked_input",
                "Bad linked input: the linked node does not exist",
                f"{input_name} links to node {source_id}",
            )
            return None
        source_type = self.types.get(self.prompt[source_id].get("class_type", ""))
        if source_type is None:
            return None  # reported as missing_node_type
        return_types = _return_types(source_type)
        if slot < 0 or slot >= len(return_types):
            self.add(
                node_id,
                "bad_linked_input",
                "Bad linked input: the linked node has no such output",
                f"{input_name} links to output {slot} of node {source_id}, which has "
                f"{len(return_types)} output(s)",
            )
            return None
        return return_types[slot]

    def _comfy_inputs(
        self,
        node_id: str,
        node_type: ComfyNodeType,
        inputs: dict[str, Any],
        received: dict[str, Any],
    ) -> None:
        signature = node_type.signature
        validator = node_type.validator() if node_type.defines("VALIDATE_INPUTS") else None
        validated_names: set[str] = set()
        takes_kwargs = False
        if validator is not None:
            parameters = inspect.signature(validator).parameters.values()
            validated_names = {p.name for p in parameters if p.kind != p.VAR_KEYWORD}
            takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in parameters)
        for spec in signature.expanded(inputs):
            if spec.name not in inputs:
                if spec.category == "required":
                    self.add(
                        node_id,
                        "required_input_missing",
                        "Required input is missing",
                        spec.name.rpartition(".")[2],
                    )
                continue
            value = inputs[spec.name]
            if is_link(value):
                received_type = received.get(spec.name)
                if (
                    received_type is not None
                    and "input_types" not in validated_names
                    and not types_match(received_type, spec.type if not spec.choices else "COMBO")
                ):
                    self.add(
                        node_id,
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        f"{spec.name}, received_type({received_type}) mismatch "
                        f"input_type({spec.type})",
                    )
                continue
            self._literal(
                node_id, spec, inputs, value, takes_kwargs or spec.name in validated_names
            )
        if validator is not None:
            self._custom(node_id, node_type, inputs, received, validated_names, takes_kwargs)

    def _literal(
        self, node_id: str, spec: InputSpec, inputs: dict[str, Any], value: Any, custom: bool
    ) -> None:
        convert = _CONVERSIONS.get(spec.type)
        if convert is not None:
            try:
                value = convert(value)
            except Exception as exc:
                self.add(
                    node_id,
                    "invalid_input_type",
                    f"Failed to convert an input value to a {spec.type} value",
                    f"{spec.name}, {summarize_value(value)}, {name_of(str(exc), 200)}",
                )
                return
            inputs[spec.name] = value
        if custom:
            return  # VALIDATE_INPUTS takes over this input's checks, as in ComfyUI
        try:
            if spec.minimum is not None and value < spec.minimum:
                self.add(
                    node_id,
                    "value_smaller_than_min",
                    f"Value {summarize_value(value)} smaller than min of {spec.minimum}",
                    spec.name,
                )
            if spec.maximum is not None and value > spec.maximum:
                self.add(
                    node_id,
                    "value_bigger_than_max",
                    f"Value {summarize_value(value)} bigger than max of {spec.maximum}",
                    spec.name,
                )
        except TypeError:
            pass  # a non-number: its type was not one ComfyUI converts
        if spec.choices is not None and value not in spec.choices:
            shown = list(spec.choices)
            listed = shown if len(shown) <= 20 else [*shown[:20], "..."]
            self.add(
                node_id,
                "value_not_in_list",
                "Value not in list",
                f"{spec.name}: {summarize_value(value)} not in {listed}",
            )

    def _custom(
        self,
        node_id: str,
        node_type: ComfyNodeType,
        inputs: Mapping[str, Any],
        received: Mapping[str, Any],
        names: set[str],
        takes_kwargs: bool,
    ) -> None:
        arguments: dict[str, list[Any]] = {}
        for input_name, value in inputs.items():
            if input_name in names or takes_kwargs:
                # Linked values are not known before the run: ComfyUI passes None.
                arguments[input_name] = [None if is_link(value) else value]
        if "input_types" in names:
            arguments["input_types"] = [dict(received)]
        try:
            verdicts = map_over_list(node_type.calls(instance=False), arguments, "VALIDATE_INPUTS")
        except Exception as exc:
            self.add(
                node_id,
                "exception_during_validation",
                "Exception when validating node",
                f"{type(exc).__name__}: {exc}",
            )
            return
        for verdict in verdicts:
            if verdict is True or isinstance(verdict, ExecutionBlocker):
                continue
            details = ", ".join(sorted(arguments))
            if verdict is not False:
                details += f" - {verdict}"
            self.add(
                node_id, "custom_validation_failed", "Custom validation failed for node", details
            )


def _looks_like_link(value: list[Any]) -> bool:
    return len(value) == 2 and isinstance(value[0], str) and not isinstance(value[1], int | float)


def _return_types(node_type: NodeType) -> list[str]:
    if isinstance(node_type, ComfyNodeType):
        return list(node_type.signature.return_types)
    return [port.type for port in node_type.outputs.values()]


def check_workflow(
    graph: Any,
    registry: Any,
    signatures: Any = None,
    outputs: Sequence[str] | None = None,
    input_values: Mapping[str, Any] | None = None,
    partial: bool = False,
) -> tuple[ValidPrompt, dict[str, NodeType]]:
    """A ComfyUI graph as a checked prompt, and the node types it runs.

    ``registry`` supplies the classes (and their signatures, with ``signatures`` added);
    types nodegraph knows by name (``core.add``) may appear too. ``partial`` is
    ``validate_prompt``'s.
    """
    known = Signatures.from_registry(registry, signatures)
    prompt = to_api(graph, known, input_values, registry)
    # Every ComfyUI class, not only the prompt's: expansion may add any of them.
    types: dict[str, NodeType] = dict(registry.comfy_types())
    for entry in prompt.values():
        found = registry.find(entry["class_type"])
        if found is not None:
            types.setdefault(entry["class_type"], found)
    return validate_prompt(prompt, types, outputs, graph.name, partial), types
