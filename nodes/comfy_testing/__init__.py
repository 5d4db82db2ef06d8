"""A ComfyUI-style node pack for testing, without torch.

It ports the nodes of ComfyUI's own execution tests
(``tests/execution/testing_nodes/testing-pack``) with scalars in place of image
tensors: an "image" is a brightness between 0.0 (black) and 1.0 (white), and a "mask"
a single blend value. ``TestRecord`` is the output node that stands in for
``SaveImage``: it returns what it received as UI values.

Like any pack in ComfyUI's ``custom_nodes/``, it exports ``NODE_CLASS_MAPPINGS``.
"""

from .flow_control import FLOW_CONTROL_NODE_CLASS_MAPPINGS, FLOW_CONTROL_NODE_DISPLAY_NAME_MAPPINGS
from .specific_tests import TEST_NODE_CLASS_MAPPINGS, TEST_NODE_DISPLAY_NAME_MAPPINGS
from .stubs import TEST_STUB_NODE_CLASS_MAPPINGS, TEST_STUB_NODE_DISPLAY_NAME_MAPPINGS
from .util import UTILITY_NODE_CLASS_MAPPINGS, UTILITY_NODE_DISPLAY_NAME_MAPPINGS

NODE_CLASS_MAPPINGS = {
    **TEST_STUB_NODE_CLASS_MAPPINGS,
    **TEST_NODE_CLASS_MAPPINGS,
    **FLOW_CONTROL_NODE_CLASS_MAPPINGS,
    **UTILITY_NODE_CLASS_MAPPINGS,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    **TEST_STUB_NODE_DISPLAY_NAME_MAPPINGS,
    **TEST_NODE_DISPLAY_NAME_MAPPINGS,
    **FLOW_CONTROL_NODE_DISPLAY_NAME_MAPPINGS,
    **UTILITY_NODE_DISPLAY_NAME_MAPPINGS,
}
