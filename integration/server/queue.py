"""The prompt queue and history of ``nodegraph comfy serve``, kept on disk.

    >>> import tempfile
    >>> queue = PromptQueue(Path(tempfile.mkdtemp()))
    >>> queue.put(QueueItem(0, "a", {}, {}, ["1"])).prompt_id
    'a'
    >>> queue.remaining()
    1

Queued prompts survive a restart of the server: every change rewrites ``queue.json``
(atomically: a temporary file renamed over it), and the history is kept the same way
in ``history.json``. A prompt that was running when the server stopped (a crash, a
kill -9) is found in ``queue.json`` as running at the next start: it goes to the
history as an error saying so; what it had finished is in the cache, so submitting it
again runs only the rest.
"""

from __future__ import annotations

import heapq
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integration.server.paths import write_json

HISTORY_LIMIT = 10_000
"""History entries kept, as ComfyUI keeps them (the oldest go first)."""


@dataclass(order=True)
class QueueItem:
    """A queued prompt, ordered as ComfyUI orders them: lowest ``number`` first."""

    number: float
    prompt_id: str = field(compare=False)
    prompt: dict[str, Any] = field(compare=False)
    extra_data: dict[str, Any] = field(compare=False)
    outputs: list[str] = field(compare=False)
    # The checked prompt, kept in memory only (a restart checks the prompt again).
    prepared: Any = field(default=None, compare=False, repr=False)

    def as_list(self) -> list[Any]:
        """ComfyUI's queue item: ``[number, prompt_id, prompt, extra_data, outputs]``."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @classmethod
    def from_list(cls, item: list[Any]) -> QueueItem:
        number, prompt_id, prompt, extra_data, outputs = item[:5]
        return cls(number, prompt_id, prompt, extra_data, outputs)


class PromptQueue:
    """Pending prompts (a heap), the running one, and the history, persisted in
    ``folder``. Safe to use from the HTTP handlers and the worker thread at once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Condition()
        self._pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self._load()

    # -- disk ---------------------------------------------------------------------------

    def _load(self) -> None:
        history = _read_json(self.folder / "history.json", {})
        self.history = history if isinstance(history, dict) else {}
        saved = _read_json(self.folder / "queue.json", {})
        if not isinstance(saved, dict):
            saved = {}
        for item in saved.get("pending") or []:
            try:
                self._pending.append(QueueItem.from_list(item))
            except (TypeError, ValueError):
                continue  # a hand-edited entry: dropped, the rest still load
        heapq.heapify(self._pending)
        running = saved.get("running")
        if running:
            try:
                crashed = QueueItem.from_list(running)
            except (TypeError, ValueError):
                crashed = None
            if crashed is not None:
                self._record(
                    crashed,
                    {},
                    "error",
                    [
                        history_message("execution_start", crashed.prompt_id),
                        history_message(
                            "execution_error",
                            crashed.prompt_id,
                            exception_type="ServerStopped",
                            exception_message="the server stopped while this prompt ran; "
                            "queue it again: what it finished comes from the cache",
                            node_id=None,
                            node_type=None,
                            executed=[],
                            traceback=[],
                            current_inputs={},
                            current_outputs=[],
                        ),
                    ],
                )
        self._save()

    def _save(self) -> None:
        write_json(
            self.folder / "queue.json",
            {
                "pending": [item.as_list() for item in sorted(self._pending)],
                "running": self.running.as_list() if self.running else None,
            },
        )
        write_json(self.folder / "history.json", self.history)

    # -- the queue ----------------------------------------------------------------------

    def put(self, item: QueueItem) -> QueueItem:
        with self._lock:
            heapq.heappush(self._pending, item)
            self._save()
            self._lock.notify_all()
        return item

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """The next prompt, now running; ``None`` if none came within ``timeout``."""
        with self._lock:
            if not self._pending and not self._lock.wait_for(lambda: self._pending, timeout):
                return None
            self.running = heapq.heappop(self._pending)
            self._save()
            return self.running

    def done(
        self,
        item: QueueItem,
        outputs: dict[str, Any],
        status: str,
        messages: list[Any],
        run: dict[str, Any] | None = None,
    ) -> None:
        """Move the running prompt to the history; ``run`` (its flow run id and resume id)
        is kept there under ``nodegraph``, a key ComfyUI clients ignore."""
        with self._lock:
            self._record(item, outputs, status, messages)
            if run:
                self.history[item.prompt_id]["nodegraph"] = run
            self.running = None
            self._save()

    def _record(
        self, item: QueueItem, outputs: dict[str, Any], status: str, messages: list[Any]
    ) -> None:
        self.history[item.prompt_id] = {
            "prompt": item.as_list(),
            "outputs": outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": messages,
            },
            "meta": {
                node_id: {
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": None,
                    "real_node_id": node_id,
                }
                for node_id in outputs
            },
        }
        while len(self.history) > HISTORY_LIMIT:
            del self.history[next(iter(self.history))]

    def numbers(self) -> list[float]:
        """The numbers of every pending prompt and history entry."""
        with self._lock:
            numbers = [item.number for item in self._pending]
            for entry in self.history.values():
                prompt = entry.get("prompt")
                if isinstance(prompt, list) and prompt and isinstance(prompt[0], int | float):
                    numbers.append(prompt[0])
            return numbers

    def remaining(self) -> int:
        with self._lock:
            return len(self._pending) + (1 if self.running else 0)

    def snapshot(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """ComfyUI's ``queue_running`` and ``queue_pending``."""
        with self._lock:
            running = [self.running.as_list()] if self.running else []
            return running, [item.as_list() for item in sorted(self._pending)]

    def delete(self, prompt_ids: list[str]) -> None:
        with self._lock:
            self._pending = [i for i in self._pending if i.prompt_id not in set(prompt_ids)]
            heapq.heapify(self._pending)
            self._save()

    def clear(self) -> None:
        with self._lock:
            self._pending = []
            self._save()

    def forget(self, prompt_ids: list[str] | None) -> None:
        """Delete history entries (all of them with ``None``)."""
        with self._lock:
            if prompt_ids is None:
                self.history = {}
            for prompt_id in prompt_ids or []:
                self.history.pop(prompt_id, None)
            self._save()


def history_message(kind: str, prompt_id: str, **data: Any) -> list[Any]:
    """A ``[type, data]`` entry of a history entry's ``status.messages``, timestamped."""
    return [kind, {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000), **data}]


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError):
        # A torn or foreign file: kept aside for a look, and the server starts empty.
        path.replace(path.with_suffix(f".broken-{int(time.time())}"))
        return default
