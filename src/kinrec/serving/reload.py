"""A new model without downtime: load it beside the one being served, then swap.

:class:`Reloader` builds a new engine in a background thread (the model directory read
again, everything else from the store, as at start-up) while the current engine goes on
answering; the swap is one assignment of ``app.state.engine``. A request takes its engine
once, when it starts, so requests in flight finish on the engine they started with; that
engine is closed ``grace_seconds`` after the swap. Changes committed by any replica while
the new engine loads are applied to it before it is swapped in
(:meth:`~kinrec.serving.replication.Replicator.swap`). When loading fails, the current engine
stays and the error is reported (``GET /v1/admin/reload``). Both models are in memory during
a reload.

Triggers: ``POST /v1/admin/reload`` (``scope=all``, the default, also asks every other replica
on the store to reload, through the replication log), and ``--watch-model``
(:class:`ModelWatcher`: the model directory is checked every few seconds and reloaded when
its files changed and then stayed the same for one more check). Publish a model by writing
it to a new folder and replacing a symlink (``ln -sfn runs/v2 runs/current; mv`` is atomic),
or by copying it into the served folder (a reload waits until the files stop changing).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from kinrec.store import changes

log = logging.getLogger("kinrec.serving.reload")

SKIP = {"index-cache"}  # written by the service itself


def fingerprint(model_dir: Path) -> tuple:
    """What a published model changes: where the folder resolves to, and the name, size and
    modification time of every file in it (the service's own index cache left out)."""
    root = Path(model_dir)
    out: list[tuple] = [str(root.resolve())]
    try:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP)
            for name in sorted(filenames):
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                out.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    except OSError as exc:
        out.append(("error", str(exc)))
    return tuple(out)


def _retire(engine: Any) -> None:
    """Close a replaced engine once its requests are done, and let the collector free it:
    the service freezes its start-up heap (:func:`kinrec.serving.app.freeze_heap`), which
    would keep the old model's reference cycles for good."""
    engine.close()
    del engine
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Reloader:
    """Loads a new engine with ``factory`` and swaps it in (see the module)."""

    def __init__(
        self,
        app: Any,
        factory: Callable[[], Any] | None,
        *,
        replicator: Any = None,
        grace_seconds: float = 10.0,
        model_dir: Path | None = None,
    ) -> None:
        self.app = app
        self.factory = factory
        self.replicator = replicator
        self.grace_seconds = grace_seconds
        self.model_dir = model_dir
        self.state: Literal["idle", "loading", "failed"] = "idle"
        self.generation = 0
        self.last_error: str | None = None
        self.last_reason: str | None = None
        self.loaded_at: float | None = None
        self.seconds: float | None = None
        self._lock = threading.Lock()
        self._again = False
        self._thread: threading.Thread | None = None
        self.done = threading.Condition(self._lock)

    def start(self, reason: str = "request") -> bool:
        """Start a reload in the background; while one is running, one more is queued (a
        newer model may have been published after it began). False when it cannot load."""
        if self.factory is None:
            return False
        with self._lock:
            self.last_reason = reason
            if self.state == "loading":
                self._again = True
                return True
            self.state = "loading"
            self._thread = threading.Thread(target=self._run, name="kinrec-reload", daemon=True)
            self._thread.start()
        return True

    def wait(self, timeout: float) -> bool:
        """Until no reload runs (tests); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.state == "loading":
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.done.wait(left)
        return True

    def _run(self) -> None:
        while True:
            started = time.perf_counter()
            error = None
            try:
                self._load_and_swap()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.exception("reload failed; the current model goes on serving")
            with self._lock:
                self.seconds = round(time.perf_counter() - started, 3)
                if error is None:
                    self.generation += 1
                    self.loaded_at = time.time()
                self.last_error = error
                if self._again:
                    self._again = False
                    continue
                self.state = "failed" if error else "idle"
                self.done.notify_all()
                return

    def _load_and_swap(self) -> None:
        replicator, own = self.replicator, False
        current = self.app.state.engine
        if replicator is None and current is not None:
            # replication off: still catch the new engine up with what the current one
            # committed while it loaded, through the change log
            from kinrec.serving.replication import Replicator

            url = current.store.engine.url.render_as_string(hide_password=False)
            replicator, own = Replicator(url), True
        try:
            cursor = replicator.snapshot() if replicator is not None else None
            new = self.factory()
            new.metrics = self.app.state.metrics
            if replicator is not None:
                old = replicator.swap(self.app, new, cursor)
            else:
                old, self.app.state.engine = current, new
            if own and replicator.engine is new:
                # writes the old engine's requests commit after the swap: no listener
                # applies them here, so read them once those requests are done
                time.sleep(min(1.0, self.grace_seconds))
                replicator.resync(count=False)
        finally:
            if own:
                replicator.stop()
        if self.replicator is not None:
            self.replicator.start()  # when the engine first failed to load
        new._update_gauges()
        log.info("reloaded the model: %s (%s)", new.model.name, self.last_reason)
        if old is not None and old is not new:
            timer = threading.Timer(self.grace_seconds, _retire, args=(old,))
            timer.daemon = True
            timer.start()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self.state,
                "generation": self.generation,
                "last_reason": self.last_reason,
                "last_error": self.last_error,
                "loaded_at": self.loaded_at,
                "seconds": self.seconds,
                "model_dir": str(self.model_dir) if self.model_dir else None,
            }


class ModelWatcher:
    """Reloads when the model directory's :func:`fingerprint` changed and then held for one
    more check (a copy in progress is not loaded half-written)."""

    def __init__(self, model_dir: Path, reloader: Reloader, every: float = 2.0) -> None:
        self.model_dir = Path(model_dir)
        self.reloader = reloader
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kinrec-watch", daemon=True)
        # taken now, before the engine is loaded: a model published while it loads (or
        # before the thread first runs) is a change, reloaded once it holds still
        self._loaded = fingerprint(self.model_dir)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        loaded = seen = self._loaded
        while not self._stop.wait(self.every):
            now = fingerprint(self.model_dir)
            if now != loaded and now == seen:
                log.info("model directory %s changed: reloading", self.model_dir)
                loaded = now
                self.reloader.start("watch")
            seen = now


def publish_reload(engine: Any, actor: str) -> None:
    """Ask every replica on the store to reload (a ``reload`` row in the change log)."""
    from kinrec.store.engine import write_transaction

    pending = changes.Pending(None, "reload", engine.origin, {"by": actor})
    with write_transaction(engine.store.engine) as conn:
        changes.record(conn, pending)
