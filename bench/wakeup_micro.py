"""What one lone datagram costs the receiver just to be woken: Trio vs a blocking thread.

    .venv/bin/python bench/wakeup_micro.py

A sender process sends 1,200-byte datagrams on loopback 4 ms apart (about the
rate of one host's media); the receiver, this process, reads them with

- ``trio``: ``await trio.lowlevel.wait_readable(sock)``, then ``recvfrom`` until
  EAGAIN (what transport/media_port.py does), or
- ``blocking``: a plain blocking ``recvfrom`` loop (what a media thread would do),

and does nothing else with them. CPU per datagram from ``getrusage``. The
difference is the floor of what the Trio receive path costs per lone packet
before any work is done (small rooms, where packets come one at a time).
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys

import trio

COUNT = 2000
SENDER = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "port = int(sys.argv[1])\n"
    f"for _ in range({COUNT}):\n"
    "    s.sendto(bytes(1200), ('127.0.0.1', port))\n"
    "    time.sleep(0.004)\n"
    "s.sendto(b'q', ('127.0.0.1', port))\n"
)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_sender(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SENDER, str(port)])


def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def trio_receive() -> float:
    sock = receiver()
    sock.setblocking(False)
    sender = start_sender(sock.getsockname()[1])
    start, count = cpu_seconds(), 0
    while True:
        await trio.lowlevel.wait_readable(sock)
        while True:
            try:
                data, _ = sock.recvfrom(2048)
            except BlockingIOError:
                break
            if data == b"q":
                sender.wait()
                return (cpu_seconds() - start) / count
            count += 1


def blocking_receive() -> float:
    sock = receiver()
    sender = start_sender(sock.getsockname()[1])
    start, count = cpu_seconds(), 0
    while True:
        data, _ = sock.recvfrom(2048)
        if data == b"q":
            sender.wait()
            return (cpu_seconds() - start) / count
        count += 1


def main() -> None:
    trio_us = 1e6 * trio.run(trio_receive)
    blocking_us = 1e6 * blocking_receive()
    print(f"{COUNT} lone datagrams, 4 ms apart: receiver CPU per datagram")
    print(f"trio wait_readable + recvfrom   {trio_us:7.1f} us")
    print(f"blocking recvfrom (a thread)    {blocking_us:7.1f} us")
    print(f"trio's extra cost per wake-up   {trio_us - blocking_us:7.1f} us")


if __name__ == "__main__":
    main()
