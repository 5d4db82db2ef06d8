"""ComfyUI's V3 node API (``comfy_api.latest``), for V3 packs run without ComfyUI.

    >>> class Double(ComfyNode):
    ...     @classmethod
    ...     def define_schema(cls):
    ...         return Schema(node_id="Double", inputs=[Int.Input("value", default=1)],
    ...                       outputs=[Int.Output()])
    ...     @classmethod
    ...     def execute(cls, value):
    ...         return NodeOutput(value * 2)
    >>> Double.INPUT_TYPES()["required"]["value"], Double.RETURN_TYPES
    (('INT', {'default': 1}), ['INT'])

A V3 node is a class whose classmethods ``define_schema`` and ``execute`` (sync or
async) replace V1's ``INPUT_TYPES``, ``RETURN_TYPES`` and ``FUNCTION``. The classes here
follow ``comfy_api/latest/_io.py``: the same constructors, and the same V1 description
(``INPUT_TYPES()``, ``GET_NODE_INFO_V1()``), which is what ``/object_info`` serves and
what nodegraph's signatures read. ``install_v3_shims`` makes ``comfy_api.latest``
(and ``comfy_api.v0_0_2``, which re-exports it) resolve here
when no ComfyUI is importable; where ComfyUI is installed, its own classes are used,
and nodegraph calls them the same way (``V3Calls``).

Nothing here needs torch. ``Image``, ``Latent`` and the other model types are names
only: what flows through them is whatever the pack's nodes make.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from enum import Enum, StrEnum
from typing import Any

from integration.comfy import dynamic
from integration.comfy.runtime import ExecutionBlocker, importable, shim_module

# -- types --------------------------------------------------------------------------


def _pruned(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _IO:
    """What an input or output class knows of its type (set by ``comfytype``)."""

    Parent: Any = None

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def validate(self) -> None:
        pass


class Input(_IO):
    """A V3 input: ``id`` is its name in the prompt and in ``execute``'s arguments."""

    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
        advanced: bool | None = None,
    ) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = dict(extra_dict or {})
        self.rawLink = raw_link
        self.advanced = advanced

    def as_dict(self) -> dict[str, Any]:
        return _pruned(
            {
                "display_name": self.display_name,
                "optional": self.optional,
                "tooltip": self.tooltip,
                "lazy": self.lazy,
                "rawLink": self.rawLink,
                "advanced": self.advanced,
            }
        ) | _pruned(self.extra_dict)

    def get_io_type(self) -> str:
        return self.io_type

    def get_all(self) -> list[Input]:
        return [self]


class WidgetInput(Input):
    """An input the frontend draws as a widget, with a default."""

    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        socketless: bool | None = None,
        widget_type: str | None = None,
        force_input: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
        advanced: bool | None = None,
    ) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned(
            {
                "default": self.default,
                "socketless": self.socketless,
                "widgetType": self.widget_type,
                "forceInput": self.force_input,
            }
        )

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else self.io_type


class Output(_IO):
    """A V3 output; its name is ``display_name``, else ``id``, else its type."""

    def __init__(
        self,
        id: str | None = None,
        display_name: str | None = None,
        tooltip: str | None = None,
        is_output_list: bool = False,
    ) -> None:
        self.id = id
        self.display_name = display_name if display_name else id
        self.tooltip = tooltip
        self.is_output_list = is_output_list


class _ComfyType(ABC):  # noqa: B024 - ComfyUI's base has no abstract methods either
    Type: Any = Any
    io_type: str = ""


class ComfyTypeI(_ComfyType):
    """A type with an input class."""

    Input = Input


class ComfyTypeIO(ComfyTypeI):
    """A type with an input and an output class."""

    Output = Output


def comfytype(io_type: str) -> Callable[[type], type]:
    """Make a class a ComfyUI type named ``io_type``, with its own Input/Output."""

    def decorate(cls: type) -> type:
        if not issubclass(cls, _ComfyType):
            cls = type(cls.__name__, (cls, ComfyTypeIO), {})
        cls.io_type = io_type
        for role in ("Input", "Output"):
            base = getattr(cls, role, None)
            if isinstance(base, type):
                own = type(f"{cls.__name__}{role}", (base,), {"Parent": cls})
                own.__qualname__ = f"{cls.__qualname__}.{role}"
                setattr(cls, role, own)
        return cls

    return decorate


def Custom(io_type: str) -> type[ComfyTypeIO]:
    """A plain type named ``io_type`` (``io.Custom("MY_TYPE").Input("x")``)."""

    @comfytype(io_type)
    class CustomComfyType(ComfyTypeIO):
        pass

    return CustomComfyType


class NumberDisplay(StrEnum):
    number = "number"
    slider = "slider"
    gradient_slider = "gradientslider"


class ControlAfterGenerate(StrEnum):
    fixed = "fixed"
    increment = "increment"
    decrement = "decrement"
    randomize = "randomize"


class UploadType(StrEnum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class FolderType(StrEnum):
    input = "input"
    output = "output"
    temp = "temp"


def _value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: bool | None = None,
            label_on: str | None = None,
            label_off: str | None = None,
            socketless: bool | None = None,
            force_input: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
            raw_link: bool | None = None,
            advanced: bool | None = None,
        ) -> None:
            super().__init__(
                id, display_name, optional, tooltip, lazy, default, socketless, None,
                force_input, extra_dict, raw_link, advanced,
            )  # fmt: skip
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned(
                {"label_on": self.label_on, "label_off": self.label_off}
            )


class _Number(WidgetInput):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        min: Any = None,
        max: Any = None,
        step: Any = None,
        display_mode: NumberDisplay | None = None,
        socketless: bool | None = None,
        force_input: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
        advanced: bool | None = None,
    ) -> None:
        super().__init__(
            id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
            extra_dict, raw_link, advanced,
        )  # fmt: skip
        self.min, self.max, self.step, self.display_mode = min, max, step, display_mode


@comfytype("INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(_Number):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: int | None = None,
            min: int | None = None,
            max: int | None = None,
            step: int | None = None,
            control_after_generate: bool | ControlAfterGenerate | None = None,
            display_mode: NumberDisplay | None = None,
            socketless: bool | None = None,
            force_input: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
            raw_link: bool | None = None,
            advanced: bool | None = None,
        ) -> None:
            super().__init__(
                id, display_name, optional, tooltip, lazy, default, min, max, step, display_mode,
                socketless, force_input, extra_dict, raw_link, advanced,
            )  # fmt: skip
            self.control_after_generate = control_after_generate

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned(
                {
                    "min": self.min,
                    "max": self.max,
                    "step": self.step,
                    "control_after_generate": _value(self.control_after_generate),
                    "display": _value(self.display_mode),
                }
            )


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(_Number):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: float | None = None,
            min: float | None = None,
            max: float | None = None,
            step: float | None = None,
            round: float | None = None,
            display_mode: NumberDisplay | None = None,
            gradient_stops: list[dict[str, Any]] | None = None,
            socketless: bool | None = None,
            force_input: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
            raw_link: bool | None = None,
            advanced: bool | None = None,
        ) -> None:
            super().__init__(
                id, display_name, optional, tooltip, lazy, default, min, max, step, display_mode,
                socketless, force_input, extra_dict, raw_link, advanced,
            )  # fmt: skip
            self.round, self.gradient_stops = round, gradient_stops

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned(
                {
                    "min": self.min,
                    "max": self.max,
                    "step": self.step,
                    "round": self.round,
                    "display": _value(self.display_mode),
                    "gradient_stops": self.gradient_stops,
                }
            )


@comfytype("STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            multiline: bool = False,
            placeholder: str | None = None,
            default: str | None = None,
            dynamic_prompts: bool | None = None,
            socketless: bool | None = None,
            force_input: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
            raw_link: bool | None = None,
            advanced: bool | None = None,
        ) -> None:
            super().__init__(
                id, display_name, optional, tooltip, lazy, default, socketless, None,
                force_input, extra_dict, raw_link, advanced,
            )  # fmt: skip
            self.multiline, self.placeholder = multiline, placeholder
            self.dynamic_prompts = dynamic_prompts

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned(
                {
                    "multiline": self.multiline,
                    "placeholder": self.placeholder,
                    "dynamicPrompts": self.dynamic_prompts,
                }
            )


def _choices(options: Any) -> list[Any]:
    if isinstance(options, type) and issubclass(options, Enum):
        return [member.value for member in options]
    return list(options or [])


@comfytype("COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            options: Iterable[Any] | type[Enum] | None = None,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: Any = None,
            control_after_generate: bool | ControlAfterGenerate | None = None,
            upload: UploadType | None = None,
            image_folder: FolderType | None = None,
            remote: Any = None,
            socketless: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
            raw_link: bool | None = None,
            advanced: bool | None = None,
        ) -> None:
            super().__init__(
                id, display_name, optional, tooltip, lazy, _value(default), socketless, None,
                None, extra_dict, raw_link, advanced,
            )  # fmt: skip
            self.multiselect = False
            self.options = _choices(options)
            self.control_after_generate = control_after_generate
            self.upload, self.image_folder, self.remote = upload, image_folder, remote

        def as_dict(self) -> dict[str, Any]:
            described = super().as_dict() | _pruned(
                {
                    "multiselect": self.multiselect,
                    "options": self.options,
                    "control_after_generate": _value(self.control_after_generate),
                }
            )
            if self.upload is not None:
                described[_value(self.upload)] = True
            if self.image_folder is not None:
                described["image_folder"] = _value(self.image_folder)
            if self.remote is not None:
                described["remote"] = (
                    self.remote.as_dict() if hasattr(self.remote, "as_dict") else self.remote
                )
            return described

    class Output(Output):
        def __init__(
            self,
            id: str | None = None,
            display_name: str | None = None,
            options: Iterable[Any] | None = None,
            tooltip: str | None = None,
            is_output_list: bool = False,
        ) -> None:
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = list(options or [])


@comfytype("COMBO")
class MultiCombo(ComfyTypeI):
    """A combo whose value is a list of choices."""

    Type = list

    class Input(Combo.Input):
        def __init__(
            self,
            id: str,
            options: Iterable[Any] | type[Enum],
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: list[Any] | None = None,
            placeholder: str | None = None,
            chip: bool | None = None,
            control_after_generate: bool | ControlAfterGenerate | None = None,
            socketless: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
            raw_link: bool | None = None,
            advanced: bool | None = None,
        ) -> None:
            super().__init__(
                id, options, display_name, optional, tooltip, lazy, default,
                control_after_generate, socketless=socketless, extra_dict=extra_dict,
                raw_link=raw_link, advanced=advanced,
            )  # fmt: skip
            self.multiselect = True
            self.placeholder, self.chip = placeholder, chip

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {
                "multi_select": _pruned({"placeholder": self.placeholder, "chip": self.chip})
            }


def _plain(io_type: str, name: str) -> type[ComfyTypeIO]:
    made = comfytype(io_type)(type(name, (ComfyTypeIO,), {}))
    made.__qualname__ = name
    return made


Image = _plain("IMAGE", "Image")
Mask = _plain("MASK", "Mask")
Latent = _plain("LATENT", "Latent")
Conditioning = _plain("CONDITIONING", "Conditioning")
Model = _plain("MODEL", "Model")
Clip = _plain("CLIP", "Clip")
Vae = _plain("VAE", "Vae")
AnyType = _plain("*", "AnyType")
Sampler = _plain("SAMPLER", "Sampler")
Sigmas = _plain("SIGMAS", "Sigmas")
Noise = _plain("NOISE", "Noise")
Guider = _plain("GUIDER", "Guider")
ControlNet = _plain("CONTROL_NET", "ControlNet")
ClipVision = _plain("CLIP_VISION", "ClipVision")
ClipVisionOutput = _plain("CLIP_VISION_OUTPUT", "ClipVisionOutput")
StyleModel = _plain("STYLE_MODEL", "StyleModel")
UpscaleModel = _plain("UPSCALE_MODEL", "UpscaleModel")
Audio = _plain("AUDIO", "Audio")
Video = _plain("VIDEO", "Video")
Hooks = _plain("HOOKS", "Hooks")
Dict = _plain("DICT", "Dict")


# -- types that constrain or expand ------------------------------------------------


@comfytype("COMFY_MULTITYPED_V3")
class MultiType(ComfyTypeI):
    """An input that accepts several types (listed comma-separated to the frontend)."""

    class Input(Input):
        def __init__(
            self,
            id: str | Input,
            types: list[Any],
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
            raw_link: bool | None = None,
            advanced: bool | None = None,
        ) -> None:
            self.input_override: Input | None = None
            if isinstance(id, Input):
                self.input_override = copy.copy(id)
                optional = id.optional or optional
                tooltip = id.tooltip if id.tooltip is not None else tooltip
                display_name = id.display_name if id.display_name is not None else display_name
                lazy = id.lazy if id.lazy is not None else lazy
                id = id.id
                if isinstance(self.input_override, WidgetInput):
                    self.input_override.widget_type = self.input_override.get_io_type()
            super().__init__(
                id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced
            )
            self.io_types = [t if isinstance(t, type) else type(t) for t in types]

        def get_io_type(self) -> str:
            names = [t.io_type for t in self.io_types]
            if self.input_override is not None:
                names.insert(0, self.input_override.get_io_type())
            return ",".join(dict.fromkeys(names))

        def as_dict(self) -> dict[str, Any]:
            if self.input_override is not None:
                return self.input_override.as_dict() | super().as_dict()
            return super().as_dict()


@comfytype(dynamic.MATCH_TYPE)
class MatchType(ComfyTypeIO):
    """Inputs and outputs that share one type, chosen by what is linked."""

    class Template:
        def __init__(self, template_id: str, allowed_types: Any = AnyType) -> None:
            allowed = allowed_types if isinstance(allowed_types, list | tuple) else [allowed_types]
            for entry in allowed:
                if not (
                    isinstance(entry, _ComfyType)
                    or (isinstance(entry, type) and issubclass(entry, _ComfyType))
                ):
                    raise ValueError(f"MatchType.Template: {entry!r} is not a ComfyUI type")
            self.template_id = template_id
            self.allowed_types = list(allowed)

        def as_dict(self) -> dict[str, Any]:
            return {
                "template_id": self.template_id,
                "allowed_types": ",".join(t.io_type for t in self.allowed_types),
            }

    class Input(Input):
        def __init__(
            self,
            id: str,
            template: MatchType.Template,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
            raw_link: bool | None = None,
            advanced: bool | None = None,
        ) -> None:
            super().__init__(
                id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced
            )
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"template": self.template.as_dict()}

    class Output(Output):
        def __init__(
            self,
            template: MatchType.Template,
            id: str | None = None,
            display_name: str | None = None,
            tooltip: str | None = None,
            is_output_list: bool = False,
        ) -> None:
            if id is None and display_name is None:
                display_name = "MATCHTYPE"
            super().__init__(id, display_name, tooltip, is_output_list)
            self.template = template


class DynamicInput(Input):
    """An input standing for a family of dotted inputs (``integration.comfy.dynamic``)."""


def _input_dict(inputs: Iterable[Input]) -> dict[str, dict[str, Any]]:
    described: dict[str, dict[str, Any]] = {"required": {}}
    for item in inputs:
        _add_input(item, described)
    return described


def _add_input(item: Input, described: dict[str, dict[str, Any]]) -> None:
    options = item.as_dict()
    options.pop("optional", None)
    category = "optional" if item.optional else "required"
    described.setdefault(category, {})[item.id] = (item.get_io_type(), options)


class _AutogrowTemplate:
    def __init__(self, input: Input) -> None:
        if isinstance(input, DynamicInput):
            raise ValueError("an Autogrow template cannot be a dynamic input")
        self.input = copy.copy(input)
        if isinstance(self.input, WidgetInput):
            self.input.force_input = True
        self.names: list[str] = []

    def as_dict(self) -> dict[str, Any]:
        return {"input": _input_dict([self.input])}


@comfytype(dynamic.AUTOGROW)
class Autogrow(ComfyTypeI):
    """A group of slots that grows as they are linked: ``<group>.<slot>``."""

    Type = dict

    class TemplatePrefix(_AutogrowTemplate):
        def __init__(self, input: Input, prefix: str, min: int = 1, max: int = 10) -> None:
            super().__init__(input)
            if min < 0 or not 1 <= max <= 100:
                raise ValueError("Autogrow.TemplatePrefix needs 0 <= min and 1 <= max <= 100")
            self.prefix, self.min, self.max = prefix, min, max
            self.names = [f"{prefix}{i}" for i in range(max)]

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"prefix": self.prefix, "min": self.min, "max": self.max}

    class TemplateNames(_AutogrowTemplate):
        def __init__(self, input: Input, names: list[str], min: int = 1) -> None:
            super().__init__(input)
            if min < 0:
                raise ValueError("Autogrow.TemplateNames needs 0 <= min")
            self.names, self.min = list(names)[:100], min

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"names": self.names, "min": self.min}

    class Input(DynamicInput):
        def __init__(
            self,
            id: str,
            template: _AutogrowTemplate,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
        ) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"template": self.template.as_dict()}


@comfytype(dynamic.DYNAMIC_COMBO)
class DynamicCombo(ComfyTypeI):
    """A choice whose selected option brings its own inputs: ``<combo>.<input>``."""

    Type = dict

    class Option:
        def __init__(self, key: str, inputs: list[Input]) -> None:
            self.key, self.inputs = key, list(inputs)

        def as_dict(self) -> dict[str, Any]:
            return {"key": self.key, "inputs": _input_dict(self.inputs)}

    class Input(DynamicInput):
        def __init__(
            self,
            id: str,
            options: list[DynamicCombo.Option],
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
        ) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.options = list(options)

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"options": [o.as_dict() for o in self.options]}


@comfytype(dynamic.DYNAMIC_SLOT)
class DynamicSlot(ComfyTypeI):
    """A socket that, once linked, brings its own inputs: ``<slot>.<input>``."""

    Type = dict

    class Input(DynamicInput):
        def __init__(
            self,
            slot: Input,
            inputs: list[Input],
            display_name: str | None = None,
            tooltip: str | None = None,
            lazy: bool | None = None,
            extra_dict: Mapping[str, Any] | None = None,
        ) -> None:
            self.slot = copy.copy(slot)
            if isinstance(self.slot, WidgetInput):
                self.slot.force_input = True
            super().__init__(
                slot.id,
                display_name if display_name is not None else slot.display_name,
                True,
                tooltip if tooltip is not None else slot.tooltip,
                lazy if lazy is not None else slot.lazy,
                extra_dict if extra_dict is not None else slot.extra_dict,
            )
            self.inputs = list(inputs)

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {
                "slotType": str(self.slot.get_io_type()),
                "inputs": _input_dict(self.inputs),
                "forceInput": True,
            }


# -- hidden inputs, schema, outputs -------------------------------------------------


class Hidden(StrEnum):
    """Values the executor supplies, read in a node's methods as ``cls.hidden.<name>``."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """The hidden values of one call; names the node did not ask for are ``None``."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        return None


@dataclasses.dataclass
class Schema:
    """What a V3 node declares: its id, inputs, outputs and flags."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = dataclasses.field(default_factory=list)
    outputs: list[Output] = dataclasses.field(default_factory=list)
    hidden: list[Hidden] = dataclasses.field(default_factory=list)
    description: str = ""
    search_aliases: list[str] = dataclasses.field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_dev_only: bool = False
    is_api_node: bool = False
    price_badge: Any = None
    not_idempotent: bool = False
    enable_expand: bool = False
    accept_all_inputs: bool = False
    essentials_category: str | None = None
    has_intermediate_output: bool = False

    def finalize(self) -> None:
        self.inputs = list(self.inputs or [])
        self.outputs = list(self.outputs or [])
        self.hidden = list(self.hidden or [])
        wanted = []
        if self.is_api_node:
            wanted += [Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org]
        if self.is_output_node:
            wanted += [Hidden.prompt, Hidden.extra_pnginfo]
        self.hidden += [h for h in wanted if h not in self.hidden]
        for index, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def validate(self) -> None:
        """Input ids and output ids must be unique (``ValueError`` names the repeats)."""
        ids = [i.id for i in self.inputs]
        for item in self.inputs:
            if isinstance(item, Autogrow.Input):
                continue
            if isinstance(item, DynamicCombo.Input):
                ids += [sub.id for option in item.options for sub in option.inputs]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"node {self.node_id!r}: input ids are not unique: {repeated}")
        outputs = [o.id for o in self.outputs]
        repeated = sorted({o for o in outputs if outputs.count(o) > 1})
        if repeated:
            raise ValueError(f"node {self.node_id!r}: output ids are not unique: {repeated}")

    def input_types(self) -> dict[str, dict[str, Any]]:
        """The inputs in V1's ``INPUT_TYPES()`` form, hidden ones included."""
        described = _input_dict(self.inputs)
        for hidden in self.hidden:
            described.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        return described

    def get_v1_info(self, cls: type) -> dict[str, Any]:
        """The class as ComfyUI's ``/object_info`` describes it."""
        inputs = self.input_types()
        matchtypes = [
            o.template.template_id if isinstance(o, MatchType.Output) else None
            for o in self.outputs
        ]
        return {
            "input": inputs,
            "input_order": {k: list(v) for k, v in inputs.items()},
            "is_input_list": self.is_input_list,
            "output": [o.io_type for o in self.outputs],
            "output_is_list": [o.is_output_list for o in self.outputs],
            "output_name": [o.display_name or o.io_type for o in self.outputs],
            "output_tooltips": [o.tooltip or None for o in self.outputs],
            "output_matchtypes": matchtypes if any(matchtypes) else None,
            "name": self.node_id,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", None),
            "category": self.category,
            "output_node": self.is_output_node,
            "deprecated": self.is_deprecated,
            "experimental": self.is_experimental,
            "dev_only": self.is_dev_only,
            "api_node": self.is_api_node,
            "price_badge": None,
            "search_aliases": self.search_aliases or None,
            "essentials_category": self.essentials_category,
            "has_intermediate_output": self.has_intermediate_output,
        }


class NodeOutput:
    """What ``execute`` returns: the outputs in order, and optionally ``ui`` values, a
    graph to ``expand`` into, or ``block_execution`` (a message) for every output."""

    def __init__(
        self,
        *args: Any,
        ui: Any = None,
        expand: dict[str, Any] | None = None,
        block_execution: str | None = None,
    ) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeOutput:
        result = data.get("result", ())
        if isinstance(result, ExecutionBlocker):
            return cls(block_execution=result.message)
        return cls(*result, ui=data.get("ui"), expand=data.get("expand"))

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class _ClassProperty:
    def __init__(self, getter: Callable[[Any], Any]) -> None:
        self.getter = getter

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.getter(owner)


def _from_schema(read: Callable[[Schema], Any]) -> _ClassProperty:
    return _ClassProperty(lambda cls: read(cls.GET_SCHEMA()))


class ComfyNode:
    """The base of V3 nodes: override ``define_schema`` and ``execute``; optionally
    ``validate_inputs``, ``fingerprint_inputs`` (V1's ``IS_CHANGED``) and
    ``check_lazy_status``. Every method runs on a locked copy of the class, whose
    ``hidden`` holds the hidden values the schema asked for."""

    RELATIVE_PYTHON_MODULE: str | None = None
    SCHEMA: Schema | None = None
    hidden: HiddenHolder = HiddenHolder()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs: Any) -> list[str]:
        return [name for name, value in kwargs.items() if value is None]

    @classmethod
    def GET_BASE_CLASS(cls) -> type:
        return ComfyNode

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        if not isinstance(schema, Schema):
            raise TypeError(f"{cls.__name__}.define_schema() must return a Schema")
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        for method in ("define_schema", "execute"):
            if first_real_override(cls, method) is None:
                raise TypeError(f"No {method} function was defined for node class {cls.__name__}.")
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, Any]]:
        return cls.FINALIZE_SCHEMA().input_types()

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:
        return cls.GET_SCHEMA().get_v1_info(cls)

    FUNCTION = _ClassProperty(
        lambda cls: (
            "EXECUTE_NORMALIZED_ASYNC"
            if inspect.iscoroutinefunction(cls.execute)
            else "EXECUTE_NORMALIZED"
        )
    )
    RETURN_TYPES = _from_schema(lambda s: [o.io_type for o in s.outputs])
    RETURN_NAMES = _from_schema(lambda s: [o.display_name or o.io_type for o in s.outputs])
    OUTPUT_IS_LIST = _from_schema(lambda s: [o.is_output_list for o in s.outputs])
    OUTPUT_TOOLTIPS = _from_schema(lambda s: [o.tooltip or None for o in s.outputs])
    CATEGORY = _from_schema(lambda s: s.category)
    DESCRIPTION = _from_schema(lambda s: s.description)
    OUTPUT_NODE = _from_schema(lambda s: s.is_output_node)
    INPUT_IS_LIST = _from_schema(lambda s: s.is_input_list)
    NOT_IDEMPOTENT = _from_schema(lambda s: s.not_idempotent)
    ACCEPT_ALL_INPUTS = _from_schema(lambda s: s.accept_all_inputs)
    DEPRECATED = _from_schema(lambda s: s.is_deprecated)
    EXPERIMENTAL = _from_schema(lambda s: s.is_experimental)
    API_NODE = _from_schema(lambda s: s.is_api_node)


class ComfyExtension(ABC):
    """What a V3 pack's ``comfy_entrypoint()`` returns: its node classes."""

    async def on_load(self) -> None:  # noqa: B027 - an optional hook, as in ComfyUI
        pass

    @abstractmethod
    async def get_node_list(self) -> list[type[ComfyNode]]: ...


# -- calling a V3 node --------------------------------------------------------------


def is_v3_class(node_class: Any) -> bool:
    """Whether a class is a V3 node, of this shim or of an installed ComfyUI."""
    return isinstance(node_class, type) and all(
        callable(getattr(node_class, name, None))
        for name in ("define_schema", "execute", "GET_SCHEMA")
    )


def first_real_override(cls: type, name: str) -> Callable[..., Any] | None:
    """``cls.<name>`` bound to ``cls`` if a class below ComfyUI's base defines it."""
    base = cls.GET_BASE_CLASS() if hasattr(cls, "GET_BASE_CLASS") else ComfyNode
    base_function = getattr(getattr(base, name, None), "__func__", None)
    for klass in cls.__mro__:
        if klass is base:
            break
        if name in klass.__dict__:
            function = getattr(klass.__dict__[name], "__func__", klass.__dict__[name])
            if function is not base_function:
                return getattr(cls, name)
    return None


def _refuse(self: Any, name: str, value: Any) -> None:
    raise AttributeError(f"Cannot modify class attribute {name!r} on locked class")


_locked_metas: dict[type, type] = {}


def locked_clone(cls: type, hidden: HiddenHolder) -> type:
    """A copy of ``cls`` with ``hidden`` set, whose attributes cannot be set: what one
    call of a V3 method runs on, as in ComfyUI, so that calls share no class state."""
    meta = type(cls)
    locked_meta = _locked_metas.get(meta)
    if locked_meta is None:
        locked_meta = _locked_metas.setdefault(
            meta, type("LockedMeta", (meta,), {"__setattr__": _refuse})
        )
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    body.update(hidden=hidden, __setattr__=_refuse)
    return locked_meta(f"{cls.__name__}Clone", (cls, *cls.__bases__), body)


def run_coroutine(coroutine: Any) -> Any:
    """Await ``coroutine`` from sync code: in this thread's own event loop, or, where
    one runs already (a node called from async code), in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="nodegraph-v3-async")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class V3Calls:
    """A V3 class's methods in the V1 shape the executor calls: keyword lists of flat
    inputs in, V1 results out (a tuple, or a dict with ``result``/``ui``/``expand``).

    Each call gets its own locked clone with its ``hidden`` values; dotted inputs are
    nested first (``integration.comfy.dynamic.nest``) against the class's declared
    inputs, as ComfyUI does before every call.
    """

    def __init__(self, node_class: type) -> None:
        self.node_class = node_class
        self.schema = node_class.GET_SCHEMA()
        self.declared = self.schema.input_types()
        self.hidden_names = frozenset(self.declared.get("hidden", {}))

    def defines(self, method: str) -> bool:
        return first_real_override(self.node_class, method) is not None

    def _prepare(self, inputs: Mapping[str, Any], tag_keys: bool = False) -> tuple[type, dict]:
        values = dict(inputs)
        hidden = {name: values.pop(name) for name in list(values) if name in self.hidden_names}
        locked = locked_clone(self.node_class, HiddenHolder(**hidden))
        expanded = dynamic.expand(self.declared, values)
        return locked, dynamic.nest(values, expanded, tag_keys)

    def _call(self, method: str, inputs: Mapping[str, Any], tag_keys: bool = False) -> Any:
        locked, values = self._prepare(inputs, tag_keys)
        function = getattr(self.node_class, method).__func__
        result = function(locked, **values)
        if inspect.isawaitable(result):
            result = run_coroutine(result)
        return result

    def execute(self, **inputs: Any) -> Any:
        returned = self._call("execute", inputs)
        return _as_v1_result(self.node_class, self.schema, returned)

    def check_lazy_status(self, **inputs: Any) -> Any:
        return self._call("check_lazy_status", inputs, tag_keys=True)

    def IS_CHANGED(self, **inputs: Any) -> Any:
        return self._call("fingerprint_inputs", inputs)

    def VALIDATE_INPUTS(self, **inputs: Any) -> Any:
        return self._call("validate_inputs", inputs)

    def validator(self) -> Callable[..., Any]:
        """``validate_inputs`` itself, whose parameters say which inputs it checks."""
        return self.node_class.validate_inputs


def _as_v1_result(node_class: type, schema: Schema, returned: Any) -> Any:
    width = len(schema.outputs)
    if returned is None:
        returned = NodeOutput()
    elif isinstance(returned, tuple):
        returned = NodeOutput(*returned)
    elif isinstance(returned, Mapping):
        returned = NodeOutput.from_dict(returned)
    elif isinstance(returned, ExecutionBlocker):
        returned = NodeOutput(block_execution=returned.message)
    if not (hasattr(returned, "args") and hasattr(returned, "expand")):
        raise TypeError(
            f"node class {node_class.__name__!r}: execute must return a NodeOutput, a tuple, "
            f"a dict or None, not {type(returned).__name__}"
        )
    result: tuple[Any, ...] = tuple(returned.args)
    if returned.block_execution is not None:
        # ComfyUI drops a blocking NodeOutput with no values; each output is blocked here
        result = (ExecutionBlocker(returned.block_execution),) * width
    converted: dict[str, Any] = {"result": result}
    ui = returned.ui
    if ui is not None:
        converted["ui"] = ui if isinstance(ui, Mapping) else ui.as_dict()
    if returned.expand is not None:
        if not schema.enable_expand:
            raise TypeError(
                f"node class {node_class.__name__!r} returned expand, but its schema does "
                "not set enable_expand=True"
            )
        converted["expand"] = returned.expand
    return converted


__all__ = [
    "AnyType",
    "Audio",
    "Autogrow",
    "Boolean",
    "Clip",
    "ClipVision",
    "ClipVisionOutput",
    "Combo",
    "ComfyNode",
    "ComfyTypeI",
    "ComfyTypeIO",
    "Conditioning",
    "ControlAfterGenerate",
    "ControlNet",
    "Custom",
    "Dict",
    "DynamicCombo",
    "FolderType",
    "Float",
    "Guider",
    "Hidden",
    "HiddenHolder",
    "Hooks",
    "Image",
    "Input",
    "Int",
    "Latent",
    "Mask",
    "MatchType",
    "Model",
    "MultiCombo",
    "MultiType",
    "NodeOutput",
    "Noise",
    "NumberDisplay",
    "Output",
    "Sampler",
    "Schema",
    "Sigmas",
    "String",
    "StyleModel",
    "UploadType",
    "UpscaleModel",
    "Vae",
    "Video",
    "WidgetInput",
    "comfytype",
]
"""What ``comfy_api.latest.io`` exports (``DynamicSlot`` only through ``_io``, as in
ComfyUI)."""


# -- ui helpers and the module names packs import -------------------------------------


class PreviewText:
    """A text shown on the node in the editor (``ui.PreviewText``)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}


class SavedResult(dict):
    """One saved file, as ``ui`` lists it: ``filename``, ``subfolder``, ``type``."""

    def __init__(self, filename: str, subfolder: str, type: FolderType) -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=_value(type))


class SavedImages:
    """Saved images for the editor to show (``ui.SavedImages``)."""

    def __init__(self, results: list[SavedResult], is_animated: bool = False) -> None:
        self.results, self.is_animated = results, is_animated

    def as_dict(self) -> dict[str, Any]:
        described: dict[str, Any] = {"images": self.results}
        if self.is_animated:
            described["animated"] = (True,)
        return described


_installed = False
_install_lock = threading.Lock()


def install_v3_shims() -> None:
    """Let V3 packs import ``comfy_api.latest`` (``io``, ``ui``, ``ComfyExtension``) and
    ``comfy_api.v0_0_2``, unless a real ComfyUI is importable."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        if "comfy_api" in sys.modules or importable("comfy_api"):
            return
        this = sys.modules[__name__]
        io = shim_module("comfy_api.latest._io_public", **{n: getattr(this, n) for n in __all__})
        ui = shim_module(
            "comfy_api.latest._ui",
            PreviewText=PreviewText,
            SavedResult=SavedResult,
            SavedImages=SavedImages,
        )
        sys.modules["comfy_api.latest._io"] = this
        exported = {"ComfyExtension": ComfyExtension, "io": io, "IO": io, "ui": ui, "UI": ui}
        latest = shim_module("comfy_api.latest", package=True, _io=this, **exported)
        latest._io_public = io
        package = shim_module("comfy_api", package=True, latest=latest)
        package.v0_0_2 = shim_module("comfy_api.v0_0_2", package=True, **exported)
