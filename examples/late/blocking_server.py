"""A blocking, single-threaded HTTP server that knows nothing of recluster:
it takes the socket systemd-style on fd 3 after LATE_MS (3 s by default)
and waits for connections in accept(2), or in poll(2) or select(2) with
WAIT=poll or WAIT=select. SIGTERM ends it between requests."""
import os
import select
import signal
import socket
import sys
import time

BODY = b"hello from blocking python\n"
busy = False
stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True
    if not busy:
        sys.exit(0)


def serve(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Worker-Pid: %d\r\nX-Worker-Id: %s\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (os.getpid(), os.environ.get("WORKER_ID", "").encode(), len(BODY), BODY))


def main():
    global busy
    signal.signal(signal.SIGTERM, on_term)
    time.sleep(int(os.environ.get("LATE_MS", "3000")) / 1000)
    sock = socket.socket(fileno=3)
    sock.setblocking(True)
    wait = os.environ.get("WAIT", "accept")
    while True:
        if wait == "poll":
            p = select.poll()
            p.register(sock, select.POLLIN)
            if not p.poll(1000):
                continue
        elif wait == "select":
            if not select.select([sock], [], [], 1.0)[0]:
                continue
        conn, _ = sock.accept()
        busy = True
        with conn:
            serve(conn)
        busy = False
        if stopping:
            sys.exit(0)


main()
