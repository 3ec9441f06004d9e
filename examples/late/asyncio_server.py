"""An asyncio HTTP server that knows nothing of recluster: it takes the
socket systemd-style on fd 3 after LATE_MS (3 s by default) and drains on
SIGTERM. It waits for connections in an epoll set. EXIT_AFTER_MS, when set,
makes it exit with status 1 that long after it starts to serve (a broken
release that passes its readiness check)."""
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
    await writer.wait_closed()


async def main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.sleep(int(os.environ.get("LATE_MS", "3000")) / 1000)
    server = await asyncio.start_server(handle, sock=socket.socket(fileno=3))
    exit_after = int(os.environ.get("EXIT_AFTER_MS", "0"))
    if exit_after:
        loop.call_later(exit_after / 1000, os._exit, 1)
    await stop.wait()
    # Stop accepting first and let the connections already accepted attach
    # to the server (their tasks are queued ahead of this one): Python
    # 3.11's Server.close() fails an assertion in the transport of a
    # connection accepted just before it, and the client sees a reset.
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    await asyncio.sleep(0)
    server.close()
    # Python before 3.12 returns from wait_closed at once, and asyncio.run
    # cancels what is left: the connections accepted just before close
    # (their handlers may not even have started yet) would be dropped.
    # Wait for every task, those that those tasks start included.
    while others := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(others)


asyncio.run(main())
