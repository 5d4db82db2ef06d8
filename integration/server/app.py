"""ComfyUI's HTTP and websocket API, served by nodegraph (``nodegraph comfy serve``).

    >>> # app = create_app(ServerSettings(state=Path("state")))
    >>> # uvicorn.run(app, host="127.0.0.1", port=8188)

ComfyUI clients (scripts, bots, front ends) POST a prompt to ``/prompt``, listen on
``/ws`` until ``executing`` with ``node: null``, read ``/history/{prompt_id}`` and
fetch files with ``/view``. Here each prompt runs as one Prefect flow run on the
configured strategy (Dask included), through ``integration.prefect.comfy``: the same
validation, caching, records and events as ``nodegraph run workflow.json``. Every
route is served under ``/`` and ``/api/``, as ComfyUI serves them; the shapes follow
ComfyUI's ``server.py`` and ``execution.py``.

A worker thread runs the queue one prompt at a time (each prompt's nodes run side by
side on the strategy). The websocket messages a client gets for its prompt, in order:
``execution_start``, ``execution_cached`` (the nodes served from the cache),
``executing`` per node as it starts, ``executed`` per output node with its ``ui``
values, then ``execution_success`` (or ``execution_error`` / ``execution_interrupted``),
and ``executing`` with ``node: null``. ``status`` (the queue's length) goes to every
client on every change and on connect, so a client that posts first and connects
second still learns that its prompt is done.

Security: loopback by default. Listening beyond it needs a token, checked on every
route and on the websocket, sent as ``Authorization: Bearer <token>``, as the password
of HTTP basic auth, or as ``?token=`` (the websocket URL, where browsers cannot set
headers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
import platform
import struct
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.websockets import WebSocketDisconnect

from integration.comfy import ComfyWorkflowError, Signature
from integration.comfy.nodes import ComfyNodeType
from integration.config import NodegraphConfig
from integration.errors import NodegraphError
from integration.graph import GraphValidationError, NodeRegistry
from integration.prefect.comfy import ComfyPrompt, RunSession, prepare_prompt, run_workflow
from integration.result import NodeReport, NodeState, RunResult
from integration.server.editor import (
    editor_routes,
    internal_routes,
    mount_editor,
    prepare_user_folder,
)
from integration.server.paths import inside, write_atomically
from integration.server.queue import PromptQueue, QueueItem

logger = logging.getLogger("nodegraph.server")

FOLDER_TYPES = ("output", "input", "temp")


class ServerError(NodegraphError):
    """The server cannot start as configured (a non-loopback address without a token)."""


@dataclass
class ServerSettings:
    """What ``nodegraph comfy serve`` runs with. ``state`` holds the queue, the history
    and the ``input``, ``output`` and ``temp`` folders."""

    state: Path
    host: str = "127.0.0.1"
    token: str | None = None
    strategy: str | None = None
    registry: NodeRegistry | None = None
    config: NodegraphConfig | None = None
    max_upload_bytes: int = 100 * 1024 * 1024

    def check(self) -> None:
        """Refuse a non-loopback address without a token (``ServerError``)."""
        if not is_loopback(self.host) and not self.token:
            raise ServerError(
                f"listening on {self.host} exposes the server beyond this machine: give a "
                "token (--token, or NODEGRAPH_SERVER_TOKEN), which every request must send"
            )

    def folder(self, kind: str) -> Path:
        path = self.state / kind
        path.mkdir(parents=True, exist_ok=True)
        return path


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the websocket hub --------------------------------------------------------------


PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
"""ComfyUI's binary event types: a frame is the type as a big-endian u32, then the data."""

IMAGE_FORMAT_CODES = {"JPEG": 1, "PNG": 2}
IMAGE_MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


def preview_frame(image: bytes, image_format: str, metadata: Mapping[str, Any] | None) -> bytes:
    """ComfyUI's binary preview frame: with ``metadata`` (for clients that announced
    ``supports_preview_metadata``) the metadata's length, the metadata as JSON and the
    image; without it, the image format's code and the image."""
    if metadata is None:
        return struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMAT_CODES[image_format]) + image
    described = json.dumps({**metadata, "image_type": IMAGE_MIME_TYPES[image_format]}).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(described)) + described + image


@dataclass
class Hub:
    """Open websockets by client id, and the features each client announced; sends from
    any thread onto the server's loop."""

    sockets: dict[str, WebSocket] = field(default_factory=dict)
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None

    def send(self, kind: str, data: Mapping[str, Any], client_id: str | None = None) -> None:
        """Send ``{type, data}`` to one client, or to all with ``client_id=None``."""
        if self.loop is None:
            return
        targets = (
            list(self.sockets.values())
            if client_id is None
            else [s for c, s in self.sockets.items() if c == client_id]
        )
        message = {"type": kind, "data": dict(data)}
        for socket in targets:
            asyncio.run_coroutine_threadsafe(_send(socket, message), self.loop)

    def send_preview(
        self, client_id: str, image: bytes, image_format: str, metadata: Mapping[str, Any]
    ) -> None:
        """A preview frame to one client, with ``metadata`` if it supports it."""
        socket = self.sockets.get(client_id)
        if self.loop is None or socket is None:
            return
        wants_metadata = self.features.get(client_id, {}).get("supports_preview_metadata")
        frame = preview_frame(image, image_format, metadata if wants_metadata else None)
        asyncio.run_coroutine_threadsafe(_send(socket, frame), self.loop)


async def _send(socket: WebSocket, message: dict[str, Any] | bytes) -> None:
    try:
        if isinstance(message, bytes):
            await socket.send_bytes(message)
        else:
            await socket.send_json(message)
    except Exception:
        pass  # a client that went away: the hub forgets it when its handler ends


class PromptProgress:
    """ComfyUI's ``progress_state``: the running and finished nodes of one prompt, with
    their progress, sent whole on every change (the editor draws bars from it)."""

    def __init__(self, prompt_id: str, send: Callable[[str, dict[str, Any]], None]) -> None:
        self._prompt_id = prompt_id
        self._send = send
        self._nodes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def update(self, node_id: str, state: str, value: float = 0, maximum: float = 1) -> None:
        with self._lock:
            self._nodes[node_id] = {
                "value": value,
                "max": maximum,
                "state": state,
                "node_id": node_id,
                "prompt_id": self._prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            nodes = {n: dict(entry) for n, entry in self._nodes.items()}
            # Sent under the lock: nodes on several threads report at once, and the
            # hub delivers in call order, so a client never sees an older state last.
            self._send("progress_state", {"nodes": nodes})


# -- the server ---------------------------------------------------------------------


class ComfyServer:
    """The queue, the websocket hub and the worker that runs prompts."""

    def __init__(self, settings: ServerSettings) -> None:
        settings.check()
        self.settings = settings
        self.config = settings.config or NodegraphConfig()
        self.registry = settings.registry or NodeRegistry.from_config(self.config)
        self.queue = PromptQueue(settings.state)
        self.hub = Hub()
        # Numbers go on from the persisted queue and history, so that prompts queued
        # after a restart still run after the ones queued before it.
        self.number = int(max(self.queue.numbers(), default=-1)) + 1
        self._numbering = threading.Lock()
        self._object_info: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._session: RunSession | None = None
        self._interrupted = False

    # -- lifecycle

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="nodegraph-comfy-worker")
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        self.interrupt()
        if self._worker is not None:
            self._worker.join(timeout=60)

    # -- queueing

    def status(self) -> dict[str, Any]:
        return {"status": {"exec_info": {"queue_remaining": self.queue.remaining()}}}

    def object_info(self) -> dict[str, Any]:
        """``/object_info``, built once: the registry does not change while serving."""
        if self._object_info is None:
            self._object_info = _object_info(self.registry)
        return self._object_info

    def validate(self, prompt: Mapping[str, Any], targets: list[str] | None) -> ComfyPrompt:
        """The checked prompt: the outputs to run, and the ``node_errors`` of those left
        out; raises ``PromptRejected`` with ComfyUI's error shapes."""
        try:
            return prepare_prompt(dict(prompt), self.registry, outputs=targets or None)
        except ComfyWorkflowError as exc:
            raise PromptRejected(_error("invalid_prompt", "Invalid prompt", str(exc)), {}) from None
        except GraphValidationError as exc:
            raise PromptRejected(_top_error(exc), exc.node_errors) from None

    def enqueue(self, body: Mapping[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if not prompt:
            raise PromptRejected(
                _error("no_prompt", "No prompt provided", "No prompt provided"), {}
            )
        if not isinstance(prompt, Mapping):
            raise PromptRejected(
                _error("invalid_prompt", "Invalid prompt", "prompt must be an object"), {}
            )
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        try:
            canonical = str(uuid.UUID(str(prompt_id)))
        except ValueError:
            canonical = ""
        if canonical != prompt_id:
            raise PromptRejected(
                _error(
                    "invalid_prompt_id",
                    "prompt_id must be a valid UUID",
                    "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
                    "omit it to let the server generate one",
                ),
                {},
            )
        targets = body.get("partial_execution_targets")
        prepared = self.validate(prompt, list(targets) if targets else None)
        outputs, node_errors = prepared.roots, prepared.node_errors
        extra_data = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra_data["client_id"] = body["client_id"]
        extra_data["create_time"] = int(time.time() * 1000)
        with self._numbering:
            if "number" in body:
                number = float(body["number"])
            else:
                number = self.number
                self.number += 1
            if body.get("front"):
                number = -number
            item = QueueItem(number, prompt_id, dict(prompt), extra_data, outputs, prepared)
            self.queue.put(item)
        self.hub.send("status", self.status())
        return {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Cancel the running prompt (if it is ``prompt_id``, when given); what its nodes
        finished is kept in the cache."""
        running, session = self.queue.running, self._session
        if running is None or session is None:
            return
        if prompt_id is not None and running.prompt_id != prompt_id:
            return
        self._interrupted = True
        if session.running.wait(timeout=30) and session.execution is not None:
            session.execution.cancel("interrupted")

    # -- running

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.5)
            if item is None:
                continue
            self.hub.send("status", self.status())
            try:
                self._run(item)
            except Exception:
                logger.exception("prompt %s failed outside its run", item.prompt_id)
                if self.queue.running is item:
                    self.queue.done(item, {}, "error", [])
            self.hub.send("status", self.status())
            client = item.extra_data.get("client_id")
            if client:
                self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, client)

    def _run(self, item: QueueItem) -> None:
        client = item.extra_data.get("client_id")
        prompt_id = item.prompt_id
        messages: list[Any] = []
        cached: list[str] = []
        cached_sent = False

        def send(kind: str, data: dict[str, Any], timestamp: bool = False) -> None:
            data = {**data, "prompt_id": prompt_id}
            if timestamp:
                data["timestamp"] = int(time.time() * 1000)
                messages.append([kind, data])
            if client:
                self.hub.send(kind, data, client)

        def flush_cached() -> None:
            nonlocal cached_sent
            if not cached_sent:
                cached_sent = True
                send("execution_cached", {"nodes": list(cached)}, timestamp=True)

        board = PromptProgress(prompt_id, send)

        def started(node_id: str) -> None:
            flush_cached()
            send("executing", {"node": node_id, "display_node": node_id})
            board.update(node_id, "running")

        def progressed(node_id: str, done: float, total: float | None, message: str) -> None:
            # A bare fraction (no total) is shown as done of 1, as the editor draws it.
            maximum = total if total else 1
            send("progress", {"value": done, "max": maximum, "node": node_id})
            board.update(node_id, "running", done, maximum)

        def previewed(node_id: str, image: bytes, image_format: str) -> None:
            if client:
                metadata = {
                    "node_id": node_id,
                    "prompt_id": prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                }
                self.hub.send_preview(client, image, image_format, metadata)

        def finished(report: NodeReport, done: int, total: int) -> None:
            if report.state == NodeState.CACHED:
                cached.append(report.node_id)
            elif report.state in (NodeState.COMPLETED, NodeState.FAILED):
                state = "finished" if report.state == NodeState.COMPLETED else "error"
                board.update(report.node_id, state, 1, 1)

        send("execution_start", {}, timestamp=True)
        self._interrupted = False
        self._session = RunSession(
            listener=finished,
            on_node_started=started,
            on_node_progress=progressed,
            on_node_preview=previewed,
        )
        try:
            # Checked when queued; a prompt queued before a restart is checked again.
            result = run_workflow(
                item.prepared or item.prompt,
                outputs=item.outputs,
                strategy=self.settings.strategy,
                registry=self.registry,
                config=self.config,
                session=self._session,
            )
        finally:
            self._session = None
        flush_cached()
        outputs = {n: ui for n, ui in result.outputs.items() if ui}
        for node_id, ui in outputs.items():
            send("executed", {"node": node_id, "display_node": node_id, "output": ui})
        status = self._finish(result, send)
        run = {"flow_run_id": result.flow_run_id, "resume_id": result.resume_id}
        self.queue.done(item, outputs, status, messages, run)

    def _finish(self, result: RunResult, send: Any) -> str:
        executed = [n for n, r in result.nodes.items() if r.state == NodeState.COMPLETED]
        if result.ok:
            send("execution_success", {}, timestamp=True)
            return "success"
        failed = next(
            (r for r in result.nodes.values() if r.state == NodeState.FAILED and r.error), None
        )
        if self._interrupted or failed is None:
            cancelled = next(
                (r for r in result.nodes.values() if r.state == NodeState.PENDING), None
            )
            send(
                "execution_interrupted",
                {
                    "node_id": cancelled.node_id if cancelled else None,
                    "node_type": cancelled.node_type if cancelled else None,
                    "executed": executed,
                },
                timestamp=True,
            )
            return "error"
        error = failed.error
        assert error is not None
        send(
            "execution_error",
            {
                "node_id": failed.node_id,
                "node_type": failed.node_type,
                "executed": executed,
                "exception_message": error.message,
                "exception_type": error.exception_type or str(error.error_type),
                "traceback": (error.node_traceback or error.stacktrace).splitlines(),
                "current_inputs": {},
                "current_outputs": executed,
            },
            timestamp=True,
        )
        return "error"


class PromptRejected(Exception):
    """A prompt that ComfyUI would answer with a 400: ``error`` and ``node_errors``."""

    def __init__(self, error: dict[str, Any], node_errors: Mapping[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error
        self.node_errors = dict(node_errors)


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _top_error(exc: GraphValidationError) -> dict[str, Any]:
    """ComfyUI's top-level ``error`` for a prompt none of whose outputs passed."""
    for problem in exc.problems:
        if problem.code == "missing_node_type":
            return _error(
                "missing_node_type",
                problem.message,
                f"Node ID '#{problem.node_id}'",
                node_id=problem.node_id,
            )
    for problem in exc.problems:
        if problem.code in ("prompt_no_outputs", "invalid_target"):
            return _error("prompt_no_outputs", "Prompt has no outputs", problem.details)
    lines = [f"{p.message}: {p.details}" if p.details else p.message for p in exc.problems]
    return _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                  "\n".join(lines))  # fmt: skip


# -- the app ------------------------------------------------------------------------


def create_app(settings: ServerSettings, server: ComfyServer | None = None) -> FastAPI:
    """The ASGI app: ComfyUI's routes under ``/`` and ``/api/``, and ``/ws``."""
    server = server or ComfyServer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.hub.loop = asyncio.get_running_loop()
        server.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, server.stop)

    app = FastAPI(title="nodegraph ComfyUI server", lifespan=lifespan, docs_url=None)
    app.state.server = server
    router = APIRouter()

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        if settings.token and not _authorized(request.headers, request.query_params, settings):
            return JSONResponse({"error": "unauthorized: send the server's token"}, 401)
        return await call_next(request)

    @router.post("/prompt")
    async def post_prompt(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(
                {"error": _error("invalid_prompt", "Invalid JSON"), "node_errors": {}}, 400
            )
        if not isinstance(body, Mapping):
            body = {}
        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, server.enqueue, body)
        except PromptRejected as rejected:
            return JSONResponse({"error": rejected.error, "node_errors": rejected.node_errors}, 400)
        return JSONResponse(answer)

    @router.get("/prompt")
    async def get_prompt() -> dict[str, Any]:
        return server.status()["status"]

    @router.get("/queue")
    async def get_queue() -> dict[str, Any]:
        running, pending = server.queue.snapshot()
        return {"queue_running": running, "queue_pending": pending}

    @router.post("/queue")
    async def post_queue(request: Request) -> Response:
        body = await _json_body(request)
        if body.get("clear"):
            server.queue.clear()
        if isinstance(body.get("delete"), list):
            server.queue.delete([str(i) for i in body["delete"]])
        server.hub.send("status", server.status())
        return Response(status_code=200)

    @router.post("/interrupt")
    async def post_interrupt(request: Request) -> Response:
        body = await _json_body(request)
        prompt_id = body.get("prompt_id") if isinstance(body.get("prompt_id"), str) else None
        await asyncio.get_running_loop().run_in_executor(None, server.interrupt, prompt_id)
        return Response(status_code=200)

    @router.get("/history")
    async def get_history(max_items: int | None = None, offset: int = 0) -> dict[str, Any]:
        entries = list(server.queue.history.items())
        if max_items is not None:
            entries = entries[offset : offset + max_items] if offset else entries[-max_items:]
        return dict(entries)

    @router.get("/history/{prompt_id}")
    async def get_history_entry(prompt_id: str) -> dict[str, Any]:
        entry = server.queue.history.get(prompt_id)
        return {} if entry is None else {prompt_id: entry}

    @router.post("/history")
    async def post_history(request: Request) -> Response:
        body = await _json_body(request)
        if body.get("clear"):
            server.queue.forget(None)
        if isinstance(body.get("delete"), list):
            server.queue.forget([str(i) for i in body["delete"]])
        return Response(status_code=200)

    @router.get("/object_info")
    async def object_info() -> dict[str, Any]:
        return server.object_info()

    @router.get("/object_info/{class_type}")
    async def object_info_of(class_type: str) -> dict[str, Any]:
        info = server.object_info()
        return {class_type: info[class_type]} if class_type in info else {}

    @router.get("/system_stats")
    async def system_stats() -> dict[str, Any]:
        memory = psutil.virtual_memory()
        return {
            "system": {
                "os": sys.platform,
                "ram_total": memory.total,
                "ram_free": memory.available,
                "comfyui_version": "nodegraph",
                "python_version": sys.version,
                "pytorch_version": "",
                "embedded_python": False,
                "argv": sys.argv,
            },
            "devices": [
                {
                    "name": platform.processor() or "cpu",
                    "type": "cpu",
                    "index": 0,
                    "vram_total": 0,
                    "vram_free": 0,
                    "torch_vram_total": 0,
                    "torch_vram_free": 0,
                }
            ],
        }

    @router.get("/features")
    async def features() -> dict[str, Any]:
        return _features(settings)

    @router.get("/embeddings")
    async def embeddings() -> list[str]:
        return []

    @router.get("/extensions")
    async def extensions() -> list[str]:
        return []

    @router.get("/models")
    async def models() -> list[str]:
        return []

    @router.post("/upload/image")
    async def upload_image(
        image: UploadFile = File(...),
        overwrite: str = Form(""),
        type: str = Form("input"),
        subfolder: str = Form(""),
    ) -> JSONResponse:
        if type not in FOLDER_TYPES or not image.filename:
            return JSONResponse({"error": "a file and a type of output, input or temp"}, 400)
        target = inside(settings.folder(type), subfolder, Path(image.filename).name)
        if target is None:
            return JSONResponse({"error": "the path leaves the upload folder"}, 400)
        data = await image.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            return JSONResponse(
                {"error": f"the file is larger than {settings.max_upload_bytes} bytes"}, 413
            )
        if target.exists() and overwrite.lower() not in ("true", "1"):
            target = _free_name(target, data)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            write_atomically(target, data)
        return JSONResponse({"name": target.name, "subfolder": subfolder, "type": type})

    @router.get("/view")
    async def view(filename: str = "", type: str = "output", subfolder: str = "") -> Response:
        if not filename:
            return Response(status_code=404)
        if type not in FOLDER_TYPES:
            return Response(status_code=400)
        target = inside(settings.folder(type), subfolder, filename)
        if target is None:
            return Response(status_code=403)
        if not target.is_file():
            return Response(status_code=404)
        return FileResponse(target, headers={"X-Content-Type-Options": "nosniff"})

    app.include_router(router)
    app.include_router(router, prefix="/api")

    async def websocket(socket: WebSocket) -> None:
        if settings.token and not _authorized(socket.headers, socket.query_params, settings):
            await socket.close(code=4401)
            return
        await socket.accept()
        client_id = socket.query_params.get("clientId") or uuid.uuid4().hex
        server.hub.sockets[client_id] = socket
        try:
            await socket.send_json(
                {"type": "status", "data": {**server.status(), "sid": client_id}}
            )
            while True:
                message = await socket.receive_json()
                if isinstance(message, Mapping) and message.get("type") == "feature_flags":
                    announced = message.get("data")
                    if isinstance(announced, Mapping):
                        server.hub.features[client_id] = dict(announced)
                    await socket.send_json({"type": "feature_flags", "data": _features(settings)})
        except (WebSocketDisconnect, RuntimeError, ValueError):
            pass
        finally:
            if server.hub.sockets.get(client_id) is socket:
                del server.hub.sockets[client_id]
                server.hub.features.pop(client_id, None)

    app.add_api_websocket_route("/ws", websocket)
    app.add_api_websocket_route("/api/ws", websocket)

    prepare_user_folder(settings.folder("user"))
    editor = editor_routes(lambda: settings.folder("user"), lambda r: _jobs(server, r))
    app.include_router(editor)
    app.include_router(editor, prefix="/api")
    app.include_router(internal_routes())
    mount_editor(app)  # last: it serves every path no route took
    return app


def _jobs(server: ComfyServer, request: Request) -> dict[str, Any]:
    """The editor's queue and history panels (ComfyUI's ``/api/jobs``)."""
    wanted = set((request.query_params.get("status") or "").split(",")) - {""}
    limit = int(request.query_params.get("limit") or 200)
    offset = max(0, int(request.query_params.get("offset") or 0))
    running, pending = server.queue.snapshot()
    jobs: list[dict[str, Any]] = []
    for items, status in ((running, "in_progress"), (pending, "pending")):
        for number, prompt_id, _prompt, extra, _outputs in items:
            jobs.append(_job(prompt_id, status, number, extra))
    for prompt_id, entry in reversed(server.queue.history.items()):
        messages = entry["status"]["messages"]
        if entry["status"]["status_str"] == "success":
            status = "completed"
        elif any(m[0] == "execution_interrupted" for m in messages):
            status = "cancelled"
        else:
            status = "failed"
        number, _, _, extra, _ = entry["prompt"]
        job = _job(prompt_id, status, number, extra)
        job["outputs_count"] = sum(len(v) for ui in entry["outputs"].values() for v in ui.values())
        jobs.append(job)
    if wanted:
        jobs = [job for job in jobs if job["status"] in wanted]
    page = jobs[offset : offset + limit]
    return {
        "jobs": page,
        "pagination": {
            "offset": offset,
            "limit": limit,
            "total": len(jobs),
            "has_more": offset + limit < len(jobs),
        },
    }


def _job(prompt_id: str, status: str, number: float, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": prompt_id,
        "status": status,
        "priority": number,
        "create_time": extra.get("create_time", 0),
        "outputs_count": 0,
        "previewable_outputs_count": 0,
    }


def _features(settings: ServerSettings) -> dict[str, Any]:
    return {
        "supports_preview_metadata": True,
        "max_upload_size": float(settings.max_upload_bytes),
        "node_replacements": False,
        "assets": False,
    }


def _object_info(registry: NodeRegistry) -> dict[str, Any]:
    """The ComfyUI classes of the loaded packs, and nodegraph's own types (``core.add``)
    described as ComfyUI classes, so that prompts may use both."""
    described = {
        node_type.qualified_name: _node_info(
            Signature.from_node_type(node_type), f"nodegraph.{node_type.pack}"
        )
        for node_type in registry
        if not isinstance(node_type, ComfyNodeType)
    }
    for name, node_type in registry.comfy_types().items():
        signature = node_type.signature  # type: ignore[attr-defined]
        described[name] = _node_info(signature, f"custom_nodes.{node_type.pack}")
    return described


def _node_info(signature: Signature, module: str) -> dict[str, Any]:
    # The editor reads every key ComfyUI's object_info has (it splits python_module).
    info = signature.to_object_info()
    info.setdefault("description", "")
    info.update(python_module=module, deprecated=False, experimental=False)
    info["output_tooltips"] = [None] * len(info["output"])
    return info


def _authorized(
    headers: Mapping[str, str], query: Mapping[str, str], settings: ServerSettings
) -> bool:
    token = settings.token or ""
    offered = query.get("token", "")
    header = headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        offered = value.strip()
    elif scheme.lower() == "basic":
        try:
            offered = base64.b64decode(value.strip()).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            offered = ""
    return bool(offered) and hmac.compare_digest(offered.encode(), token.encode())


def _free_name(target: Path, data: bytes) -> Path:
    """``target``, or ``name (1).ext``, ``name (2).ext``, ... where a different file has
    the name already; a file with the same content keeps its name (not rewritten)."""
    candidate, index = target, 1
    while candidate.exists():
        if candidate.read_bytes() == data:
            return candidate
        candidate = target.with_name(f"{target.stem} ({index}){target.suffix}")
        index += 1
    return candidate


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
