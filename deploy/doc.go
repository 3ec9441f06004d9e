// Package deploy holds no code: it is the directory of deployment recipes
// (systemd units, a Dockerfile, Kubernetes manifests) explained in
// docs/operations.md. Its test checks them: the units with
// systemd-analyze verify when it is installed, the static build the
// Dockerfile makes, the probes and timings of the Kubernetes manifest, and
// that every recluster flag the recipes use is one the CLI knows. With
// RECLUSTER_PLATFORM_TESTS=1 it also runs the units under a real systemd
// as PID 1 and builds and runs the Dockerfile under a real Docker daemon.
package deploy
