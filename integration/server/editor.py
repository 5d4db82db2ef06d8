"""What ComfyUI's editor needs beyond the prompt API: its static files, the user's
settings and files, and the routes it calls as it starts.

    >>> static_folder() is None or static_folder().name == "static"
    True

The editor is the ``comfyui-frontend-package`` wheel (``pip install
'nodegraph[editor]'``): ``index.html`` and its assets in the package's ``static``
folder, found as ComfyUI finds it. Without it, ``/`` says how to install it.

Settings (``/settings``) and user files (``/userdata``: saved workflows, templates) are
kept in ``<state>/user``, confined there. Routes whose ComfyUI features nodegraph has
no counterpart for (models, subgraph blueprints, templates, logs) answer empty, in the
shapes the editor expects, so that it starts with no error.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from integration.server.paths import inside, write_atomically, write_json

EDITOR_PACKAGE = "comfyui_frontend_package"

NO_EDITOR = """<!doctype html><title>nodegraph ComfyUI server</title>
<h1>nodegraph's ComfyUI server is running</h1>
<p>ComfyUI clients can queue prompts here (<code>POST /prompt</code>, <code>/ws</code>).
To use ComfyUI's editor in the browser, install it and restart the server:</p>
<pre>pip install 'nodegraph[editor]'</pre>"""


def static_folder() -> Path | None:
    """The editor's static files, or ``None`` when the package is not installed."""
    if importlib.util.find_spec(EDITOR_PACKAGE) is None:
        return None
    folder = Path(str(importlib.resources.files(EDITOR_PACKAGE) / "static"))
    return folder if (folder / "index.html").is_file() else None


SERVER_DEFAULTS = {"Comfy.Notification.ShowVersionUpdates": False}
"""Settings the server sets unless the user did: ComfyUI's release notes (fetched from
api.comfy.org) are not nodegraph's."""


def prepare_user_folder(folder: Path) -> None:
    """The files and folders the editor reads at start, so that it finds each one."""
    for name in ("workflows", "subgraphs"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for name, text in (("user.css", ""), ("comfy.templates.json", "[]")):
        if not (folder / name).exists():
            (folder / name).write_text(text, encoding="utf-8")
    settings_file = folder / "comfy.settings.json"
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = {}
    if isinstance(settings, dict) and not SERVER_DEFAULTS.keys() <= settings.keys():
        write_json(settings_file, {**SERVER_DEFAULTS, **settings}, indent=4)


def editor_routes(
    user_folder: Callable[[], Path], jobs: Callable[[Request], dict[str, Any]]
) -> APIRouter:
    """The editor's own routes (mounted under ``/`` and ``/api``)."""
    router = APIRouter()

    @router.get("/user.css")
    async def user_css() -> Response:
        return Response("", media_type="text/css")

    def settings_file() -> Path:
        return user_folder() / "comfy.settings.json"

    def read_settings() -> dict[str, Any]:
        try:
            settings = json.loads(settings_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return settings if isinstance(settings, dict) else {}

    def write_settings(settings: dict[str, Any]) -> None:
        write_json(settings_file(), settings, indent=4)

    @router.get("/users")
    async def users() -> dict[str, Any]:
        return {"storage": "server", "migrated": True}

    @router.get("/settings")
    async def get_settings() -> dict[str, Any]:
        return read_settings()

    @router.post("/settings")
    async def post_settings(request: Request) -> Response:
        body = await request.json()
        if not isinstance(body, dict):
            return JSONResponse({"error": "settings must be an object"}, 400)
        write_settings({**read_settings(), **body})
        return Response(status_code=200)

    @router.get("/settings/{setting_id}")
    async def get_setting(setting_id: str) -> Any:
        return read_settings().get(setting_id)

    @router.post("/settings/{setting_id}")
    async def post_setting(setting_id: str, request: Request) -> Response:
        write_settings({**read_settings(), setting_id: await request.json()})
        return Response(status_code=200)

    @router.get("/userdata")
    async def list_userdata(
        dir: str = "", recurse: bool = False, full_info: bool = False, split: bool = False
    ) -> Any:
        root = user_folder()
        folder = inside(root, dir) if dir else None
        if folder is None:
            return JSONResponse("Directory not provided or invalid", 400 if not dir else 403)
        if not folder.is_dir():
            return JSONResponse("Directory not found", 404)
        found = sorted(
            p for p in (folder.rglob("*") if recurse else folder.iterdir()) if p.is_file()
        )
        names = [p.relative_to(folder).as_posix() for p in found]
        if full_info:
            return [
                {
                    "path": name,
                    "size": path.stat().st_size,
                    "modified": int(path.stat().st_mtime * 1000),
                    "created": int(path.stat().st_ctime * 1000),
                }
                for name, path in zip(names, found, strict=True)
            ]
        if split:
            return [[name, *name.split("/")] for name in names]
        return names

    @router.get("/userdata/{file:path}")
    async def get_userdata(file: str) -> Response:
        target = inside(user_folder(), file)
        if target is None:
            return Response(status_code=403)
        if not target.is_file():
            return Response(status_code=404)
        return FileResponse(target, headers={"X-Content-Type-Options": "nosniff"})

    @router.post("/userdata/{file:path}")
    async def post_userdata(file: str, request: Request, overwrite: bool = True) -> Response:
        target = inside(user_folder(), file)
        if target is None:
            return Response(status_code=403)
        if target.exists() and not overwrite:
            return JSONResponse("File already exists", 409)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, await request.body())
        return JSONResponse(target.relative_to(user_folder()).as_posix())

    @router.delete("/userdata/{file:path}")
    async def delete_userdata(file: str) -> Response:
        target = inside(user_folder(), file)
        if target is None:
            return Response(status_code=403)
        if not target.is_file():
            return Response(status_code=404)
        target.unlink()
        return Response(status_code=204)

    @router.get("/i18n")
    async def i18n() -> dict[str, Any]:
        return {}

    @router.get("/jobs")
    async def list_jobs(request: Request) -> Any:
        return jobs(request)

    for path, empty in (
        ("/global_subgraphs", {}),
        ("/node_replacements", {}),
        ("/workflow_templates", {}),
        ("/experiment/models", []),
        ("/view_metadata/{folder}", {}),
    ):
        router.add_api_route(path, _constant(empty), methods=["GET"])
    return router


def internal_routes() -> APIRouter:
    """``/internal/*`` (not under ``/api``, as in ComfyUI): the editor's panels."""
    router = APIRouter(prefix="/internal")
    router.add_api_route("/folder_paths", _constant({}), methods=["GET"])
    router.add_api_route(
        "/logs/raw",
        _constant({"entries": [], "size": {"cols": 80, "rows": 24}}),
        methods=["GET"],
    )
    router.add_api_route("/logs", _constant(""), methods=["GET"])
    router.add_api_route("/files/{kind}", _constant([]), methods=["GET"])

    @router.patch("/logs/subscribe")
    async def subscribe() -> Response:
        return Response(status_code=200)

    return router


def mount_editor(app: FastAPI) -> bool:
    """Serve the editor at ``/`` (``True``), or a page that says how to install it."""
    folder = static_folder()
    if folder is None:

        @app.get("/")
        async def no_editor() -> HTMLResponse:
            return HTMLResponse(NO_EDITOR)

        return False

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(
            folder / "index.html", headers={"Cache-Control": "no-store, must-revalidate"}
        )

    app.add_api_route("/templates/index.json", _constant([]), methods=["GET"])
    app.mount("/", StaticFiles(directory=folder), name="editor")
    return True


def _constant(value: Any) -> Callable[..., Any]:
    async def answer() -> Any:
        return value

    return answer
