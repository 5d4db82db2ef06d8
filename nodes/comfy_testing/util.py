"""For loops, lists, accumulations, integer maths and conditions."""

from comfy_execution.graph_utils import GraphBuilder

NUM_LIST_SOCKETS = 10


class TestForLoopOpen:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"remaining": ("INT", {"default": 1, "min": 0, "max": 100000, "step": 1})},
            "optional": {f"initial_value{i}": ("*",) for i in range(1, 5)},
            "hidden": {"initial_value0": ("*",)},
        }

    RETURN_TYPES = tuple(["FLOW_CONTROL", "INT"] + ["*"] * 4)
    RETURN_NAMES = tuple(["flow_control", "remaining"] + [f"value{i}" for i in range(1, 5)])
    FUNCTION = "for_loop_open"
    CATEGORY = "Testing/Flow"

    def for_loop_open(self, remaining, **kwargs):
        graph = GraphBuilder()
        if "initial_value0" in kwargs:
            remaining = kwargs["initial_value0"]
        graph.node(
            "TestWhileLoopOpen",
            condition=remaining,
            initial_value0=remaining,
            **{f"initial_value{i}": kwargs.get(f"initial_value{i}", None) for i in range(1, 5)},
        )
        outputs = [kwargs.get(f"initial_value{i}", None) for i in range(1, 5)]
        return {"result": tuple(["stub", remaining] + outputs), "expand": graph.finalize()}


class TestForLoopClose:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"flow_control": ("FLOW_CONTROL", {"rawLink": True})},
            "optional": {f"initial_value{i}": ("*", {"rawLink": True}) for i in range(1, 5)},
        }

    RETURN_TYPES = tuple(["*"] * 4)
    RETURN_NAMES = tuple([f"value{i}" for i in range(1, 5)])
    FUNCTION = "for_loop_close"
    CATEGORY = "Testing/Flow"

    def for_loop_close(self, flow_control, **kwargs):
        graph = GraphBuilder()
        while_open = flow_control[0]
        sub = graph.node("TestIntMathOperation", operation="subtract", a=[while_open, 1], b=1)
        cond = graph.node("TestToBoolNode", value=sub.out(0))
        input_values = {
            f"initial_value{i}": kwargs.get(f"initial_value{i}", None) for i in range(1, 5)
        }
        while_close = graph.node(
            "TestWhileLoopClose",
            flow_control=flow_control,
            condition=cond.out(0),
            initial_value0=sub.out(0),
            **input_values,
        )
        return {
            "result": tuple(while_close.out(i) for i in range(1, 5)),
            "expand": graph.finalize(),
        }


class TestMakeListNode:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"value1": ("*",)},
            "optional": {f"value{i}": ("*",) for i in range(1, NUM_LIST_SOCKETS)},
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "make_list"
    OUTPUT_IS_LIST = (True,)
    CATEGORY = "Testing/Lists"

    def make_list(self, **kwargs):
        return ([kwargs[f"value{i}"] for i in range(NUM_LIST_SOCKETS) if f"value{i}" in kwargs],)


class TestListToAccumulationNode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"list": ("*",)}}

    RETURN_TYPES = ("ACCUMULATION",)
    FUNCTION = "list_to_accumulation"
    INPUT_IS_LIST = True
    CATEGORY = "Testing/Lists"

    def list_to_accumulation(self, list):
        return ({"accum": list},)


class TestAccumulationToListNode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"accumulation": ("ACCUMULATION",)}}

    RETURN_TYPES = ("*",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "accumulation_to_list"
    CATEGORY = "Testing/Lists"

    def accumulation_to_list(self, accumulation):
        return (accumulation["accum"],)


class TestAccumulateNode:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"to_add": ("*",)},
            "optional": {"accumulation": ("ACCUMULATION",)},
        }

    RETURN_TYPES = ("ACCUMULATION",)
    FUNCTION = "accumulate"
    CATEGORY = "Testing/Lists"

    def accumulate(self, to_add, accumulation=None):
        if accumulation is None:
            value = [to_add]
        else:
            value = accumulation["accum"] + [to_add]
        return ({"accum": value},)


class TestIntMathOperation:
    @classmethod
    def INPUT_TYPES(cls):
        bound = 0xFFFFFFFFFFFFFFFF
        return {
            "required": {
                "a": ("INT", {"default": 0, "min": -bound, "max": bound, "step": 1}),
                "b": ("INT", {"default": 0, "min": -bound, "max": bound, "step": 1}),
                "operation": (["add", "subtract", "multiply", "divide", "modulo", "power"],),
            },
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "int_math_operation"
    CATEGORY = "Testing/Logic"

    def int_math_operation(self, a, b, operation):
        if operation == "add":
            return (a + b,)
        if operation == "subtract":
            return (a - b,)
        if operation == "multiply":
            return (a * b,)
        if operation == "divide":
            return (a // b,)
        if operation == "modulo":
            return (a % b,)
        return (a**b,)


class TestIntConditions:
    @classmethod
    def INPUT_TYPES(cls):
        bound = 0xFFFFFFFFFFFFFFFF
        return {
            "required": {
                "a": ("INT", {"default": 0, "min": -bound, "max": bound, "step": 1}),
                "b": ("INT", {"default": 0, "min": -bound, "max": bound, "step": 1}),
                "operation": (["==", "!=", "<", ">", "<=", ">="],),
            },
        }

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "int_condition"
    CATEGORY = "Testing/Logic"

    def int_condition(self, a, b, operation):
        return (
            {
                "==": a == b,
                "!=": a != b,
                "<": a < b,
                ">": a > b,
                "<=": a <= b,
                ">=": a >= b,
            }[operation],
        )


class TestToBoolNode:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"value": ("*",)},
            "optional": {"invert": ("BOOLEAN", {"default": False})},
        }

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "to_bool"
    CATEGORY = "Testing/Logic"

    def to_bool(self, value, invert=False):
        try:
            result = bool(value)
        except Exception:
            result = True
        return (not result if invert else result,)


UTILITY_NODE_CLASS_MAPPINGS = {
    "TestForLoopOpen": TestForLoopOpen,
    "TestForLoopClose": TestForLoopClose,
    "TestMakeListNode": TestMakeListNode,
    "TestListToAccumulationNode": TestListToAccumulationNode,
    "TestAccumulationToListNode": TestAccumulationToListNode,
    "TestAccumulateNode": TestAccumulateNode,
    "TestIntMathOperation": TestIntMathOperation,
    "TestIntConditions": TestIntConditions,
    "TestToBoolNode": TestToBoolNode,
}
UTILITY_NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in UTILITY_NODE_CLASS_MAPPINGS}
