"""``python -m parley``: run the server with settings from the environment (``PARLEY_*``)."""

from __future__ import annotations

import asyncio
import logging

from parley.app import serve
from parley.config import Settings

__all__ = ["main"]


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
