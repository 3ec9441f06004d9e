"""A blocking, single-threaded HTTP server that knows nothing of recluster:
it takes the socket systemd-style on fd 3 after LATE_MS (3 s by default)
and waits for connections in accept(2), or in poll(2) or select(2) with
WAIT=poll or WAIT=select. SIGTERM ends it between requests.

The signal handler only sets a flag: were it to raise (sys.exit), it could
do so just after accept(2) returned a connection and drop it. So every wait
is bounded (SO_RCVTIMEO on the socket, a timeout for poll and select), and the
loop looks at the flag between waits."""
import os
import select
import signal
import socket
import struct
import sys
import time

BODY = b"hello from blocking python\n"
stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True


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
    signal.signal(signal.SIGTERM, on_term)
    time.sleep(int(os.environ.get("LATE_MS", "3000")) / 1000)
    sock = socket.socket(fileno=3)
    sock.setblocking(True)
    wait = os.environ.get("WAIT", "accept")
    # accept(2) gives up after 100 ms with EAGAIN: after poll or select,
    # another worker may have taken the connection.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100_000))
    while not stopping:
        if wait == "poll":
            p = select.poll()
            p.register(sock, select.POLLIN)
            if not p.poll(100):
                continue
        elif wait == "select":
            if not select.select([sock], [], [], 0.1)[0]:
                continue
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            continue  # the accept timed out, or another worker took it
        with conn:
            conn.settimeout(None)
            serve(conn)
    sys.exit(0)


main()
