#!/usr/bin/env python3
"""A real SMTP server for Touchpilot's tests (aiosmtpd).

Usage: smtp_server.py PORT MAILDIR

Accepts every message and writes it to MAILDIR/N.eml, except:
- a recipient starting with `tempfail` is refused once with 451 (then accepted),
- a recipient starting with `permfail` is always refused with 550,
- a message to a recipient starting with `dropafter` is kept, then the
  connection is dropped before the reply to DATA, once (the ambiguous
  window: the client cannot know it was delivered).
Prints `ready` on stdout once listening; stops on stdin EOF.
"""
import asyncio
import pathlib
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, maildir: pathlib.Path):
        self.maildir = maildir
        self.refused = set()
        self.dropped = set()
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("permfail"):
            return "550 5.1.1 no such user"
        if address.startswith("tempfail") and address not in self.refused:
            self.refused.add(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        (self.maildir / f"{self.count}.eml").write_bytes(envelope.original_content or envelope.content)
        drop = [a for a in envelope.rcpt_tos if a.startswith("dropafter") and a not in self.dropped]
        if drop:
            self.dropped.update(drop)
            server.transport.close()
        return "250 Message accepted for delivery"


def main():
    port, maildir = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    maildir.mkdir(parents=True, exist_ok=True)
    controller = Controller(Handler(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
