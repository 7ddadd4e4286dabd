"""The kopf handlers are coroutines, so they run on the event loop that owns the work queue.

kopf runs a plain function in a thread pool: there, ``WorkQueue.add`` (an
asyncio.Queue and plain sets) would race the workers on the loop, and a wake-up
could be lost or delayed until some other event woke the loop.
"""

from __future__ import annotations

import inspect

from lightbox.operator import handlers


def test_every_handler_is_a_coroutine():
    # Every public function of the module is a kopf handler (kopf's decorators return it unchanged).
    public = {name: fn for name, fn in vars(handlers).items()
              if inspect.isfunction(fn) and fn.__module__ == handlers.__name__ and not name.startswith("_")}
    assert {"validation_event", "job_event", "pod_event", "validation_names", "startup"} <= set(public)
    assert [name for name, fn in public.items() if not inspect.iscoroutinefunction(fn)] == []
