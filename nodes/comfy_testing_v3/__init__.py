"""The ComfyUI test pack's V3 half: ``comfy_api.latest`` classes, loaded through
``comfy_entrypoint`` as ComfyUI loads its own ``comfy_extras``.

Load it after ``nodes/comfy_testing`` (whose stubs and recorder it uses): its classes
named like V1 ones (``TestLazyMixImages``, ``TestCustomIsChanged``,
``TestMixedExpansionReturns``) then stand in for them, so the same prompts run on either
API. The others use what only V3 has: an Autogrow sum, a DynamicCombo (nested), an
async node and hidden values read from ``cls.hidden``. Images are brightness values, as
in the V1 half.
"""

import asyncio

from comfy_api.latest import ComfyExtension, io
from comfy_execution.graph_utils import GraphBuilder
from typing_extensions import override

PACK = "comfy_testing_v3"


class TestLazyMixImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TestLazyMixImages",
            category="Testing/Nodes",
            inputs=[
                io.Image.Input("image1", lazy=True),
                io.Image.Input("image2", lazy=True),
                io.Mask.Input("mask"),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def check_lazy_status(cls, mask, image1, image2):
        needed = []
        if image1 is None and mask != 1.0:
            needed.append("image1")
        if image2 is None and mask != 0.0:
            needed.append("image2")
        return needed

    @classmethod
    def execute(cls, mask, image1, image2):
        if mask == 0.0:
            return io.NodeOutput(image1)
        if mask == 1.0:
            return io.NodeOutput(image2)
        return io.NodeOutput(image1 * (1.0 - mask) + image2 * mask)


class TestCustomIsChanged(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TestCustomIsChanged",
            category="Testing/Nodes",
            inputs=[
                io.Image.Input("image"),
                io.Boolean.Input("should_change", default=False, optional=True),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def fingerprint_inputs(cls, should_change=False, **kwargs):
        return float("NaN") if should_change else False

    @classmethod
    def execute(cls, image, should_change=False):
        return io.NodeOutput(image)


class TestMixedExpansionReturns(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TestMixedExpansionReturns",
            category="Testing/Nodes",
            inputs=[io.Float.Input("input1")],
            outputs=[io.Image.Output(), io.Image.Output("white")],
            enable_expand=True,
        )

    @classmethod
    def execute(cls, input1):
        white = 1.0
        if input1 <= 0.1:
            return io.NodeOutput(0.1, white)
        if input1 <= 0.2:
            return {"result": (0.2, white)}
        g = GraphBuilder()
        mask = g.node("StubMask", value=0.3)
        black = g.node("StubImage", content="BLACK", height=512, width=512, batch_size=1)
        white_node = g.node("StubImage", content="WHITE", height=512, width=512, batch_size=1)
        mix = g.node(
            "TestLazyMixImages", image1=black.out(0), image2=white_node.out(0), mask=mask.out(0)
        )
        return io.NodeOutput(mix.out(0), white, expand=g.finalize())


class TestAutogrowSum(io.ComfyNode):
    """The sum of the linked or literal slots ``values.value0`` ... ``values.value4``."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TestAutogrowSum",
            category="Testing/V3",
            inputs=[
                io.Autogrow.Input(
                    "values",
                    template=io.Autogrow.TemplatePrefix(
                        io.Float.Input("value"), prefix="value", min=1, max=5
                    ),
                ),
                io.Float.Input("scale", default=1.0, min=0.0, max=10.0),
            ],
            outputs=[io.Float.Output("sum")],
        )

    @classmethod
    def execute(cls, values, scale):
        return io.NodeOutput(sum(values.values()) * scale)


class TestNamedAutogrowMax(io.ComfyNode):
    """The largest of ``numbers.a``, ``numbers.b``, ``numbers.c`` (none needed)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TestNamedAutogrowMax",
            category="Testing/V3",
            inputs=[
                io.Autogrow.Input(
                    "numbers",
                    template=io.Autogrow.TemplateNames(
                        io.Float.Input("number"), names=["a", "b", "c"], min=0
                    ),
                )
            ],
            outputs=[io.Float.Output()],
        )

    @classmethod
    def execute(cls, numbers):
        return io.NodeOutput(max(numbers.values(), default=0.0))


class TestDynamicComboImage(io.ComfyNode):
    """An image chosen three ways: ``mode`` "constant" (``mode.value``; ``mode.seed``,
    unused, has the editor's control_after_generate widget), "mix"
    (``mode.image1``, ``mode.image2``, ``mode.factor``) or "shifted", whose nested combo
    ``mode.shift`` adds ``mode.shift.amount`` ("up") or nothing ("none")."""

    @classmethod
    def define_schema(cls):
        shift = io.DynamicCombo.Input(
            "shift",
            options=[
                io.DynamicCombo.Option("none", []),
                io.DynamicCombo.Option(
                    "up", [io.Float.Input("amount", default=0.25, min=0.0, max=1.0)]
                ),
            ],
        )
        return io.Schema(
            node_id="TestDynamicComboImage",
            category="Testing/V3",
            inputs=[
                io.DynamicCombo.Input(
                    "mode",
                    options=[
                        io.DynamicCombo.Option(
                            "constant",
                            [
                                io.Float.Input("value", default=0.5, min=0.0, max=1.0),
                                io.Int.Input(
                                    "seed", default=0, min=0, max=2**31, control_after_generate=True
                                ),
                            ],
                        ),
                        io.DynamicCombo.Option(
                            "mix",
                            [
                                io.Image.Input("image1"),
                                io.Image.Input("image2"),
                                io.Float.Input("factor", default=0.5, min=0.0, max=1.0),
                            ],
                        ),
                        io.DynamicCombo.Option("shifted", [io.Image.Input("image"), shift]),
                    ],
                ),
                io.String.Input("label", default="", optional=True),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, mode, label=""):
        selected = mode["mode"]
        if selected == "constant":
            return io.NodeOutput(mode["value"])
        if selected == "mix":
            factor = mode["factor"]
            return io.NodeOutput(mode["image1"] * (1.0 - factor) + mode["image2"] * factor)
        shift = mode["shift"]
        amount = shift.get("amount", 0.0) if shift["shift"] == "up" else 0.0
        return io.NodeOutput(min(1.0, mode["image"] + amount))


class TestAsyncScale(io.ComfyNode):
    """An async ``execute``, awaited whatever runs it."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TestAsyncScale",
            category="Testing/V3",
            inputs=[io.Image.Input("image"), io.Float.Input("factor", default=2.0)],
            outputs=[io.Image.Output()],
        )

    @classmethod
    async def execute(cls, image, factor):
        await asyncio.sleep(0.01)
        return io.NodeOutput(image * factor)


class TestHiddenNodeId(io.ComfyNode):
    """An output node that shows its own node id, read from ``cls.hidden``."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TestHiddenNodeId",
            category="Testing/V3",
            inputs=[io.AnyType.Input("value")],
            outputs=[io.String.Output()],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, value):
        shown = f"{cls.hidden.unique_id}:{value}"
        return io.NodeOutput(shown, ui={"values": [shown]})


class TestingV3Extension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            TestLazyMixImages,
            TestCustomIsChanged,
            TestMixedExpansionReturns,
            TestAutogrowSum,
            TestNamedAutogrowMax,
            TestDynamicComboImage,
            TestAsyncScale,
            TestHiddenNodeId,
        ]


async def comfy_entrypoint() -> TestingV3Extension:
    return TestingV3Extension()
