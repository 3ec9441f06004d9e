// An Express 5 app that knows nothing of recluster: it takes the socket
// systemd-style on fd 3, but only after LATE_MS (3 s by default), as an
// app that loads a lot before it listens would, and drains on SIGTERM.
// recluster's default readiness must wait until it really accepts.
'use strict';

const net = require('node:net');
const express = require('express');

const app = express();
app.all('/', (req, res) => {
  res.set('X-Worker-Pid', String(process.pid));
  res.set('X-Worker-Id', process.env.WORKER_ID || '');
  res.set('Connection', 'close');
  res.send('hello from express\n');
});

const late = Number(process.env.LATE_MS || 3000);
const exitAfter = Number(process.env.EXIT_AFTER_MS || 0);
if (exitAfter > 0) setTimeout(() => process.exit(1), exitAfter);

setTimeout(() => {
  const server = app.listen({ fd: 3 });
  process.on('SIGTERM', () => {
    // http.Server's close() (Node 19+) also destroys every connection
    // without a request in flight, and a connection accepted a moment ago
    // whose request has not been read yet is one of them: its client
    // would get a reset. net.Server's close() only stops accepting; every
    // response here says Connection: close, so the connections end by
    // themselves once answered. A client that never sends is cut after 5 s.
    net.Server.prototype.close.call(server, () => process.exit(0));
    setTimeout(() => server.closeAllConnections(), 5000).unref();
  });
}, late);
