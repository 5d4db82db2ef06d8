"""Sources of values: images (brightness), masks, ints and floats."""

import random


class StubImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "content": (["WHITE", "BLACK", "NOISE"],),
                "height": ("INT", {"default": 512, "min": 1, "max": 1024**3, "step": 1}),
                "width": ("INT", {"default": 512, "min": 1, "max": 4096**3, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 1024**3, "step": 1}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stub_image"
    CATEGORY = "Testing/Stub Nodes"

    def stub_image(self, content, height, width, batch_size):
        if content == "WHITE":
            return (1.0,)
        if content == "BLACK":
            return (0.0,)
        return (random.random(),)


class StubConstantImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stub_constant_image"
    CATEGORY = "Testing/Stub Nodes"

    def stub_constant_image(self, value):
        return (value,)


class StubMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "stub_mask"
    CATEGORY = "Testing/Stub Nodes"

    def stub_mask(self, value):
        return (value,)


class StubInt:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("INT", {"default": 0, "min": -0xFFFFFFFF, "max": 0xFFFFFFFF, "step": 1}),
            },
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "stub_int"
    CATEGORY = "Testing/Stub Nodes"

    def stub_int(self, value):
        return (value,)


class StubFloat:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("FLOAT", {"default": 0.0, "min": -1e38, "max": 1e38, "step": 0.01}),
            },
        }

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "stub_float"
    CATEGORY = "Testing/Stub Nodes"

    def stub_float(self, value):
        return (value,)


TEST_STUB_NODE_CLASS_MAPPINGS = {
    "StubImage": StubImage,
    "StubConstantImage": StubConstantImage,
    "StubMask": StubMask,
    "StubInt": StubInt,
    "StubFloat": StubFloat,
}
TEST_STUB_NODE_DISPLAY_NAME_MAPPINGS = {
    "StubImage": "Stub Image",
    "StubConstantImage": "Stub Constant Image",
    "StubMask": "Stub Mask",
    "StubInt": "Stub Int",
    "StubFloat": "Stub Float",
}
