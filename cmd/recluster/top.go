package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/term"

	"github.com/recluster-go/recluster/internal/control"
)

const topUsage = `Usage: recluster top [--interval DUR] [--count N] [--control PATH]

Show the cluster live: one row per worker (slot, pid, generation, state,
uptime, restarts, memory, CPU, status text), the reload in progress and
how far it is, and the recent changes. Keys:

  r        reload (the view shows its progress)
  + / -    add or remove a worker
  0 to 9   restart the worker of that slot
  q        quit

When stdout is not a terminal, top prints the status table every interval
instead, --count times (default: until interrupted).

Flags:
  --interval DUR  how often to refresh (default 1s, at least 100ms)
  --count N       with no terminal: print the table N times, then exit
` + controlFlagHelp

func topCommand(args []string, stdout io.Writer) error {
	interval, count := time.Second, 0
	path, rest, err := clientFlags("top", topUsage, args, func(fs *flag.FlagSet) {
		fs.Var(durationValue{&interval, nil, atLeast(100*time.Millisecond, "want at least 100ms")}, "interval", "")
		fs.Var(intValue{&count, 0}, "count", "")
	})
	if err != nil {
		return err
	}
	if err := noArgs("top", rest); err != nil {
		return err
	}
	if f, ok := stdout.(*os.File); ok && term.IsTerminal(f.Fd()) && term.IsTerminal(os.Stdin.Fd()) {
		return liveTop(path, interval)
	}
	return plainTop(path, interval, count, stdout)
}

// plainTop prints the status table periodically, for pipes and logs.
func plainTop(path string, interval time.Duration, count int, stdout io.Writer) error {
	for i := 0; count == 0 || i < count; i++ {
		if i > 0 {
			time.Sleep(interval)
			fmt.Fprintln(stdout)
		}
		st, err := fetchStatus(path, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", time.Now().Format("15:04:05"))
		printStatus(stdout, st)
		if line := reloadProgress(st); line != "" {
			fmt.Fprintln(stdout, line)
		}
	}
	return nil
}

func fetchStatus(path string, sample bool) (*control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := control.Do(ctx, path, control.Request{Cmd: control.CmdStatus, Sample: sample}, nil)
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, errors.New("the master's answer has no status")
	}
	return resp.Status, nil
}

// reloadProgress describes the reload in progress, or is empty.
func reloadProgress(st *control.Status) string {
	if st.Reloading == 0 {
		return ""
	}
	ready, starting := 0, 0
	for _, w := range st.Workers {
		if w.Generation != st.Reloading {
			continue
		}
		if w.Ready {
			ready++
		} else {
			starting++
		}
	}
	return fmt.Sprintf("reload to generation %d in progress: %d of %d new workers ready, %d starting; generation %d serves meanwhile",
		st.Reloading, ready, st.Slots, starting, st.Generation)
}

// liveTop runs the terminal view until q.
func liveTop(path string, interval time.Duration) error {
	m := &topModel{path: path, interval: interval}
	_, err := tea.NewProgram(m, tea.WithAltScreen()).Run()
	if err == nil {
		err = m.fatal
	}
	return err
}

type (
	topStatusMsg struct {
		st  *control.Status
		err error
		at  time.Time
	}
	topTickMsg   struct{}
	topActionMsg string
)

// maxTopEvents is how many recent changes the view keeps.
const maxTopEvents = 8

// topModel is the state of the live view (bubbletea's Elm-style model).
type topModel struct {
	path     string
	interval time.Duration
	st       *control.Status
	at       time.Time
	cpuAt    map[int]float64 // pid -> CPU seconds at the previous status
	events   []string
	message  string
	fetchErr error
	fatal    error
}

func (m *topModel) Init() tea.Cmd { return m.fetch() }

func (m *topModel) fetch() tea.Cmd {
	return func() tea.Msg {
		st, err := fetchStatus(m.path, false)
		return topStatusMsg{st, err, time.Now()}
	}
}

func (m *topModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case topStatusMsg:
		if msg.err != nil {
			m.fetchErr = msg.err
		} else {
			m.fetchErr = nil
			m.observe(msg.st, msg.at)
		}
		// One request at a time: the next starts an interval after this.
		return m, tea.Tick(m.interval, func(time.Time) tea.Msg { return topTickMsg{} })
	case topTickMsg:
		return m, m.fetch()
	case topActionMsg:
		m.message = string(msg)
		return m, nil
	case tea.KeyMsg:
		return m, m.key(msg.String())
	}
	return m, nil
}

func (m *topModel) key(k string) tea.Cmd {
	act := func(what string, req control.Request) tea.Cmd {
		m.message = what + "..."
		return func() tea.Msg {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			resp, err := control.Do(ctx, m.path, req, nil)
			if err != nil {
				return topActionMsg(what + ": " + strings.TrimPrefix(err.Error(), "recluster: "))
			}
			return topActionMsg(resp.Message)
		}
	}
	switch {
	case k == "q" || k == "ctrl+c" || k == "esc":
		return tea.Quit
	case k == "r":
		return act("reload", control.Request{Cmd: control.CmdReload})
	case k == "+" || k == "-":
		delta := 1
		if k == "-" {
			delta = -1
		}
		return act("scale "+k+"1", control.Request{Cmd: control.CmdScale, Delta: &delta})
	case len(k) == 1 && k[0] >= '0' && k[0] <= '9':
		slot := int(k[0] - '0')
		return act("restart of slot "+k, control.Request{Cmd: control.CmdRestart, Slots: []int{slot}})
	}
	return nil
}

// observe takes a new status: CPU use since the last one, and what
// changed, as events.
func (m *topModel) observe(st *control.Status, at time.Time) {
	cpuAt := map[int]float64{}
	for i := range st.Workers {
		w := &st.Workers[i]
		cpuAt[w.PID] = w.CPUSeconds
		if before, ok := m.cpuAt[w.PID]; ok && at.After(m.at) {
			w.CPUPercent = (w.CPUSeconds - before) / at.Sub(m.at).Seconds() * 100
		}
	}
	if m.st != nil {
		stamp := at.Format("15:04:05")
		old := map[int]control.WorkerStatus{}
		for _, w := range m.st.Workers {
			old[w.PID] = w
		}
		for _, w := range st.Workers {
			was, ok := old[w.PID]
			switch {
			case !ok:
				m.event(fmt.Sprintf("%s  slot %d: pid %d (generation %d) %s", stamp, w.Slot, w.PID, w.Generation, w.State))
			case was.State != w.State:
				m.event(fmt.Sprintf("%s  slot %d: pid %d %s -> %s", stamp, w.Slot, w.PID, was.State, w.State))
			}
			delete(old, w.PID)
		}
		for _, w := range m.st.Workers {
			if _, gone := old[w.PID]; gone {
				m.event(fmt.Sprintf("%s  slot %d: pid %d exited", stamp, w.Slot, w.PID))
			}
		}
		if st.Reloading != 0 && st.Reloading != m.st.Reloading {
			m.event(fmt.Sprintf("%s  reload to generation %d started", stamp, st.Reloading))
		}
		if st.Generation != m.st.Generation {
			m.event(fmt.Sprintf("%s  generation %d is active", stamp, st.Generation))
		} else if m.st.Reloading != 0 && st.Reloading != m.st.Reloading {
			m.event(fmt.Sprintf("%s  reload to generation %d aborted", stamp, m.st.Reloading))
		}
	}
	m.st, m.at, m.cpuAt = st, at, cpuAt
}

func (m *topModel) event(e string) {
	m.events = append(m.events, e)
	if len(m.events) > maxTopEvents {
		m.events = m.events[len(m.events)-maxTopEvents:]
	}
}

func (m *topModel) View() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "recluster top  %s  (every %v)\n\n", time.Now().Format("15:04:05"), m.interval)
	switch {
	case m.st == nil && m.fetchErr != nil:
		fmt.Fprintf(&b, "%v\n", m.fetchErr)
	case m.st == nil:
		b.WriteString("asking the master...\n")
	default:
		printStatus(&b, m.st)
		b.WriteString("\n")
		if line := reloadProgress(m.st); line != "" {
			b.WriteString(line + "\n")
		} else {
			b.WriteString("no reload in progress\n")
		}
		if m.fetchErr != nil {
			fmt.Fprintf(&b, "last refresh failed: %v\n", m.fetchErr)
		}
	}
	b.WriteString("\nrecent changes:\n")
	if len(m.events) == 0 {
		b.WriteString("  (none yet)\n")
	}
	for _, e := range m.events {
		b.WriteString("  " + e + "\n")
	}
	b.WriteString("\n")
	if m.message != "" {
		b.WriteString(m.message + "\n")
	}
	b.WriteString("r reload   + add a worker   - remove one   0-9 restart that slot   q quit\n")
	return b.String()
}
