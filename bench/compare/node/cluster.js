// The doxout/recluster master of the compare benchmark, as in recluster's
// README: SIGUSR2 reloads. It prints "ready" once the first workers listen,
// "reloaded" when a reload has completed, and stops on SIGTERM/SIGINT.
// WORKERS sets the number of workers; PORT and HOST reach server.js.
'use strict';
const path = require('path');
const recluster = require('recluster');

const workers = Number(process.env.WORKERS || 2);
const cluster = recluster(path.join(__dirname, 'server.js'), {
  workers,
  timeout: 1,
  readyWhen: 'listening',
  log: { respawns: false },
});
cluster.run();

let first = true;
cluster.on('ready', () => {
  if (first && Object.values(cluster.activeWorkers()).filter(Boolean).length === workers) {
    first = false;
    console.log('ready');
  }
});

process.on('SIGUSR2', () => {
  cluster.reload(() => console.log('reloaded'));
});

function stop() {
  cluster.terminate(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
console.log('master', process.pid);
