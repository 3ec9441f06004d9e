#!/usr/bin/env python3
"""A recluster worker in Python, standard library only.

It serves HTTP/1.1 with keep-alive and drains without failing a request.
It finds its listening socket in one of three ways, in this order:

  1. a socket passed the systemd way (LISTEN_FDS, LISTEN_PID, fds from 3),
     as `recluster run --listen http=127.0.0.1:8080 --ready-when ready --
     python3 server.py` does. Under a master it says in its listening
     message that it needs no LISTEN_PID ("listen_pid":"optional"), since
     its channel proves the socket is its own: the master then starts its
     next workers without the exec trampoline that sets LISTEN_PID, and it
     takes the socket with LISTEN_PID unset. Alone it keeps the systemd
     rule (LISTEN_PID must be its pid);
  2. a socket asked of the master over the channel (RECLUSTER_CHANNEL_FD),
     as a worker of a Go program that uses the recluster library without
     Options.Sockets gets it;
  3. alone, it binds the address itself: python3 server.py [--addr H:P].

Readiness: READY=1 over NOTIFY_SOCKET when the master gave one, else
{"cmd":"ready"} on the channel. The drain starts on SIGTERM, SIGINT, a
{"cmd":"disconnect"} from the master, or the end of the channel:

  * stop accepting (the other workers take new connections from the
    shared socket);
  * for a grace period, answer every request with Connection: close, so
    that each keep-alive client leaves after its next request; stop early
    once every connection is closed;
  * then close the idle connections, let the requests in flight finish,
    and exit before the master's deadline (RECLUSTER_TIMEOUT).

See docs/protocol.md for the protocol.
"""

import argparse
import array
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time

WORKER_ID = os.environ.get("WORKER_ID", "0")
GENERATION = os.environ.get("RECLUSTER_GENERATION", "0")
PID = str(os.getpid())
MAX_LINE = 64 << 10


def log(*args):
    print("[python worker %s pid %s gen %s]" % (WORKER_ID, PID, GENERATION), *args,
          file=sys.stderr, flush=True)


_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
          "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text):
    """Parses a Go duration ("1s", "1m30s", "1h0m0s", "500ms") into seconds;
    returns None for an empty or invalid value."""
    if not text:
        return None
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    parts = re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)


# ---------------------------------------------------------------- channel

class Channel:
    """The worker's end of the master's channel: JSON lines over a Unix
    stream socket. Every read is a recvmsg with room for descriptors, since
    the master attaches one to each successful listen reply and a plain
    read would make the kernel discard it."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.buf = b""
        self.fds = []  # received descriptors not yet claimed by a listen reply
        self.send_lock = threading.Lock()
        self.next_id = 0

    def send(self, msg):
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        with self.send_lock:
            self.sock.sendall(data)

    def receive(self):
        """Returns (message, fd) for the next well-formed line, fd being the
        descriptor attached to a successful listen reply (else None), or
        (None, None) when the master has closed the channel."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1:]
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    log("ignored a malformed line from the master:", line[:200])
                    continue
                if not isinstance(msg, dict) or "cmd" not in msg:
                    continue
                fd = None
                if msg["cmd"] == "listen" and not msg.get("error") and self.fds:
                    fd = self.fds.pop(0)
                return msg, fd
            if len(self.buf) > MAX_LINE:
                self.buf = b""
            fds = array.array("i")
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(16 * fds.itemsize))
            except OSError:
                data, ancdata = b"", []
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(cdata) - len(cdata) % fds.itemsize
                    fds.frombytes(cdata[:usable])
            for fd in fds:
                os.set_inheritable(fd, False)
                self.fds.append(fd)
            if not data:
                for fd in self.fds:
                    os.close(fd)
                self.fds = []
                return None, None
            self.buf += data

    def listen(self, network, address, on_other):
        """Asks the master for a listening socket; messages that arrive
        before the reply go to on_other."""
        self.next_id += 1
        my_id = self.next_id
        self.send({"cmd": "listen", "id": my_id, "network": network, "address": address})
        while True:
            msg, fd = self.receive()
            if msg is None:
                raise RuntimeError("the master closed the channel before it answered listen")
            if msg["cmd"] == "listen" and msg.get("id") == my_id:
                if msg.get("error"):
                    raise RuntimeError("the master could not listen on %s: %s" % (address, msg["error"]))
                if fd is None:
                    raise RuntimeError("the master's listen reply came without a descriptor")
                return socket.socket(fileno=fd), msg.get("address", address)
            if fd is not None:
                os.close(fd)
            on_other(msg)


NOTIFY_SOCKET = os.environ.get("NOTIFY_SOCKET", "")


def sd_notify(line):
    """Sends one sd_notify datagram; False when there is no NOTIFY_SOCKET."""
    path = NOTIFY_SOCKET
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.send(line.encode())
    return True


# ---------------------------------------------------------------- sockets

def inherited_socket(under_master):
    """Returns the socket passed the systemd way, or None. It prefers the
    one named "http" in LISTEN_FDNAMES, else takes the first. LISTEN_PID of
    another pid means the sockets are not ours; under a master (a channel),
    an unset LISTEN_PID is how it starts a worker that said it needs none
    (docs/protocol.md, section 3.1)."""
    listen_pid = os.environ.get("LISTEN_PID")
    if listen_pid != PID and not (under_master and listen_pid is None):
        return None
    n = int(os.environ.get("LISTEN_FDS", "0") or "0")
    if n <= 0:
        return None
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    fd = 3
    for i in range(n):
        if i < len(names) and names[i] == "http":
            fd = 3 + i
    s = socket.socket(fileno=fd)
    if not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise RuntimeError("inherited fd %d is not a listening socket" % fd)
    for i in range(n):
        os.set_inheritable(3 + i, False)
    return s


# ---------------------------------------------------------------- server

def hang_up(request):
    """Wakes the thread that waits for the next request on an idle
    connection: it reads EOF and the connection ends."""
    try:
        request.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, sock):
        # bind_and_activate=False: the socket comes ready-made.
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        # The accept happens after select() reports the socket readable, but
        # every worker is woken for each connection and only one wins: the
        # others must get EAGAIN, not block in accept(). The socket is one
        # open file description shared with the master and the other
        # workers, who set it non-blocking too (Go and Node do).
        self.socket.setblocking(False)
        self.draining = False
        self.grace_over = False
        self.cond = threading.Condition()
        self.conns = {}  # connection -> busy (True while a request is in hand)

    # Connection bookkeeping. A connection counts from its accept (in the
    # accept thread, so that a drain cannot miss one whose handler thread
    # has not run yet) until its socket is closed.
    def process_request(self, request, client_address):
        with self.cond:
            self.conns[request] = False
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        try:
            super().shutdown_request(request)
        finally:
            with self.cond:
                self.conns.pop(request, None)
                self.cond.notify_all()

    def conn_busy(self, request, busy):
        with self.cond:
            if request in self.conns:
                self.conns[request] = busy
            if not busy and self.grace_over:
                hang_up(request)

    def wait_conns(self, until, idle_too):
        """Waits until no connection is left (or none is busy, when
        idle_too is False), or until the monotonic deadline."""
        with self.cond:
            while True:
                left = [h for h, busy in self.conns.items() if busy or idle_too]
                remaining = until - time.monotonic()
                if not left or remaining <= 0:
                    return len(left)
                self.cond.wait(remaining)

    def drain(self, grace, timeout):
        started = time.monotonic()
        deadline = started + timeout
        self.draining = True
        self.shutdown()          # stop the accept loop
        self.socket.close()      # our copy only: the master keeps the socket
        log("draining: not accepting; grace %.2fs, deadline %.2fs" % (grace, timeout))
        # Grace: each keep-alive client gets Connection: close on its next
        # request; stop early once every connection has gone.
        self.wait_conns(min(started + grace, deadline), idle_too=True)
        with self.cond:
            self.grace_over = True
            for request, busy in list(self.conns.items()):
                if not busy:
                    hang_up(request)
        left = self.wait_conns(deadline, idle_too=True)
        log("drained in %.2fs (%d connection(s) left)" % (time.monotonic() - started, left))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "recluster-python-example"
    disable_nagle_algorithm = True

    def handle_one_request(self):
        try:
            super().handle_one_request()
        finally:
            self.server.conn_busy(self.connection, False)

    def parse_request(self):
        # The request line has arrived: the connection is busy until the
        # response is out.
        self.server.conn_busy(self.connection, True)
        return super().parse_request()

    def respond(self, with_body):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        body = ("hello from python worker %s (pid %s, generation %s)\n"
                % (WORKER_ID, PID, GENERATION)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Worker-Id", WORKER_ID)
        self.send_header("X-Worker-Pid", PID)
        if self.server.draining:
            # BaseHTTPRequestHandler closes the connection after this.
            self.send_header("Connection", "close")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self.respond(True)

    def do_POST(self):
        self.respond(True)

    def do_HEAD(self):
        self.respond(False)

    def log_message(self, format, *args):
        pass  # no access log


# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--addr", default=os.environ.get("ADDR", "127.0.0.1:8080"),
                        help="address to serve on when no socket is passed (default %(default)s)")
    args = parser.parse_args()

    channel = None
    channel_fd = os.environ.get("RECLUSTER_CHANNEL_FD", "")
    if channel_fd.isdigit() and int(channel_fd) > 2:
        os.set_inheritable(int(channel_fd), False)
        channel = Channel(int(channel_fd))
    notify = bool(NOTIFY_SOCKET)

    # The drain is started by writing to this pipe: from the signal
    # handler (a plain write is safe there) or from the channel reader.
    wake_r, wake_w = os.pipe()
    stop_reason = []

    def request_stop(reason):
        stop_reason.append(reason)
        try:
            os.write(wake_w, b"x")
        except OSError:
            pass

    def on_message(msg):
        if msg.get("cmd") == "disconnect":
            request_stop("the master sent disconnect")
        # Every other command is ignored, as the protocol asks.

    sock = inherited_socket(channel is not None)
    inherited = sock is not None
    address = None
    if sock is None and channel is not None:
        host, _, port = args.addr.rpartition(":")
        sock, address = channel.listen("tcp", args.addr, on_message)
    if sock is None:
        host, _, port = args.addr.rpartition(":")
        sock = socket.create_server((host.strip("[]"), int(port)))
    # What our own children must not inherit.
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "RECLUSTER_CHANNEL_FD"):
        os.environ.pop(key, None)

    signal.signal(signal.SIGTERM, lambda *_: request_stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: request_stop("SIGINT"))

    server = Server(sock)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     name="accept", daemon=True).start()

    if channel is not None:
        def read_channel():
            while True:
                msg, fd = channel.receive()
                if msg is None:
                    request_stop("the master closed the channel")
                    return
                if fd is not None:
                    os.close(fd)
                on_message(msg)
        threading.Thread(target=read_channel, name="channel", daemon=True).start()

    heartbeat = parse_go_duration(os.environ.get("RECLUSTER_HEARTBEAT", ""))
    if heartbeat and heartbeat > 0 and channel is not None:
        def beat():
            while True:
                time.sleep(heartbeat / 3)
                try:
                    channel.send({"cmd": "heartbeat"})
                except OSError:
                    return
        threading.Thread(target=beat, name="heartbeat", daemon=True).start()

    if inherited and channel is not None:
        # Before ready, so that the master has heard it once this worker
        # counts (READY=1 over NOTIFY_SOCKET travels apart, and may overtake it).
        host, port = sock.getsockname()[:2]
        channel.send({"cmd": "listening", "network": "tcp",
                      "address": ("[%s]:%d" if ":" in host else "%s:%d") % (host, port),
                      "listen_pid": "optional"})
    if notify:
        sd_notify("READY=1\nSTATUS=serving")
    elif channel is not None:
        channel.send({"cmd": "ready"})
    log("serving on %s" % (address or "%s:%s" % sock.getsockname()[:2]))

    while True:
        try:
            if os.read(wake_r, 1):
                break
        except InterruptedError:
            continue

    # The drain budget: exit comfortably before the master's SIGKILL.
    budget = parse_go_duration(os.environ.get("RECLUSTER_TIMEOUT", ""))
    if budget is None or budget <= 0:
        budget = 10.0
    timeout = budget * 0.9
    grace = min(max(budget / 2, 0.1), 5.0, timeout)
    log("stopping:", stop_reason[0])
    if notify:
        try:
            sd_notify("STOPPING=1")
        except OSError:
            pass
    server.drain(grace, timeout)
    sys.stdout.flush()
    os._exit(0)  # the handler threads are daemons; nothing is left to wait for


if __name__ == "__main__":
    main()
