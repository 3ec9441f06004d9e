"""An asyncio HTTP server that knows nothing of recluster: it takes the
socket systemd-style on fd 3 after LATE_MS (3 s by default) and drains on
SIGTERM. It waits for connections in an epoll set."""
import asyncio
import os
import signal
import socket

BODY = b"hello from asyncio\n"


async def handle(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Worker-Pid: %d\r\nX-Worker-Id: %s\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (os.getpid(), os.environ.get("WORKER_ID", "").encode(), len(BODY), BODY))
    await writer.drain()
    writer.close()


async def main():
    await asyncio.sleep(int(os.environ.get("LATE_MS", "3000")) / 1000)
    server = await asyncio.start_server(handle, sock=socket.socket(fileno=3))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


asyncio.run(main())
