// Package deploy holds no code: it is the directory of deployment recipes
// (systemd units, a Dockerfile, Kubernetes manifests) explained in
// docs/operations.md. Its test checks them: the units with
// systemd-analyze verify when it is installed, the static build the
// Dockerfile makes, the probes and timings of the Kubernetes manifest, and
// that every recluster flag the recipes use is one the CLI knows.
package deploy
