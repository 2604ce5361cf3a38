"""An SMTP sink for the sending benchmark, run in its own process:

    python -m bench.sink PORT FILE

accepts every message and writes its Message-ID and the moment it accepted it (Unix time) on a
line of FILE."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, path: str) -> None:
        self.out = Path(path).open("a")  # noqa: SIM115 (closed with the process)

    async def handle_DATA(self, server, session, envelope):
        for line in envelope.original_content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().decode()
                self.out.write(f"{message_id} {time.time():.6f}\n")
                self.out.flush()
                break
        return "250 OK"


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # a line per SMTP command
    controller = Controller(Handler(path), hostname="127.0.0.1", port=port)
    controller.start()
    asyncio.new_event_loop().run_until_complete(asyncio.sleep(10**7))


if __name__ == "__main__":
    main()
