// The Node.js equivalent of examples/hello's handler for the compare
// benchmark: a tiny response with an X-Worker-Id header. It runs under
// doxout/recluster (cluster.js; WORKER_ID) and under PM2 cluster mode
// (NODE_APP_INSTANCE). PORT and HOST choose the address.
'use strict';
const http = require('http');

const id = process.env.WORKER_ID ?? process.env.NODE_APP_INSTANCE ?? '0';
const port = Number(process.env.PORT || 8080);
const host = process.env.HOST || '127.0.0.1';

const server = http.createServer((req, res) => {
  const body = `hello from worker ${id} (pid ${process.pid}, generation 0)\n`;
  res.writeHead(200, {
    'X-Worker-Id': id,
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
});
server.listen(port, host);

// PM2's documented graceful shutdown: on SIGINT stop accepting, let requests
// in flight finish, then exit. (recluster disconnects the cluster worker
// instead, which closes the server the same way.)
process.on('SIGINT', () => {
  server.close(() => process.exit(0));
});
