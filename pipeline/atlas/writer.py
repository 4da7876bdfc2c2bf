"""Writing the atlas's images on a small thread pool (Pillow releases the GIL while it encodes)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.atlas.tiles import save_image


class ImageWriter:
    """Saves images on a thread pool; ``close`` waits for all and re-raises the first error."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending: list[Future] = []

    def save(self, image: Any, path: Path, quality: int = 85, full_colour: bool = True) -> None:
        self._pending.append(self._pool.submit(save_image, image, path, quality, full_colour))
        if len(self._pending) > 64:  # bound the images waiting in memory
            self._pending.pop(0).result()

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown()
