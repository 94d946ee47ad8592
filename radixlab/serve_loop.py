"""The one thread that owns the engine while `radixlab serve` runs.

HTTP handlers (on the asyncio event loop) never touch the engine: they send commands (submit,
abort, call) to `EngineLoop`, which runs them between engine steps, in arrival order, and
forwards every sampled token to the asyncio queue of the `Ticket` it belongs to. A request
that arrives while others decode is submitted before the next step and so joins the running
batch: continuous batching across clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from radixlab.engine import Engine, RequestHandle, TokenEvent


@dataclass(eq=False)
class Ticket:
    """One HTTP request's engine requests (one per choice) and the queue their events reach:
    `(choice index, TokenEvent)` items, or an exception if the engine failed."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    handles: list[RequestHandle] = field(default_factory=list)
    cancelled: bool = False

    def put(self, item: Any) -> None:
        """From the engine thread: hand an item to the asyncio side."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:              # that event loop is closed: nobody is listening
            self.cancelled = True


class EngineLoop:
    """Runs `engine.step()` in a background thread while there is work; `on_step(engine)` and
    `on_finish(handle)` let the metrics watch it."""

    def __init__(self, engine: Engine,
                 on_step: Callable[[Engine], None] | None = None,
                 on_finish: Callable[[RequestHandle], None] | None = None) -> None:
        self.engine = engine
        self.on_step = on_step
        self.on_finish = on_finish
        self._cmds: deque[Callable[[], None]] = deque()
        self._wake = threading.Condition()
        self._owner: dict[int, tuple[Ticket, int]] = {}   # rid -> (ticket, choice index)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="radixlab-engine", daemon=True)

    # -------------------------------------------------------------- from the asyncio side
    def start(self) -> EngineLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Abort everything still running and end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def _send(self, cmd: Callable[[], None]) -> None:
        with self._wake:
            if self._stopping:
                raise RuntimeError("the engine loop is stopping")
            self._cmds.append(cmd)
            self._wake.notify()

    def run(self, fn: Callable[[Engine], Any]) -> concurrent.futures.Future:
        """Run `fn(engine)` in the engine thread between steps; a future of its result."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def cmd() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(self.engine))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(exc)

        self._send(cmd)
        return fut

    async def call(self, fn: Callable[[Engine], Any]) -> Any:
        """`await` form of `run`, for the HTTP handlers."""
        return await asyncio.wrap_future(self.run(fn))

    async def submit(self, prompt_ids: Sequence[int], n: int, params: dict[str, Any]) -> Ticket:
        """Queue `n` requests for one prompt (choice i is seeded by key i); all or none."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(loop, asyncio.Queue())

        def submit_all(engine: Engine) -> Ticket:
            try:
                for i in range(n):
                    h = engine.submit(prompt_ids, **params, sample_key=i)
                    ticket.handles.append(h)
                    self._owner[h.rid] = (ticket, i)
            except BaseException:
                self._drop(ticket)
                raise
            return ticket

        return await self.call(submit_all)

    def cancel(self, ticket: Ticket, rids: Sequence[int] | None = None) -> None:
        """Abort a ticket's unfinished requests (all, or those of `rids`): the client left or
        a stop string matched. Safe from any thread; never raises."""
        if rids is None:
            ticket.cancelled = True
        try:
            self._send(lambda: self._drop(ticket, rids))
        except RuntimeError:
            pass                          # stopping: everything is aborted anyway

    # -------------------------------------------------------------- the engine thread
    def _drop(self, ticket: Ticket, rids: Sequence[int] | None = None) -> None:
        for h in ticket.handles:
            if rids is not None and h.rid not in rids:
                continue
            if self._owner.pop(h.rid, None) is not None and not h.finished:
                self.engine.abort(h.rid)
                if self.on_finish is not None:
                    self.on_finish(h)
                self.engine.forget(h.rid)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._cmds and not self._stopping and not self.engine.has_work():
                    self._wake.wait()
                cmds, self._cmds = list(self._cmds), deque()
                stopping = self._stopping
            for cmd in cmds:
                cmd()
            if stopping:
                self._abort_all(RuntimeError("the server is shutting down"))
                return
            if self.engine.has_work():
                self._step()

    def _step(self) -> None:
        try:
            events = self.engine.step()
        except Exception as exc:  # noqa: BLE001 - the step was rolled back; fail its clients
            self._abort_all(exc)
            return
        for ev in events:
            self._deliver(ev)
        if self.on_step is not None:
            self.on_step(self.engine)

    def _deliver(self, ev: TokenEvent) -> None:
        owner = self._owner.get(ev.rid)
        if owner is None:
            return
        ticket, index = owner
        if ev.finished:
            self._owner.pop(ev.rid, None)
            if self.on_finish is not None:
                self.on_finish(ticket.handles[index])
            self.engine.forget(ev.rid)
        ticket.put((index, ev))

    def _abort_all(self, error: BaseException) -> None:
        tickets = {id(t): t for t, _ in self._owner.values()}
        for ticket in tickets.values():
            self._drop(ticket)
            ticket.put(error)
