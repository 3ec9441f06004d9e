package metrics

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/recluster-go/recluster/internal/control"
)

const index = `recluster master (read-only)
  /metrics  Prometheus metrics
  /healthz  200 while the master answers
  /readyz   200 while every slot has a ready worker
  /status   the JSON of recluster status --json
`

// Handler returns the read-only HTTP handler: GET (and HEAD) /metrics,
// /healthz, /readyz, /status and an index at /. Any other method on those
// paths gets 405 Method Not Allowed; other paths get 404.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", m.healthz)
	mux.HandleFunc("GET /readyz", m.readyz)
	mux.HandleFunc("GET /status", m.status)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, index)
	})
	return mux
}

// plain writes a short uncached plain-text answer.
func plain(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprint(w, text)
}

// healthz is the liveness probe: the master is alive when its supervisor
// loop answers a status request within the timeout.
func (m *Metrics) healthz(w http.ResponseWriter, r *http.Request) {
	if _, err := m.snapshot(r.Context()); err != nil {
		plain(w, http.StatusServiceUnavailable, "unhealthy: "+err.Error()+"\n")
		return
	}
	plain(w, http.StatusOK, "ok\n")
}

// readyz is the readiness probe: every slot 0..Slots-1 has an active worker
// and the cluster is running (not terminating).
func (m *Metrics) readyz(w http.ResponseWriter, r *http.Request) {
	p, err := m.snapshot(r.Context())
	if err != nil {
		plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
		return
	}
	missing, err := unready(p.st)
	if err != nil {
		plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
		return
	}
	if len(missing) > 0 {
		msg := "not ready: no ready worker in slot " + joinInts(missing)
		if len(p.st.FailingSlots) > 0 {
			msg += "; failing (crash loop): slot " + joinInts(p.st.FailingSlots)
		}
		plain(w, http.StatusServiceUnavailable, msg+"\n")
		return
	}
	plain(w, http.StatusOK, "ready\n")
}

// status serves what `recluster status --json` prints, without the CPU
// sampling (cpu_percent stays 0; use recluster_worker_cpu_seconds_total).
func (m *Metrics) status(w http.ResponseWriter, r *http.Request) {
	p, err := m.snapshot(r.Context())
	if err != nil {
		plain(w, http.StatusServiceUnavailable, "no status: "+err.Error()+"\n")
		return
	}
	out := control.Status{
		Status:    p.st,
		MasterPID: os.Getpid(),
		Program:   m.opts.Program,
		Addrs:     []string{},
		Workers:   []control.WorkerStatus{},
	}
	for _, a := range p.addrs {
		out.Addrs = append(out.Addrs, a.Network()+":"+a.String())
	}
	for _, ws := range p.st.Workers {
		cw := control.WorkerStatus{WorkerStatus: ws}
		out.Workers = append(out.Workers, cw)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}
