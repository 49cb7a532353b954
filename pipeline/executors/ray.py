"""The Ray executor: the same passes as local mode, each shard's pass a Ray task.

``ray.init()`` starts a local Ray when no cluster is given; ``executor.address`` or
``RAY_ADDRESS`` connects to an existing one. Tasks are retried by Ray if a worker dies; a
retried pass is idempotent (it cleans what a killed attempt left, writes atomically, and its
done marker is written last), so retries cannot duplicate or lose rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.errors import ThresherError


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int = 0, address: str | None = None):
        self.workers = workers
        self.address = address or os.environ.get("RAY_ADDRESS")
        self._started = False

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError as e:  # pragma: no cover - ray is a core dependency
            raise ThresherError("executor 'ray' needs ray: pip install 'ray[data]'") from e
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            else:  # a local Ray for this run only: no dashboard, a small object store (passes exchange files)
                kwargs.update(include_dashboard=False, object_store_memory=256 * 1024 * 1024)
                if self.workers:
                    kwargs["num_cpus"] = self.workers
            try:
                ray.init(**kwargs)
            except ConnectionError as e:
                raise ThresherError(f"cannot connect to the Ray cluster at {self.address}: {e}") from None
            self._started = True
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def map(self, fn: Callable[..., Any], calls: Iterable[tuple], on_done: Callable[[Any], None],
            context: str = "") -> None:
        """Each call is a Ray task; a task whose worker dies is retried by Ray (passes are idempotent)."""
        import ray
        from ray.exceptions import OutOfMemoryError, RayTaskError, WorkerCrashedError

        remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(fn)
        pending = [remote.remote(*args) for args in calls]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    on_done(ray.get(ref))
        except (OutOfMemoryError, WorkerCrashedError) as e:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise ThresherError(oom_message(context, type(e).__name__)) from None
        except RayTaskError as e:
            for ref in pending:
                ray.cancel(ref, force=True)
            cause = e.cause if getattr(e, "cause", None) is not None else e
            if isinstance(cause, MemoryError):
                raise ThresherError(oom_message(context, "MemoryError")) from None
            raise cause from None


def oom_message(context: str, what: str) -> str:
    return (f"a Ray worker ran out of memory ({what}) in {context or 'a pass'}. Lower executor.batch_size_mb "
            "(bytes of input per batch), run fewer tasks per node (executor.workers), or give the workers more "
            "memory; ops that load a model need their model's memory in every worker.")
