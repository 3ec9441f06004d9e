package recluster

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleState() *upgradeState {
	ready, ago := 1500*time.Millisecond, -2*time.Second
	return &upgradeState{
		Binary: "/usr/local/bin/recluster", Version: "v1.2.3", Taken: 123456789, TakenWall: time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC),
		Upgrades: 3, Slots: 2, Gen: 4, LastGen: 5,
		Restarts: map[int]int{0: 1}, Failures: map[int]int{1: 2}, Reloads: map[ReloadOutcome]int{ReloadCommitted: 3},
		Respawns: map[int]time.Duration{1: 250 * time.Millisecond},
		Pacer:    statePacer{Gap: time.Second, LastSpawnIn: -time.Second, LastCrashAgo: &ago},
		Sockets:  []stateSocket{{Key: "tcp 127.0.0.1:0 -1", Name: "http", Network: "tcp", Address: "127.0.0.1:0", FD: 7, Blocked: true}},
		Passed:   []string{"tcp 127.0.0.1:0 -1"},
		Bound:    map[string]string{"tcp :0": "[::]:4000"},
		Workers: []stateWorker{
			{Slot: 0, PID: 100, Gen: 4, State: WorkerActive, Age: time.Minute, ReadyAgo: &ready, Channel: 9, Pending: []byte(`{"cmd":"sta`), Notify: 10, NotifyPath: "/tmp/x/notify-1.sock",
				File: stateFileOf(sampleFile), Direct: true},
			{Slot: 1, PID: 101, Gen: 3, State: WorkerDraining, KillIn: &ready, Channel: 11, Notify: -1},
		},
		Files:      map[string]int{"control": 3},
		Data:       map[string]string{"k": "v"},
		DirectExec: stateFileOf(sampleFile),
	}
}

var sampleFile = programFile{fileID: fileID{dev: 8, ino: 100, size: 4 << 20, mtimeNano: 1, ctimeNano: 2}, args: "0:8:200:10:1:1;"}

// The declaration a master carries over to its upgrade is the file it
// vouched for, and an unknown one stays unknown.
func TestStateFileRoundTrip(t *testing.T) {
	if got := stateFileOf(sampleFile).programFile(); got != sampleFile {
		t.Fatalf("round trip of %+v gave %+v", sampleFile, got)
	}
	if f := stateFileOf(programFile{}); f != nil || f.programFile() != (programFile{}) {
		t.Fatalf("the unknown file went into the state as %+v", f)
	}
}

func TestStateRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := encodeState(&buf, sampleState()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "recluster-upgrade-state 1\n") {
		t.Fatalf("no version header: %q", buf.String()[:40])
	}
	got, err := decodeState(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := sampleState(); !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip changed the state:\n got %+v\nwant %+v", got, want)
	}
	if fds := got.descriptors(); !reflect.DeepEqual(fds, []int{7, 9, 10, 11, 3}) {
		t.Fatalf("descriptors %v", fds)
	}
}

// A state in a format this binary does not know is refused, and the
// refusal names both versions and what to do.
func TestStateUnknownVersion(t *testing.T) {
	_, err := decodeState(strings.NewReader("recluster-upgrade-state 2\n{}\n"))
	if err == nil || !strings.Contains(err.Error(), "format version 2") || !strings.Contains(err.Error(), "reads only version 1") {
		t.Fatalf("unknown version: %v", err)
	}
	if err := checkStateFormat(stateFormat); err != nil {
		t.Fatalf("own format refused: %v", err)
	}
	if err := checkStateFormat(stateFormat + 1); err == nil {
		t.Fatal("a newer format was accepted")
	}
}

func TestStateNotAState(t *testing.T) {
	for _, in := range []string{"", "hello\n", "recluster-upgrade-state x\n", "recluster-upgrade-state\n"} {
		if _, err := decodeState(strings.NewReader(in)); !errors.Is(err, errNotState) {
			t.Errorf("%q: %v, want errNotState", in, err)
		}
	}
	if _, err := decodeState(strings.NewReader("recluster-upgrade-state 1\n{\"slots\": \"two\"}\n")); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged state: %v", err)
	}
	v, err := readStateFormat(bufio.NewReader(strings.NewReader("recluster-upgrade-state 7\n")))
	if err != nil || v != 7 {
		t.Fatalf("readStateFormat = %d, %v", v, err)
	}
}

func TestTimeLeft(t *testing.T) {
	now := time.Now()
	if d := timeLeft(&dueTimer{stoppedTimer{}, now.Add(time.Second)}, now); d == nil || *d != time.Second {
		t.Fatalf("timeLeft = %v", d)
	}
	if d := timeLeft(nil, now); d != nil {
		t.Fatalf("timeLeft(nil) = %v", *d)
	}
}
