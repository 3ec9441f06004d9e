#!/usr/bin/env node
// A recluster worker in Node.js, no dependencies.
//
// It serves HTTP/1.1 with keep-alive and drains without failing a request.
//
//   recluster run --listen http=127.0.0.1:8080 --ready-when ready -- node server.js
//   node server.js [--addr 127.0.0.1:8080]          (alone)
//
// Under recluster it takes the socket passed the systemd way (fd 3..,
// LISTEN_FDS, LISTEN_PID), and says in its listening message that it needs
// no LISTEN_PID ("listen_pid":"optional"): its channel already proves the
// socket is its own, so the master starts its next workers directly, without
// the exec trampoline that sets LISTEN_PID, and it then takes the socket
// with LISTEN_PID unset. Alone (no channel) it keeps the systemd rule:
// LISTEN_PID must be its pid. Node cannot send Unix datagrams, so it says it
// is ready with {"cmd":"ready"} on the channel (RECLUSTER_CHANNEL_FD)
// rather than READY=1 over NOTIFY_SOCKET. Node cannot receive descriptors
// on a socket either, so it does not ask the master for sockets with the
// listen command: give them with --listen (Options.Sockets).
//
// The drain starts on SIGTERM, SIGINT, {"cmd":"disconnect"} from the
// master, or the end of the channel:
//   * stop accepting (the other workers take new connections from the
//     shared socket) but keep the open connections: http.Server.close()
//     would also close idle keep-alive connections at once, racing clients
//     that are about to send on them, so only the net.Server part is closed;
//   * for a grace period, answer every request with Connection: close, so
//     that each keep-alive client leaves after its next request; stop early
//     once every connection is closed;
//   * then close the idle connections, let the requests in flight finish,
//     and exit before the master's deadline (RECLUSTER_TIMEOUT).
// See docs/protocol.md for the protocol.
'use strict';

const http = require('http');
const net = require('net');

const WORKER_ID = process.env.WORKER_ID || '0';
const GENERATION = process.env.RECLUSTER_GENERATION || '0';
const PID = String(process.pid);

function log(...args) {
  console.error(`[node worker ${WORKER_ID} pid ${PID} gen ${GENERATION}]`, ...args);
}

const UNITS = { ns: 1e-9, us: 1e-6, '\u00b5s': 1e-6, '\u03bcs': 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };

// parseGoDuration turns a Go duration ("1s", "1m30s", "1h0m0s", "500ms")
// into seconds, or null.
function parseGoDuration(text) {
  if (!text) return null;
  let sign = 1;
  if (text[0] === '-' || text[0] === '+') {
    sign = text[0] === '-' ? -1 : 1;
    text = text.slice(1);
  }
  if (text === '0') return 0;
  const re = /(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m;
  while ((m = re.exec(text)) !== null) {
    total += parseFloat(m[1]) * UNITS[m[2]];
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== text.length) return null;
  return sign * total;
}

function parseArgs() {
  let addr = process.env.ADDR || '127.0.0.1:8080';
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--addr' && i + 1 < argv.length) addr = argv[++i];
    else if (argv[i].startsWith('--addr=')) addr = argv[i].slice(7);
  }
  return { addr };
}

// inheritedFD returns the fd of the socket passed the systemd way (the one
// named "http" in LISTEN_FDNAMES, else the first), or -1. LISTEN_PID of
// another pid means the sockets are not ours; with a channel to the master,
// an unset LISTEN_PID is how the master starts a worker that said it needs
// none (docs/protocol.md, section 3.1).
function inheritedFD() {
  const listenPID = process.env.LISTEN_PID;
  if (listenPID !== PID && !(channel && listenPID === undefined)) return -1;
  const n = parseInt(process.env.LISTEN_FDS || '0', 10);
  if (!(n > 0)) return -1;
  const names = (process.env.LISTEN_FDNAMES || '').split(':');
  const i = names.indexOf('http');
  return 3 + (i >= 0 && i < n ? i : 0);
}

// ------------------------------------------------------------------ state

let draining = false;
let graceOver = false;
const conns = new Map(); // socket -> requests in hand on it

const server = http.createServer((req, res) => {
  let size = 0;
  req.on('data', (chunk) => { size += chunk.length; });
  req.on('end', () => {
    const body = `hello from node worker ${WORKER_ID} (pid ${PID}, generation ${GENERATION})\n`;
    const headers = {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'X-Worker-Id': WORKER_ID,
      'X-Worker-Pid': PID,
    };
    // Node closes the connection after a response that says so.
    if (draining) headers.Connection = 'close';
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  });
});

server.on('connection', (socket) => {
  socket.setNoDelay(true);
  conns.set(socket, 0);
  socket.on('close', () => {
    conns.delete(socket);
    if (draining && conns.size === 0) finish('every connection is closed');
  });
});

server.on('request', (req, res) => {
  const socket = req.socket;
  conns.set(socket, (conns.get(socket) || 0) + 1);
  res.on('close', () => {
    if (!conns.has(socket)) return;
    const left = conns.get(socket) - 1;
    conns.set(socket, left);
    if (left === 0 && graceOver) socket.destroySoon();
  });
});

// ---------------------------------------------------------------- channel

let channel = null;

function openChannel() {
  const fd = parseInt(process.env.RECLUSTER_CHANNEL_FD || '', 10);
  if (!(fd > 2)) return;
  channel = new net.Socket({ fd, readable: true, writable: true });
  let buf = '';
  channel.setEncoding('utf8');
  channel.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (!line.trim()) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch (e) {
        log('ignored a malformed line from the master:', line.slice(0, 200));
        continue;
      }
      if (msg && msg.cmd === 'disconnect') drain('the master sent disconnect');
      // Every other command is ignored, as the protocol asks.
    }
    if (buf.length > 64 * 1024) buf = '';
  });
  channel.on('end', () => drain('the master closed the channel'));
  channel.on('error', () => drain('the channel failed'));
}

function send(msg) {
  if (channel && !channel.destroyed) channel.write(JSON.stringify(msg) + '\n');
}

// ------------------------------------------------------------------ drain

let finished = false;

function finish(why) {
  if (finished) return;
  finished = true;
  log(`exiting: ${why}`);
  process.exit(0);
}

function drain(reason) {
  if (draining) return;
  draining = true;
  const budget = parseGoDuration(process.env.RECLUSTER_TIMEOUT);
  const total = budget !== null && budget > 0 ? budget : 10;
  const timeout = total * 0.9;
  const grace = Math.min(Math.max(total / 2, 0.1), 5, timeout);
  log(`draining (${reason}): grace ${grace.toFixed(2)}s, deadline ${timeout.toFixed(2)}s`);
  // Stop accepting without http.Server.close(), which closes idle
  // keep-alive connections at once. Our copy of the socket is closed; the
  // master keeps its own.
  net.Server.prototype.close.call(server);
  if (conns.size === 0) {
    finish('no connection was open');
    return;
  }
  setTimeout(() => {
    graceOver = true;
    for (const [socket, busy] of conns) {
      if (busy === 0) socket.destroySoon();
    }
  }, grace * 1000).unref();
  setTimeout(() => finish('drain deadline'), timeout * 1000).unref();
}

process.on('SIGTERM', () => drain('SIGTERM'));
process.on('SIGINT', () => drain('SIGINT'));

// ------------------------------------------------------------------- main

function main() {
  const { addr } = parseArgs();
  openChannel();
  heartbeat();
  const fd = inheritedFD();
  for (const k of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES', 'NOTIFY_SOCKET', 'RECLUSTER_CHANNEL_FD']) {
    delete process.env[k];
  }
  const onListening = () => {
    // A Unix socket's address is its path, a string.
    const a = server.address();
    const network = typeof a === 'string' ? 'unix' : 'tcp';
    let address = a;
    if (network === 'tcp') {
      address = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    }
    log(`serving on ${address}`);
    if (fd >= 0) {
      // Before ready, so that the master has heard it once this worker counts.
      send({ cmd: 'listening', network, address, listen_pid: 'optional' });
    }
    send({ cmd: 'ready' });
  };
  if (fd >= 0) {
    server.listen({ fd }, onListening);
  } else {
    const i = addr.lastIndexOf(':');
    const host = addr.slice(0, i).replace(/^\[|\]$/g, '') || undefined;
    server.listen({ host, port: parseInt(addr.slice(i + 1), 10) }, onListening);
  }
}

function heartbeat() {
  const every = parseGoDuration(process.env.RECLUSTER_HEARTBEAT);
  if (!channel || !every || every <= 0) return;
  setInterval(() => send({ cmd: 'heartbeat' }), (every / 3) * 1000).unref();
}

main();
