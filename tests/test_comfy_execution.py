"""ComfyUI execution semantics, ported from ComfyUI's own execution tests.

The scenarios follow ``tests/execution/test_execution.py`` in ComfyUI, on the
``nodes/comfy_testing`` pack: images are brightness values (0.0 black, 1.0 white), and
``TestRecord`` stands in for SaveImage. "Did run" is a node reported ``completed``;
a node served from the cache is ``cached``; a node never needed is not reported.
"""

from __future__ import annotations

import pytest

import integration
from integration.comfy.runtime import GraphBuilder
from integration.config import ExecutionConfig, NodegraphConfig
from integration.graph import GraphValidationError
from integration.result import NodeState, RunState
from tests.test_run import STRATEGIES

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _server(prefect_server):
    return prefect_server


def builder() -> GraphBuilder:
    return GraphBuilder(prefix="")


def run(graph: GraphBuilder, registry, **kwargs):
    kwargs.setdefault("cache", True)
    return integration.run(graph.finalize(), registry=registry, **kwargs)


def did_run(result, node) -> bool:
    report = result.nodes.get(node.id)
    return report is not None and report.state == NodeState.COMPLETED


def was_cached(result, node) -> bool:
    report = result.nodes.get(node.id)
    return report is not None and report.state == NodeState.CACHED


def values(result, node) -> list:
    return result.outputs[node.id]["values"]


def image(g: GraphBuilder, content: str):
    return g.node("StubImage", content=content, height=512, width=512, batch_size=1)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_lazy_input_never_runs_the_unused_branch(comfy_registry, strategy):
    g = builder()
    input1, input2 = image(g, "BLACK"), image(g, "WHITE")
    mask = g.node("StubMask", value=0.0)
    lazy_mix = g.node(
        "TestLazyMixImages", image1=input1.out(0), image2=input2.out(0), mask=mask.out(0)
    )
    output = g.node("TestRecord", value=lazy_mix.out(0))
    result = run(g, comfy_registry, cache=False, **strategy)
    assert result.state == RunState.COMPLETED, result.errors
    assert values(result, output) == [0.0]  # black
    assert did_run(result, input1)
    assert input2.id not in result.nodes
    assert did_run(result, mask)
    assert did_run(result, lazy_mix)
    assert result.nodes[lazy_mix.id].task_run_id is not None  # each node is a task run


def test_full_cache_second_run_executes_nothing(registry):
    g = builder()
    input1, input2 = image(g, "BLACK"), image(g, "NOISE")
    mask = g.node("StubMask", value=0.5)
    lazy_mix = g.node(
        "TestLazyMixImages", image1=input1.out(0), image2=input2.out(0), mask=mask.out(0)
    )
    output = g.node("TestRecord", value=lazy_mix.out(0))
    first = run(g, registry)
    second = run(g, registry)
    assert all(report.state == NodeState.COMPLETED for report in first.nodes.values())
    assert not any(did_run(second, node) for node in g.nodes.values())
    assert was_cached(second, output)
    # the cached output node still reports its UI values, noise included
    assert values(second, output) == values(first, output)


def test_partial_cache_reruns_only_what_changed(registry):
    g = builder()
    input1, input2 = image(g, "BLACK"), image(g, "NOISE")
    mask = g.node("StubMask", value=0.5)
    lazy_mix = g.node(
        "TestLazyMixImages", image1=input1.out(0), image2=input2.out(0), mask=mask.out(0)
    )
    output = g.node("TestRecord", value=lazy_mix.out(0))
    run(g, registry)
    mask.inputs["value"] = 0.4
    second = run(g, registry)
    assert was_cached(second, input1) and was_cached(second, input2)
    assert did_run(second, mask) and did_run(second, lazy_mix) and did_run(second, output)


def test_custom_is_changed_false_caches_and_nan_always_reruns(comfy_registry):
    g = builder()
    save = g.node("TestRecord")  # created first on purpose, as in ComfyUI's test
    is_changed = g.node("TestCustomIsChanged", should_change=False)
    input1 = image(g, "BLACK")
    save.set_input("value", is_changed.out(0))
    is_changed.set_input("image", input1.out(0))
    assert did_run(run(g, comfy_registry), is_changed)
    assert not did_run(run(g, comfy_registry), is_changed)
    is_changed.set_input("should_change", True)
    assert did_run(run(g, comfy_registry), is_changed)
    assert did_run(run(g, comfy_registry), is_changed)


def test_is_changed_sees_only_constants(registry):
    g = builder()
    input1 = g.node("StubConstantImage", value=0.5)
    test_node = g.node("TestIsChangedWithConstants", image=input1.out(0), value=0.5)
    output = g.node("TestRecord", value=test_node.out(0))
    first = run(g, registry)
    second = run(g, registry)
    assert values(first, output) == values(second, output) == [0.25]
    assert did_run(first, test_node) and not did_run(second, test_node)


def _validation_error(g: GraphBuilder, registry, **kwargs) -> GraphValidationError:
    with pytest.raises(GraphValidationError) as caught:
        run(g, registry, **kwargs)
    return caught.value


def _error_types(error: GraphValidationError, node) -> list[str]:
    return [e["type"] for e in error.node_errors[node.id]["errors"]]


@pytest.mark.parametrize("value,expect_error", [(5, True), ("foo", True), (5.0, False)])
def test_validation_error_literal(registry, value, expect_error):
    g = builder()
    validation1 = g.node("TestCustomValidation1", input1=value, input2=3.0)
    output = g.node("TestRecord", value=validation1.out(0))
    if expect_error:
        error = _validation_error(g, registry, cache=False)
        assert _error_types(error, validation1) == ["custom_validation_failed"]
        assert "Invalid type of input1" in error.node_errors[validation1.id]["errors"][0]["details"]
        assert error.node_errors[validation1.id]["dependent_outputs"] == [output.id]
    else:
        assert values(run(g, registry, cache=False), output) == [15.0]


@pytest.mark.parametrize(
    "test_type,test_value,node_class,expected",
    [
        ("StubInt", 5, "TestCustomValidation1", "return_type_mismatch"),
        ("StubMask", 0.5, "TestCustomValidation1", "return_type_mismatch"),
        ("StubInt", 5, "TestCustomValidation2", "custom_validation_failed"),
        ("StubFloat", 5.0, "TestCustomValidation2", None),
        ("StubInt", 5, "TestCustomValidation4", "return_type_mismatch"),
        ("StubFloat", 5.0, "TestCustomValidation4", None),
    ],
)
def test_validation_error_edge(registry, test_type, test_value, node_class, expected):
    g = builder()
    stub = g.node(test_type, value=test_value)
    validation = g.node(node_class, input1=stub.out(0), input2=3.0)
    output = g.node("TestRecord", value=validation.out(0))
    if expected is None:
        assert values(run(g, registry, cache=False), output) == [15.0]
    else:
        assert _error_types(_validation_error(g, registry), validation) == [expected]


@pytest.mark.parametrize("value2,expect_error", [(0.5, False), (5.0, False), (7.0, True)])
def test_validation_error_kwargs(registry, value2, expect_error):
    """A VALIDATE_INPUTS taking **kwargs replaces the min/max checks of every input."""
    g = builder()
    validation5 = g.node("TestCustomValidation5", input1=0.0, input2=value2)
    g.node("TestRecord", value=validation5.out(0))
    if expect_error:
        error = _validation_error(g, registry)
        assert _error_types(error, validation5) == ["custom_validation_failed"]
        assert "7s are not allowed" in error.node_errors[validation5.id]["errors"][0]["details"]
    else:
        assert run(g, registry, cache=False).ok


def test_validation_reports_every_error_type_per_node(registry):
    g = builder()
    missing = g.node("TestLazyMixImages", image1=image(g, "BLACK").out(0))  # no image2, mask
    too_small = g.node("StubMask", value=-1.0)
    too_big = g.node("StubMask", value=2.0)
    not_listed = g.node("StubImage", content="PURPLE", height=1, width=1, batch_size=1)
    unknown = g.node("NoSuchNode", value=1)
    for node in (missing, too_small, too_big, not_listed, unknown):
        g.node("TestRecord", value=node.out(0))
    error = _validation_error(g, registry)
    assert _error_types(error, missing) == ["required_input_missing", "required_input_missing"]
    assert _error_types(error, too_small) == ["value_smaller_than_min"]
    assert _error_types(error, too_big) == ["value_bigger_than_max"]
    assert _error_types(error, not_listed) == ["value_not_in_list"]
    assert _error_types(error, unknown) == ["missing_node_type"]
    assert "NoSuchNode" in error.node_errors[unknown.id]["errors"][0]["message"]
    assert error.node_errors[missing.id]["class_type"] == "TestLazyMixImages"


def test_static_cycle_and_no_outputs_are_validation_errors(registry):
    g = builder()
    a = g.node("TestVariadicAverage")
    b = g.node("TestVariadicAverage", input1=a.out(0))
    a.set_input("input1", b.out(0))
    g.node("TestRecord", value=b.out(0))
    error = _validation_error(g, registry)
    assert [p.code for p in error.problems] == ["dependency_cycle"]
    lonely = builder()
    lonely.node("StubInt", value=1)
    error = _validation_error(lonely, registry)
    assert [p.code for p in error.problems] == ["prompt_no_outputs"]


def test_dynamic_cycle_fails_the_node_that_expanded(registry):
    g = builder()
    input1, input2 = image(g, "BLACK"), image(g, "WHITE")
    generator = g.node("TestDynamicDependencyCycle", input1=input1.out(0), input2=input2.out(0))
    g.node("TestRecord", value=generator.out(0))
    result = run(g, registry, cache=False)
    assert result.state == RunState.FAILED
    failed = result.nodes[generator.id]
    assert failed.state == NodeState.FAILED
    assert "Dependency cycle detected" in failed.error.message


def test_list_outputs_map_over_consumers_and_mixed_expansion(comfy_registry):
    g = builder()
    val_list = g.node("TestMakeListNode", value1=0.1, value2=0.2, value3=0.3)
    mixed = g.node("TestMixedExpansionReturns", input1=val_list.out(0))
    dynamic = g.node("TestRecord", value=mixed.out(0))
    literal = g.node("TestRecord", value=mixed.out(1))
    result = run(g, comfy_registry, cache=False)
    assert result.ok, result.errors
    assert values(result, dynamic) == pytest.approx([0.1, 0.2, 0.3])
    assert values(result, literal) == [1.0, 1.0, 1.0]


def test_lazy_status_per_item_and_input_is_list(registry):
    g = builder()
    val_list = g.node("TestMakeListNode", value1=0.0, value2=0.5, value3=1.0)
    mask = g.node("StubMask", value=val_list.out(0))
    mix = g.node(
        "TestLazyMixImages",
        image1=image(g, "BLACK").out(0),
        image2=image(g, "WHITE").out(0),
        mask=mask.out(0),
    )
    collected = g.node("TestListToAccumulationNode", list=mix.out(0))  # INPUT_IS_LIST
    as_list = g.node("TestAccumulationToListNode", accumulation=collected.out(0))
    output = g.node("TestRecord", value=as_list.out(0))
    result = run(g, registry, cache=False)
    assert values(result, output) == [0.0, 0.5, 1.0]
    assert result.nodes[collected.id].state == NodeState.COMPLETED


def test_shorter_lists_reuse_their_last_item(registry):
    g = builder()
    a = g.node("TestMakeListNode", value1=1, value2=2, value3=3)
    b = g.node("TestMakeListNode", value1=10)
    total = g.node("TestIntMathOperation", a=a.out(0), b=b.out(0), operation="add")
    output = g.node("TestRecord", value=total.out(0))
    assert values(run(g, registry, cache=False), output) == [11, 12, 13]


@pytest.mark.parametrize("strategy", STRATEGIES[:2])
def test_execution_blocker_on_one_list_item(registry, strategy):
    g = builder()
    image_list = g.node(
        "TestMakeListNode",
        value1=image(g, "BLACK").out(0),
        value2=image(g, "WHITE").out(0),
        value3=image(g, "BLACK").out(0),
    )
    int_list = g.node(
        "TestMakeListNode",
        value1=g.node("StubInt", value=1).out(0),
        value2=g.node("StubInt", value=2).out(0),
        value3=g.node("StubInt", value=3).out(0),
    )
    compare = g.node("TestIntConditions", a=int_list.out(0), b=2, operation="==")
    blocker = g.node(
        "TestExecutionBlocker", input=image_list.out(0), block=compare.out(0), verbose=False
    )
    list_output = g.node("TestMakeListNode", value1=blocker.out(0))
    output = g.node("TestRecord", value=list_output.out(0))
    result = run(g, registry, cache=False, **strategy)
    assert did_run(result, output)
    assert values(result, output) == [0.0, 0.0]  # the white item was blocked


def test_verbose_blocker_is_reported(registry):
    g = builder()
    blocker = g.node(
        "TestExecutionBlocker", input=image(g, "WHITE").out(0), block=True, verbose=True
    )
    output = g.node("TestRecord", value=blocker.out(0))
    result = run(g, registry, cache=False)
    assert output.id not in result.outputs  # nothing reached the output node
    assert "Execution Blocked: Blocked Execution" in result.nodes[output.id].reason


@pytest.mark.parametrize("iterations", [1, 2, 3, 4])
def test_for_loop_by_node_expansion(registry, iterations):
    g = builder()
    input1, input2 = image(g, "BLACK"), image(g, "WHITE")
    is_changed = g.node("TestCustomIsChanged", should_change=True, image=input2.out(0))
    for_open = g.node("TestForLoopOpen", remaining=iterations, initial_value1=is_changed.out(0))
    average = g.node("TestVariadicAverage", input1=input1.out(0), input2=for_open.out(2))
    for_close = g.node(
        "TestForLoopClose", flow_control=for_open.out(0), initial_value1=average.out(0)
    )
    output = g.node("TestRecord", value=for_close.out(0))
    result = run(g, registry)
    assert result.ok, result.errors
    assert values(result, output) == [1.0 / 2**iterations]
    assert did_run(result, is_changed)
    expanded = [n for n in result.nodes if n.startswith(f"{for_close.id}.")]
    assert expanded  # the loop body ran as nodes added by expansion


def test_partial_execution_runs_only_the_chosen_outputs(registry):
    g = builder()
    input1, input2 = image(g, "BLACK"), image(g, "WHITE")
    output1 = g.node("TestRecord", value=input1.out(0))
    output2 = g.node("TestRecord", value=input2.out(0))
    result = run(g, registry, cache=False, outputs=[output1.id])
    assert did_run(result, input1) and did_run(result, output1)
    assert input2.id not in result.nodes and output2.id not in result.nodes
    assert list(result.outputs) == [output1.id]


def test_partial_execution_runs_output_nodes_that_are_dependencies(registry):
    g = builder()
    input1 = image(g, "BLACK")
    with_socket = g.node("TestOutputNodeWithSocketOutput", image=input1.out(0), value=2.0)
    mask = g.node("StubMask", value=0.5)
    dependent = g.node(
        "TestLazyMixImages", image1=with_socket.out(0), image2=input1.out(0), mask=mask.out(0)
    )
    final = g.node("TestRecord", value=dependent.out(0))
    result = run(g, registry, cache=False, outputs=[final.id])
    for node in (input1, with_socket, dependent, final):
        assert did_run(result, node)


def test_a_failed_node_fails_its_consumers_and_other_outputs_finish(registry):
    g = builder()
    broken = g.node("TestFail", value=image(g, "BLACK").out(0), message="no good")
    after = g.node("TestRecord", value=broken.out(0))
    fine = g.node("TestRecord", value=image(g, "WHITE").out(0))
    result = run(g, registry, cache=False)
    assert result.state == RunState.FAILED
    assert result.nodes[broken.id].state == NodeState.FAILED
    assert "no good" in result.nodes[broken.id].error.message
    assert result.nodes[after.id].state == NodeState.UPSTREAM_FAILED
    assert values(result, fine) == [1.0]


def test_distributed_on_real_dask_processes(comfy_registry, dask_cluster):
    config = NodegraphConfig(execution=ExecutionConfig(dask_address=dask_cluster.address))
    g = builder()
    val_list = g.node("TestMakeListNode", value1=0.0, value2=0.5, value3=1.0)
    mix = g.node(
        "TestLazyMixImages",
        image1=image(g, "BLACK").out(0),
        image2=image(g, "WHITE").out(0),
        mask=g.node("StubMask", value=val_list.out(0)).out(0),
    )
    average = g.node("TestVariadicAverage", input1=mix.out(0), input2=mix.out(0))
    output = g.node("TestRecord", value=average.out(0))
    result = run(g, comfy_registry, config=config, strategy="distributed", cache=False)
    assert result.ok, result.errors
    assert values(result, output) == [0.0, 0.5, 1.0]
    assert result.strategy == "distributed"


@pytest.mark.parametrize("strategy", STRATEGIES[1:])
def test_for_loop_on_threads_and_processes(registry, strategy):
    g = builder()
    for_open = g.node("TestForLoopOpen", remaining=3, initial_value1=image(g, "WHITE").out(0))
    average = g.node("TestVariadicAverage", input1=image(g, "BLACK").out(0), input2=for_open.out(2))
    for_close = g.node(
        "TestForLoopClose", flow_control=for_open.out(0), initial_value1=average.out(0)
    )
    output = g.node("TestRecord", value=for_close.out(0))
    result = run(g, registry, cache=False, **strategy)
    assert result.ok, result.errors
    assert values(result, output) == [1.0 / 2**3]
