"""``nodegraph comfy serve``: ComfyUI's HTTP and websocket API on nodegraph's engine.

- ``app``: the FastAPI app (``create_app``), its routes and the worker that runs the
  queue, each prompt as one Prefect flow run.
- ``queue``: the prompt queue and history, kept on disk across restarts.
"""

from integration.server.app import ComfyServer, ServerError, ServerSettings, create_app

__all__ = ["ComfyServer", "ServerError", "ServerSettings", "create_app"]
