package loadgen

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Result is the outcome of a Run. Durations are in nanoseconds in JSON.
type Result struct {
	// Addr, Method, Path, Mode and Clients echo the configuration.
	Addr    string `json:"addr"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	Mode    Mode   `json:"mode"`
	Clients int    `json:"clients"`

	// Start is when the load started.
	Start time.Time `json:"start"`
	// Elapsed is the time from Start until the last client finished.
	Elapsed time.Duration `json:"elapsed_ns"`
	// StopReason says which bound ended the run: StopDuration,
	// StopRequests, StopReloads or StopCanceled.
	StopReason string `json:"stop_reason"`

	// Requests is the number of requests with an outcome: Successes plus
	// Failures.Total(). Aborted requests are not included.
	Requests int64 `json:"requests"`
	// Successes counts complete 2xx responses.
	Successes int64 `json:"successes"`
	// Failures counts failed requests by kind.
	Failures FailureCounts `json:"failures"`
	// Examples holds up to Config.MaxExamples example errors per kind,
	// the earliest first.
	Examples map[Kind][]ErrorExample `json:"examples,omitempty"`
	// Aborted counts requests cut short because the context passed to Run
	// was canceled; they are neither successes nor failures.
	Aborted int64 `json:"aborted"`
	// Throughput is Successes per second of Elapsed.
	Throughput float64 `json:"throughput_rps"`

	// Latency summarizes the latency of successful requests, measured
	// from just before the request (including the dial when one was
	// needed) to the end of the response body.
	Latency LatencySummary `json:"latency"`

	// StatusCodes counts complete responses by status code.
	StatusCodes map[int]int64 `json:"status_codes"`
	// BodyBytes is the total size of the response bodies read.
	BodyBytes int64 `json:"body_bytes"`

	// Connections counts the TCP connections opened.
	Connections int64 `json:"connections"`
	// Reconnects counts, in ModeKeepAlive, the times a client had to
	// replace its connection because the server ended it after a complete
	// response ("Connection: close", or an idle connection found closed
	// before reuse). They are not failures.
	Reconnects int64 `json:"reconnects"`

	// Workers counts complete responses (any status) per distinct
	// X-Worker-Id value, ordered by id.
	Workers []WorkerCount `json:"workers"`
	// NoWorkerID counts complete responses without an X-Worker-Id header.
	NoWorkerID int64 `json:"no_worker_id"`
	// Balance is the largest count in Workers divided by the smallest
	// (1 means perfectly even); 0 when Workers is empty. Workers that
	// answered nothing are not seen and so not included.
	Balance float64 `json:"balance_max_min"`

	// Reloads lists the reloads run, in order.
	Reloads []ReloadResult `json:"reloads"`
}

// FailureCounts counts failed requests by Kind.
type FailureCounts struct {
	Refused int64 `json:"refused"` // KindRefused
	Reset   int64 `json:"reset"`   // KindReset
	EOF     int64 `json:"eof"`     // KindEOF
	Timeout int64 `json:"timeout"` // KindTimeout
	Status  int64 `json:"status"`  // KindStatus
	Other   int64 `json:"other"`   // KindOther
}

// field returns a pointer to the counter of kind k.
func (f *FailureCounts) field(k Kind) *int64 {
	switch k {
	case KindRefused:
		return &f.Refused
	case KindReset:
		return &f.Reset
	case KindEOF:
		return &f.EOF
	case KindTimeout:
		return &f.Timeout
	case KindStatus:
		return &f.Status
	default:
		return &f.Other
	}
}

// Get returns the count of kind k (an unknown kind reads Other).
func (f FailureCounts) Get(k Kind) int64 { return *f.field(k) }

// Total returns the number of failed requests of all kinds.
func (f FailureCounts) Total() int64 {
	return f.Refused + f.Reset + f.EOF + f.Timeout + f.Status + f.Other
}

// ErrorExample is one failed request kept as an example.
type ErrorExample struct {
	// At is when the failure was recorded, relative to Result.Start.
	At time.Duration `json:"at_ns"`
	// Error is the error message, or the status line for KindStatus.
	Error string `json:"error"`
	// Reused says whether the request was sent on a kept-alive
	// connection that had already carried a request.
	Reused bool `json:"reused"`
}

// LatencySummary summarizes a latency distribution. Percentiles come from
// a log-linear histogram and are within 0.4% of the exact values (rounded
// up); Min, Mean and Max are exact.
type LatencySummary struct {
	Count int64         `json:"count"`   // number of samples
	Min   time.Duration `json:"min_ns"`  // smallest sample
	Mean  time.Duration `json:"mean_ns"` // arithmetic mean
	P50   time.Duration `json:"p50_ns"`  // median
	P90   time.Duration `json:"p90_ns"`  // 90th percentile
	P99   time.Duration `json:"p99_ns"`  // 99th percentile
	P999  time.Duration `json:"p999_ns"` // 99.9th percentile
	Max   time.Duration `json:"max_ns"`  // largest sample
}

// WorkerCount is the number of responses from one worker.
type WorkerCount struct {
	// ID is the X-Worker-Id header value.
	ID string `json:"id"`
	// Responses counts complete responses with that id.
	Responses int64 `json:"responses"`
	// PIDs lists the distinct X-Worker-Pid values seen with that id (at
	// most 16), if the server sends them.
	PIDs []string `json:"pids,omitempty"`
}

// ReloadResult records one call of Config.Reload.
type ReloadResult struct {
	// Index is the 1-based number of the reload.
	Index int `json:"index"`
	// At is when the reload started, relative to Result.Start.
	At time.Duration `json:"at_ns"`
	// Duration is how long the Reload call took.
	Duration time.Duration `json:"duration_ns"`
	// Error is the error the call returned, empty on success.
	Error string `json:"error,omitempty"`
}

// ReloadErrors returns the number of reloads that returned an error.
func (r *Result) ReloadErrors() int {
	n := 0
	for _, rr := range r.Reloads {
		if rr.Error != "" {
			n++
		}
	}
	return n
}

// result merges the shards into a Result.
func (r *runner) result(elapsed time.Duration) *Result {
	cfg := r.cfg
	res := &Result{
		Addr:        cfg.Addr,
		Method:      cfg.Method,
		Path:        cfg.Path,
		Mode:        cfg.Mode,
		Clients:     cfg.Clients,
		Start:       r.start,
		Elapsed:     elapsed,
		StopReason:  r.stopReason,
		StatusCodes: make(map[int]int64),
		Workers:     []WorkerCount{},
		Reloads:     []ReloadResult{},
	}
	var hist histogram
	workers := make(map[string]*WorkerCount)
	var examples [len(Kinds)][]ErrorExample
	for _, s := range r.shards {
		s.mu.Lock()
		hist.merge(&s.hist)
		res.Successes += s.successes
		for i, n := range s.failures {
			*res.Failures.field(Kinds[i]) += n
			examples[i] = append(examples[i], s.examples[i]...)
		}
		res.Aborted += s.aborted
		res.Connections += s.conns
		res.Reconnects += s.reconnects
		res.BodyBytes += s.bodyBytes
		res.NoWorkerID += s.noWorkerID
		for code, n := range s.status {
			res.StatusCodes[code] += n
		}
		for id, w := range s.workers {
			wc := workers[id]
			if wc == nil {
				wc = &WorkerCount{ID: id}
				workers[id] = wc
			}
			wc.Responses += w.responses
			for _, pid := range w.pids {
				if len(wc.PIDs) < maxPIDsPerWorker && !slices.Contains(wc.PIDs, pid) {
					wc.PIDs = append(wc.PIDs, pid)
				}
			}
		}
		s.mu.Unlock()
	}
	res.Requests = res.Successes + res.Failures.Total()
	res.Latency = hist.summary()
	if elapsed > 0 {
		res.Throughput = float64(res.Successes) / elapsed.Seconds()
	}
	for i, ex := range examples {
		if len(ex) == 0 {
			continue
		}
		slices.SortStableFunc(ex, func(a, b ErrorExample) int { return cmp.Compare(a.At, b.At) })
		if res.Examples == nil {
			res.Examples = make(map[Kind][]ErrorExample)
		}
		res.Examples[Kinds[i]] = ex[:min(len(ex), cfg.MaxExamples)]
	}
	for _, wc := range workers {
		slices.Sort(wc.PIDs)
		res.Workers = append(res.Workers, *wc)
	}
	slices.SortFunc(res.Workers, func(a, b WorkerCount) int { return cmp.Compare(a.ID, b.ID) })
	if len(res.Workers) > 0 {
		lo, hi := res.Workers[0].Responses, res.Workers[0].Responses
		for _, w := range res.Workers {
			lo, hi = min(lo, w.Responses), max(hi, w.Responses)
		}
		res.Balance = float64(hi) / float64(lo)
	}
	r.reloadMu.Lock()
	res.Reloads = append(res.Reloads, r.reloads...)
	r.reloadMu.Unlock()
	return res
}

// String returns the Markdown summary of r (see Markdown).
func (r *Result) String() string { return r.Markdown() }

// Markdown returns a human-readable summary of r as Markdown: totals,
// failures by kind with examples, latency percentiles, responses per worker
// and reloads.
func (r *Result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## loadgen: %s %s%s, %s mode, %d clients\n\n", r.Method, r.Addr, r.Path, r.Mode, r.Clients)
	b.WriteString("| metric | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| elapsed | %s (stopped by %s) |\n", roundDur(r.Elapsed), r.StopReason)
	fmt.Fprintf(&b, "| requests | %d |\n", r.Requests)
	fmt.Fprintf(&b, "| successes | %d |\n", r.Successes)
	fmt.Fprintf(&b, "| failures | %d (%s) |\n", r.Failures.Total(), pct(r.Failures.Total(), r.Requests))
	if r.Aborted > 0 {
		fmt.Fprintf(&b, "| aborted | %d |\n", r.Aborted)
	}
	fmt.Fprintf(&b, "| throughput | %.1f req/s |\n", r.Throughput)
	fmt.Fprintf(&b, "| connections | %d opened, %d reconnects after server close |\n", r.Connections, r.Reconnects)
	if len(r.StatusCodes) > 0 {
		codes := make([]int, 0, len(r.StatusCodes))
		for c := range r.StatusCodes {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		parts := make([]string, len(codes))
		for i, c := range codes {
			parts[i] = fmt.Sprintf("%d: %d", c, r.StatusCodes[c])
		}
		fmt.Fprintf(&b, "| status codes | %s |\n", strings.Join(parts, ", "))
	}

	b.WriteString("\n### Failures\n\n| kind | count | examples |\n|---|---:|---|\n")
	for _, k := range Kinds {
		var ex []string
		for _, e := range r.Examples[k] {
			s := fmt.Sprintf("@%s %s", roundDur(e.At), e.Error)
			if e.Reused {
				s += " (reused conn)"
			}
			ex = append(ex, mdEscape(s))
		}
		fmt.Fprintf(&b, "| %s | %d | %s |\n", k, r.Failures.Get(k), strings.Join(ex, "<br>"))
	}

	l := r.Latency
	b.WriteString("\n### Latency of successful requests\n\n")
	b.WriteString("| count | min | mean | p50 | p90 | p99 | p99.9 | max |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", l.Count,
		roundDur(l.Min), roundDur(l.Mean), roundDur(l.P50), roundDur(l.P90),
		roundDur(l.P99), roundDur(l.P999), roundDur(l.Max))

	b.WriteString("\n### Responses per worker\n\n")
	if len(r.Workers) == 0 {
		fmt.Fprintf(&b, "No %s header seen.\n", HeaderWorkerID)
	} else {
		b.WriteString("| worker | responses | pids |\n|---|---:|---|\n")
		for _, w := range r.Workers {
			fmt.Fprintf(&b, "| %s | %d | %s |\n", mdEscape(w.ID), w.Responses, mdEscape(strings.Join(w.PIDs, " ")))
		}
		fmt.Fprintf(&b, "\nBalance (max/min): %.3f", r.Balance)
		if r.NoWorkerID > 0 {
			fmt.Fprintf(&b, "; %d responses without %s", r.NoWorkerID, HeaderWorkerID)
		}
		b.WriteString("\n")
	}

	if len(r.Reloads) > 0 {
		fmt.Fprintf(&b, "\n### Reloads (%d, %d failed)\n\n| # | at | duration | error |\n|---:|---:|---:|---|\n", len(r.Reloads), r.ReloadErrors())
		for _, rr := range r.Reloads {
			fmt.Fprintf(&b, "| %d | %s | %s | %s |\n", rr.Index, roundDur(rr.At), roundDur(rr.Duration), mdEscape(rr.Error))
		}
	}
	return b.String()
}

// roundDur rounds d for display.
func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Microsecond)
	default:
		return d
	}
}

// pct formats n/total as a percentage.
func pct(n, total int64) string {
	if total == 0 {
		return "0%"
	}
	return fmt.Sprintf("%.3g%%", 100*float64(n)/float64(total))
}

// mdEscape makes s safe inside a Markdown table cell.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\r", " ")
	return strings.ReplaceAll(s, "\n", " ")
}
