"""Progress bars on stderr for every phase that takes more than a few seconds.

tqdm redraws a bar only when it advances, so a bar waiting on one long step (a compile, a Ray batch, a
baseline tuned on a worker) looks frozen at its last elapsed time. :class:`Ticker` redraws it from a
daemon thread so the elapsed time keeps moving: every second on a terminal, every 30 s into a log file
(a redraw there is a whole line, and a log of one line per second says nothing more).
"""
from __future__ import annotations

import sys
import threading
from typing import Optional

TTY_TICK_S = 1.0
LOG_TICK_S = 30.0


def progress_bar(total: Optional[int], desc: str, unit: str = "it", enabled: bool = True, initial: int = 0,
                 postfix: Optional[str] = None):
    """A tqdm bar on stderr with metaopt's settings; ``enabled=False`` gives a silent one."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
               dynamic_ncols=True, leave=True)
    if postfix:
        bar.set_postfix_str(postfix)
    return bar


def _tick_interval(bar) -> float:
    try:
        return TTY_TICK_S if bar.fp.isatty() else LOG_TICK_S
    except (AttributeError, ValueError):      # a closed or unusual stream: redraw rarely
        return LOG_TICK_S


class Ticker:
    """Redraws ``bar`` every ``interval`` seconds from a daemon thread until :meth:`stop` (tqdm's lock
    guards each redraw). Also a context manager: ``with Ticker(bar): long_step()``."""

    def __init__(self, bar, interval: Optional[float] = None):
        self._stop = threading.Event()
        self._thread = None
        if getattr(bar, "disable", True):
            return
        every = _tick_interval(bar) if interval is None else interval

        def loop() -> None:
            while not self._stop.wait(every):
                bar.refresh()

        self._thread = threading.Thread(target=loop, name=f"tick {bar.desc}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop redrawing (call before closing the bar)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "Ticker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
