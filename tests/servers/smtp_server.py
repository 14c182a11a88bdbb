#!/usr/bin/env python3
"""A real SMTP server for Touchpilot's tests (aiosmtpd).

Usage: smtp_server.py PORT MAILDIR [--no-pipelining] [--no-ehlo]
                                   [--offer-starttls] [--log FILE]

Accepts every message and writes it to MAILDIR/N.eml, except:
- a recipient starting with `tempfail` is refused once with 451 (then accepted),
- a recipient starting with `permfail` is always refused with 550,
- a recipient starting with `liar` is refused with 550 but kept, so that a
  DATA after it is answered 354 (a broken server: a client must not send
  the message),
- a message to a recipient starting with `dropafter` is kept, then the
  connection is dropped before the reply to DATA, once (the ambiguous
  window: the client cannot know it was delivered),
- a message to a recipient starting with `rejectdata` is refused at the end
  of its data with 554, and not kept.

The server offers PIPELINING (RFC 2920) unless `--no-pipelining`; aiosmtpd
reads commands line by line, so it takes pipelined commands either way.
`--no-ehlo` refuses EHLO (502), as a server that only knows HELO would.
`--offer-starttls` lists STARTTLS without being able to do it.
`--log FILE` appends one line per command, `PEERPORT VERB` (`MESSAGE` once
a message's data arrived), and for MAIL and MESSAGE `ahead=N`: the bytes
already received after it (N > 0 when the client pipelined its RCPT and
DATA with MAIL, or the next message's commands with the data).

Prints `ready` on stdout once listening; stops on stdin EOF.
"""
import asyncio
import pathlib
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, maildir: pathlib.Path, options):
        self.maildir = maildir
        self.options = options
        self.refused = set()
        self.dropped = set()
        self.count = 0
        self.log_file = None
        if "--log" in options:
            self.log_file = open(options[options.index("--log") + 1], "a", buffering=1)

    def log(self, session, line):
        if self.log_file:
            self.log_file.write(f"{session.peer[1]} {line}\n")

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.log(session, "EHLO")
        if "--no-ehlo" in self.options:
            return ["502 5.5.2 EHLO not implemented"]
        session.host_name = hostname
        extra = []
        if "--no-pipelining" not in self.options:
            extra.append("250-PIPELINING")
        if "--offer-starttls" in self.options:
            extra.append("250-STARTTLS")
        return responses[:1] + extra + responses[1:]

    async def handle_HELO(self, server, session, envelope, hostname):
        self.log(session, "HELO")
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_NOOP(self, server, session, envelope, arg):
        self.log(session, "NOOP")
        return "250 OK"

    async def handle_RSET(self, server, session, envelope):
        self.log(session, "RSET")
        return "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # What the client sent after MAIL before waiting for its reply.
        ahead = len(server._reader._buffer)
        self.log(session, f"MAIL ahead={ahead} {' '.join(mail_options)}".rstrip())
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.log(session, "RCPT")
        if address.startswith("permfail"):
            return "550 5.1.1 no such user"
        if address.startswith("liar"):
            envelope.rcpt_tos.append(address)
            return "550 5.1.1 no such user"
        if address.startswith("tempfail") and address not in self.refused:
            self.refused.add(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.log(session, f"MESSAGE ahead={len(server._reader._buffer)}")
        if any(a.startswith("rejectdata") for a in envelope.rcpt_tos):
            return "554 5.6.0 message refused"
        self.count += 1
        (self.maildir / f"{self.count}.eml").write_bytes(envelope.original_content or envelope.content)
        drop = [a for a in envelope.rcpt_tos if a.startswith("dropafter") and a not in self.dropped]
        if drop:
            self.dropped.update(drop)
            server.transport.close()
        return "250 Message accepted for delivery"


def main():
    port, maildir = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    options = sys.argv[3:]
    maildir.mkdir(parents=True, exist_ok=True)
    controller = Controller(Handler(maildir, options), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
