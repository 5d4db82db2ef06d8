"""Nodes for specific execution behaviours: lazy inputs, IS_CHANGED, validation,
expansion, and the recording output node."""

import os
import random
import struct
import time
import zlib

from comfy.utils import ProgressBar
from comfy_execution.graph_utils import GraphBuilder


class TestLazyMixImages:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image1": ("IMAGE", {"lazy": True}),
                "image2": ("IMAGE", {"lazy": True}),
                "mask": ("MASK",),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mix"
    CATEGORY = "Testing/Nodes"

    def check_lazy_status(self, mask, image1, image2):
        needed = []
        if image1 is None and mask != 1.0:
            needed.append("image1")
        if image2 is None and mask != 0.0:
            needed.append("image2")
        return needed

    def mix(self, mask, image1, image2):
        if mask == 0.0:
            return (image1,)
        if mask == 1.0:
            return (image2,)
        return (image1 * (1.0 - mask) + image2 * mask,)


class TestVariadicAverage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"input1": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "variadic_average"
    CATEGORY = "Testing/Nodes"

    def variadic_average(self, input1, **kwargs):
        inputs = [input1]
        while f"input{len(inputs) + 1}" in kwargs:
            inputs.append(kwargs[f"input{len(inputs) + 1}"])
        return (sum(inputs) / len(inputs),)


class TestCustomIsChanged:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"image": ("IMAGE",)},
            "optional": {"should_change": ("BOOL", {"default": False})},
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "custom_is_changed"
    CATEGORY = "Testing/Nodes"

    def custom_is_changed(self, image, should_change=False):
        return (image,)

    @classmethod
    def IS_CHANGED(cls, should_change=False, *args, **kwargs):
        if should_change:
            return float("NaN")
        return False


class TestIsChangedWithConstants:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "custom_is_changed"
    CATEGORY = "Testing/Nodes"

    def custom_is_changed(self, image, value):
        return (image * value,)

    @classmethod
    def IS_CHANGED(cls, image, value):
        if image is None:
            return value
        return image * value


class TestCustomValidation1:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"input1": ("IMAGE,FLOAT",), "input2": ("IMAGE,FLOAT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "custom_validation1"
    CATEGORY = "Testing/Nodes"

    def custom_validation1(self, input1, input2):
        return (input1 * input2,)

    @classmethod
    def VALIDATE_INPUTS(cls, input1=None, input2=None):
        if input1 is not None and not isinstance(input1, float):
            return f"Invalid type of input1: {type(input1)}"
        if input2 is not None and not isinstance(input2, float):
            return f"Invalid type of input2: {type(input2)}"
        return True


class TestCustomValidation2:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"input1": ("IMAGE,FLOAT",), "input2": ("IMAGE,FLOAT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "custom_validation2"
    CATEGORY = "Testing/Nodes"

    def custom_validation2(self, input1, input2):
        return (input1 * input2,)

    @classmethod
    def VALIDATE_INPUTS(cls, input_types, input1=None, input2=None):
        if input1 is not None and not isinstance(input1, float):
            return f"Invalid type of input1: {type(input1)}"
        if input2 is not None and not isinstance(input2, float):
            return f"Invalid type of input2: {type(input2)}"
        if "input1" in input_types and input_types["input1"] not in ["IMAGE", "FLOAT"]:
            return f"Invalid type of input1: {input_types['input1']}"
        if "input2" in input_types and input_types["input2"] not in ["IMAGE", "FLOAT"]:
            return f"Invalid type of input2: {input_types['input2']}"
        return True


class TestCustomValidation4:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"input1": ("FLOAT",), "input2": ("FLOAT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "custom_validation4"
    CATEGORY = "Testing/Nodes"

    def custom_validation4(self, input1, input2):
        return (input1 * input2,)

    @classmethod
    def VALIDATE_INPUTS(cls, input1, input2):
        if input1 is not None and not isinstance(input1, float):
            return f"Invalid type of input1: {type(input1)}"
        if input2 is not None and not isinstance(input2, float):
            return f"Invalid type of input2: {type(input2)}"
        return True


class TestCustomValidation5:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "input1": ("FLOAT", {"min": 0.0, "max": 1.0}),
                "input2": ("FLOAT", {"min": 0.0, "max": 1.0}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "custom_validation5"
    CATEGORY = "Testing/Nodes"

    def custom_validation5(self, input1, input2):
        return (input1 * input2,)

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        if kwargs["input2"] == 7.0:
            return "7s are not allowed. I've never liked 7s."
        return True


class TestDynamicDependencyCycle:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"input1": ("IMAGE",), "input2": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "dynamic_dependency_cycle"
    CATEGORY = "Testing/Nodes"

    def dynamic_dependency_cycle(self, input1, input2):
        g = GraphBuilder()
        mask = g.node("StubMask", value=0.5)
        mix1 = g.node("TestLazyMixImages", image1=input1, mask=mask.out(0))
        mix2 = g.node("TestLazyMixImages", image1=mix1.out(0), image2=input2, mask=mask.out(0))
        # The cycle: mix1 needs mix2, which needs mix1.
        mix1.set_input("image2", mix2.out(0))
        return {"result": (mix2.out(0),), "expand": g.finalize()}


class TestMixedExpansionReturns:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"input1": ("FLOAT",)}}

    RETURN_TYPES = ("IMAGE", "IMAGE")
    FUNCTION = "mixed_expansion_returns"
    CATEGORY = "Testing/Nodes"

    def mixed_expansion_returns(self, input1):
        white = 1.0
        if input1 <= 0.1:
            return (0.1, white)
        if input1 <= 0.2:
            return {"result": (0.2, white)}
        g = GraphBuilder()
        mask = g.node("StubMask", value=0.3)
        black = g.node("StubImage", content="BLACK", height=512, width=512, batch_size=1)
        white_node = g.node("StubImage", content="WHITE", height=512, width=512, batch_size=1)
        mix = g.node(
            "TestLazyMixImages", image1=black.out(0), image2=white_node.out(0), mask=mask.out(0)
        )
        return {"result": (mix.out(0), white), "expand": g.finalize()}


class TestOutputNodeWithSocketOutput:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "process"
    CATEGORY = "Testing/Nodes"
    OUTPUT_NODE = True

    def process(self, image, value):
        return {"ui": {"values": [image * value]}, "result": (image * value,)}


class TestRecord:
    """The output node of the tests (ComfyUI's use SaveImage): it returns what it got as
    UI values and, when ``COMFY_TESTING_RECORD`` names a file, appends a line there."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"value": ("*",)},
            "optional": {"label": ("STRING", {"default": ""}), "extra": ("*",)},
        }

    RETURN_TYPES = ()
    FUNCTION = "record"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Nodes"

    def record(self, value, label="", extra=None):
        path = os.environ.get("COMFY_TESTING_RECORD")
        if path:
            with open(path, "a", encoding="utf-8") as log:
                log.write(f"{label}\t{value!r}\n")
        return {"ui": {"values": [value]}}


class TestSleep:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("*",),
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 9999.0, "step": 0.01}),
            },
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "sleep"
    CATEGORY = "Testing/Nodes"

    def sleep(self, value, seconds):
        time.sleep(seconds)
        return (value,)


class TestSeededNoise:
    """A deterministic "noise" brightness: the frontend adds a control_after_generate
    widget after ``seed``, as it does for KSampler."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "noise"
    CATEGORY = "Testing/Nodes"

    def noise(self, seed, strength):
        return (random.Random(seed).random() * strength,)


def grey_png(brightness):
    """A 1x1 greyscale PNG of a brightness between 0.0 and 1.0 (no imaging library)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    level = max(0, min(255, round(brightness * 255)))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes([0, level]))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


class TestProgressPreview:
    """Steps through ``steps`` updates of ComfyUI's ``ProgressBar``, each with a preview
    (a grey PNG getting brighter), as a sampler reports its steps."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("*",),
                "steps": ("INT", {"default": 3, "min": 1, "max": 1000}),
                "seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0, "step": 0.01}),
            },
        }

    RETURN_TYPES = ("*",)
    FUNCTION = "step"
    CATEGORY = "Testing/Nodes"

    def step(self, value, steps, seconds):
        bar = ProgressBar(steps)
        for index in range(steps):
            time.sleep(seconds / steps)
            bar.update_absolute(index + 1, steps, ("PNG", grey_png((index + 1) / steps), None))
        return (value,)


class TestFail:
    """Raises, for failure handling tests."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",), "message": ("STRING", {"default": "boom"})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "fail"
    CATEGORY = "Testing/Nodes"

    def fail(self, value, message):
        raise RuntimeError(message)


TEST_NODE_CLASS_MAPPINGS = {
    "TestLazyMixImages": TestLazyMixImages,
    "TestProgressPreview": TestProgressPreview,
    "TestVariadicAverage": TestVariadicAverage,
    "TestCustomIsChanged": TestCustomIsChanged,
    "TestIsChangedWithConstants": TestIsChangedWithConstants,
    "TestCustomValidation1": TestCustomValidation1,
    "TestCustomValidation2": TestCustomValidation2,
    "TestCustomValidation4": TestCustomValidation4,
    "TestCustomValidation5": TestCustomValidation5,
    "TestDynamicDependencyCycle": TestDynamicDependencyCycle,
    "TestMixedExpansionReturns": TestMixedExpansionReturns,
    "TestOutputNodeWithSocketOutput": TestOutputNodeWithSocketOutput,
    "TestRecord": TestRecord,
    "TestSleep": TestSleep,
    "TestSeededNoise": TestSeededNoise,
    "TestFail": TestFail,
}
TEST_NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in TEST_NODE_CLASS_MAPPINGS}
