package recluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/recluster-go/recluster/internal/buildinfo"
	"golang.org/x/sys/unix"
)

// The state an upgrade in place hands from the old master to the new one
// (upgrade.go): everything the supervisor knows, the descriptors it holds
// by number (they survive the exec), and the embedding program's own
// descriptors and values. It travels in a memfd as one header line,
// "recluster-upgrade-state N", and a JSON object. A binary reads only the
// format versions it knows, and the pre-flight check asks the new binary
// about the version before anything is frozen, so an upgrade to a binary
// that cannot read the state is refused while the old master still runs.

// stateFormat is the version of the format this binary writes and reads.
const stateFormat = 1

const stateMagic = "recluster-upgrade-state"

// Environment of the new binary: envUpgradeState names the memfd with the
// state; envUpgradeCheck asks for the pre-flight check of a format version.
const (
	envUpgradeState = "RECLUSTER_UPGRADE_STATE_FD"
	envUpgradeCheck = "RECLUSTER_UPGRADE_CHECK"
)

// upgradeState is the cluster as it was when the old master froze it.
// Times are carried as offsets from the moment it was taken (Taken on the
// system's monotonic clock, which an exec does not reset), so deadlines
// and ages come out right whatever the wall clock does meanwhile.
type upgradeState struct {
	Binary    string    `json:"binary"` // the path the old master was started from
	Version   string    `json:"version"`
	Taken     int64     `json:"taken_monotonic_ns"`
	TakenWall time.Time `json:"taken"`
	Upgrades  int       `json:"upgrades"` // counting this one

	Slots    int                   `json:"slots"`
	Gen      int                   `json:"generation"`
	LastGen  int                   `json:"last_generation"`
	Restarts map[int]int           `json:"restarts,omitempty"`
	Failures map[int]int           `json:"failures,omitempty"`
	Reloads  map[ReloadOutcome]int `json:"reloads,omitempty"`
	Respawns map[int]time.Duration `json:"respawns,omitempty"` // slot -> time left until its respawn
	Pacer    statePacer            `json:"pacer"`

	AcceptFallbackLogged bool `json:"accept_fallback_logged,omitempty"`

	RuntimeDir string            `json:"runtime_dir,omitempty"` // holds the workers' notify sockets
	NotifySeq  int64             `json:"notify_seq,omitempty"`
	Sockets    []stateSocket     `json:"sockets"`
	Passed     []string          `json:"passed,omitempty"` // keys of the passed sockets, in LISTEN_FDS order
	Unlinks    []string          `json:"unlinks,omitempty"`
	Bound      map[string]string `json:"bound,omitempty"`
	Workers    []stateWorker     `json:"workers"`

	// Windows are the probation windows of generations (tracks.window).
	Windows map[int]time.Duration `json:"windows,omitempty"`
	// Handoffs and HandoffFallbacks are the handoff counters.
	Handoffs         map[string]int `json:"handoffs,omitempty"`
	HandoffFallbacks map[string]int `json:"handoff_fallbacks,omitempty"`
	// Output is the output relay's state, when the master relays the
	// workers' output; their pipes are in Workers.
	Output *stateRelay `json:"output,omitempty"`
	// DirectExec is the program file whose workers said they need no
	// LISTEN_PID (supervisor.directExec), so that the new master goes on
	// starting them without the exec trampoline. An older binary ignores
	// the field and only falls back to the trampoline.
	DirectExec *stateFile `json:"direct_exec,omitempty"`

	// Files and Data belong to the program that embeds the cluster
	// (UpgradeOptions).
	Files map[string]int    `json:"files,omitempty"`
	Data  map[string]string `json:"data,omitempty"`
}

type statePacer struct {
	Gap          time.Duration  `json:"gap"`
	LastSpawnIn  time.Duration  `json:"last_spawn_in"`            // may be negative: in the past
	LastCrashAgo *time.Duration `json:"last_crash_ago,omitempty"` // nil: never
}

type stateSocket struct {
	Key     string `json:"key"`
	Name    string `json:"name"`
	Network string `json:"network"`
	Address string `json:"address"`
	FD      int    `json:"fd"`
	Adopted bool   `json:"adopted,omitempty"`
	Blocked bool   `json:"blocked,omitempty"`
}

type stateWorker struct {
	Slot        int            `json:"slot"`
	PID         int            `json:"pid"`
	Gen         int            `json:"generation"`
	State       WorkerState    `json:"state"`
	Age         time.Duration  `json:"age"`
	ReadyAgo    *time.Duration `json:"ready_ago,omitempty"` // nil: never ready
	BeatAgo     time.Duration  `json:"beat_ago"`
	Retiring    bool           `json:"retiring,omitempty"`
	RetireAsked bool           `json:"retire_asked,omitempty"`
	Killed      bool           `json:"killed,omitempty"`
	Listening   bool           `json:"listening,omitempty"`
	MaxAge      time.Duration  `json:"max_age,omitempty"`
	Status      string         `json:"status,omitempty"`
	// Time left on its timers; nil: no such timer.
	ReadyIn  *time.Duration `json:"ready_in,omitempty"`
	KillIn   *time.Duration `json:"kill_in,omitempty"`
	SettleIn *time.Duration `json:"settle_in,omitempty"`
	// Channel is the master's end of its channel; Pending the start of a
	// line read from it whose end had not arrived.
	Channel int    `json:"channel_fd"`
	Pending []byte `json:"pending,omitempty"`
	// PendingFDs came with Pending and wait for its line (a handoff).
	PendingFDs []int  `json:"pending_fds,omitempty"`
	Notify     int    `json:"notify_fd"` // -1: none
	NotifyPath string `json:"notify_path,omitempty"`
	// UptimeIn is the time left until its slot's crash loop clears.
	UptimeIn *time.Duration `json:"uptime_in,omitempty"`
	// HandoffKeys are the sockets on which it takes handed connections.
	HandoffKeys []string `json:"handoff_keys,omitempty"`
	// Outputs are the pipes of its stdout and stderr that the master
	// relays.
	Outputs []stateOutput `json:"outputs,omitempty"`
	// File is the program file it was started from, and Direct whether
	// it was started without the exec trampoline: a declaration it makes
	// after the upgrade, and its failure before it is ready, count as
	// they would have in the old master.
	File   *stateFile `json:"program_file,omitempty"`
	Direct bool       `json:"direct,omitempty"`
}

// stateFile is a programFile (system.go) in the state.
type stateFile struct {
	Dev       uint64 `json:"dev"`
	Ino       uint64 `json:"ino"`
	Size      int64  `json:"size"`
	MtimeNano int64  `json:"mtime_ns"`
	CtimeNano int64  `json:"ctime_ns"`
	Args      string `json:"args,omitempty"`
}

// stateFileOf returns f for the state; nil when it is unknown.
func stateFileOf(f programFile) *stateFile {
	if f == (programFile{}) {
		return nil
	}
	return &stateFile{Dev: f.dev, Ino: f.ino, Size: f.size, MtimeNano: f.mtimeNano, CtimeNano: f.ctimeNano, Args: f.args}
}

// programFile returns the file f stands for; the unknown one for nil.
func (f *stateFile) programFile() programFile {
	if f == nil {
		return programFile{}
	}
	return programFile{fileID: fileID{dev: f.Dev, ino: f.Ino, size: f.Size, mtimeNano: f.MtimeNano, ctimeNano: f.CtimeNano}, args: f.Args}
}

// stateOutput is the master's end of a worker's output pipe; Held is the
// start of a line read from it whose end had not arrived.
type stateOutput struct {
	Stream string `json:"stream"`
	FD     int    `json:"fd"`
	Held   []byte `json:"held,omitempty"`
}

// stateRelay is what the output relay holds: the recent lines (for
// recluster logs), the lines its sink had not taken yet, and its counts.
type stateRelay struct {
	History []OutputLine `json:"history,omitempty"`
	Queued  []OutputLine `json:"queued,omitempty"`
	Missed  int          `json:"missed,omitempty"` // dropped among Queued, not yet reported
	Dropped int64        `json:"dropped,omitempty"`
}

// encodeState writes st in format stateFormat.
func encodeState(w io.Writer, st *upgradeState) error {
	if _, err := fmt.Fprintf(w, "%s %d\n", stateMagic, stateFormat); err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(st)
}

// errNotState: what was read is not an upgrade state at all.
var errNotState = fmt.Errorf("recluster: not an upgrade state (no %q header)", stateMagic)

// readStateFormat reads the header line and returns the format version.
func readStateFormat(br *bufio.Reader) (int, error) {
	line, err := br.ReadString('\n')
	if err != nil && line == "" {
		return 0, errNotState
	}
	word, num, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok || word != stateMagic {
		return 0, errNotState
	}
	v, err := strconv.Atoi(num)
	if err != nil {
		return 0, errNotState
	}
	return v, nil
}

// checkStateFormat is the pre-flight answer: can this binary read v?
func checkStateFormat(v int) error {
	if v != stateFormat {
		return fmt.Errorf("recluster: cannot take over: the running master hands over its state in format version %d, and this binary (%s) reads only version %d; upgrade through a release that reads both, or restart the cluster", v, buildinfo.Read(), stateFormat)
	}
	return nil
}

// decodeState reads a state written by encodeState.
func decodeState(r io.Reader) (*upgradeState, error) {
	br := bufio.NewReader(r)
	v, err := readStateFormat(br)
	if err != nil {
		return nil, err
	}
	if err := checkStateFormat(v); err != nil {
		return nil, err
	}
	var st upgradeState
	dec := json.NewDecoder(br)
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("recluster: the upgrade state is damaged: %w", err)
	}
	return &st, nil
}

// upgradeCheck answers the pre-flight check when the binary was started
// for one (envUpgradeCheck holds the format version): it exits 0 when it
// can read that format, and 1 with the reason on stderr.
func upgradeCheck() {
	want, ok := os.LookupEnv(envUpgradeCheck)
	if !ok {
		return
	}
	v, err := strconv.Atoi(want)
	if err != nil {
		fmt.Fprintf(os.Stderr, "recluster: the upgrade check asks for format %q, which is not a number\n", want)
		os.Exit(1)
	}
	if err := checkStateFormat(v); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("recluster %s reads upgrade state format %d\n", buildinfo.Read(), v)
	os.Exit(0)
}

// The pre-flight check and the state of an upgrade are taken before any
// other package code runs: a check must exit before the program starts
// doing anything, and inherited descriptors must be close-on-exec again
// before anything forks.
func init() {
	upgradeCheck()
	takeInheritedState()
}

// inherited is the state this process was given by the master it
// replaced, taken by the first Cluster to Run.
var inherited *upgradeState

// inheritedErr is why the state given to this process could not be read.
var inheritedErr error

// takeInheritedState reads the state an upgrading master left in
// envUpgradeState, at init: before anything could fork and leak the
// descriptors it names, which it marks close-on-exec again.
func takeInheritedState() {
	v, ok := os.LookupEnv(envUpgradeState)
	if !ok {
		return
	}
	os.Unsetenv(envUpgradeState)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		inheritedErr = fmt.Errorf("recluster: %s=%q is not a descriptor", envUpgradeState, v)
		return
	}
	f := os.NewFile(uintptr(fd), "recluster-upgrade-state")
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		inheritedErr = fmt.Errorf("recluster: reading the upgrade state: %w", err)
		return
	}
	st, err := decodeState(bytes.NewReader(data))
	if err != nil {
		inheritedErr = err
		return
	}
	for _, fd := range st.descriptors() {
		unix.CloseOnExec(fd)
	}
	inherited = st
	holdSignals()
}

// heldSignals catches, in a master started by an upgrade, the signals an
// operator or systemd sends (a reload, a stop) from init until the cluster
// has adopted its workers: without it, a SIGHUP or SIGTERM that comes
// before the program has called signal.Notify would end the process and,
// with it, every worker. releaseHeldSignals sends them again once the
// program's own handlers are in place.
var heldSignals chan os.Signal

var holdable = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU}

func holdSignals() {
	heldSignals = make(chan os.Signal, 32)
	signal.Notify(heldSignals, holdable...)
}

func releaseHeldSignals() {
	if heldSignals == nil {
		return
	}
	signal.Stop(heldSignals)
	for {
		select {
		case sig := <-heldSignals:
			syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		default:
			heldSignals = nil
			return
		}
	}
}

// descriptors lists every descriptor the state names.
func (st *upgradeState) descriptors() []int {
	var fds []int
	for _, s := range st.Sockets {
		fds = append(fds, s.FD)
	}
	for _, w := range st.Workers {
		fds = append(fds, w.Channel)
		fds = append(fds, w.PendingFDs...)
		for _, o := range w.Outputs {
			fds = append(fds, o.FD)
		}
		if w.Notify >= 0 {
			fds = append(fds, w.Notify)
		}
	}
	for _, fd := range st.Files {
		fds = append(fds, fd)
	}
	return fds
}
