package recluster

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Servers that fork (gunicorn's arbiter, `npm start`, a shell) do their
// serving in children, so what a worker is and holds is its whole tree.

// treeReader returns a function that finds process trees. Where the
// kernel lists each thread's children (/proc/PID/task/TID/children,
// CONFIG_PROC_CHILDREN, which Debian's and most distributions' kernels
// have), a tree costs a read per thread of its processes; elsewhere the
// parents of every process on the host are read once (/proc/*/stat) and
// the returned function uses that table, so that a status snapshot of
// many workers reads /proc once.
func treeReader() func(pid int) []int {
	if haveChildrenFiles() {
		return childrenTree
	}
	return readProcTable().tree
}

var haveChildrenFiles = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/thread-self/children")
	return err == nil
})

// childrenTree walks the tree below pid through the children files.
func childrenTree(pid int) []int {
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(tree[i]) + "/task/*/children")
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			for _, f := range strings.Fields(string(b)) {
				if child, err := strconv.Atoi(f); err == nil {
					tree = append(tree, child)
				}
			}
		}
	}
	return tree
}

// procTable is one reading of every process's parent: children by parent
// pid.
type procTable map[int][]int

func readProcTable() procTable {
	children := procTable{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return children
	}
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(child); ok {
			children[ppid] = append(children[ppid], child)
		}
	}
	return children
}

// tree returns pid and its descendants, pid first.
func (t procTable) tree(pid int) []int {
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, t[tree[i]]...)
	}
	return tree
}

// parentOf reads a process's parent pid (field 4 of /proc/PID/stat).
func parentOf(pid int) (int, bool) {
	fields, ok := statFields(pid)
	if !ok || len(fields) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(fields[1])
	return ppid, err == nil
}

// statFields returns the fields of /proc/PID/stat after the command name,
// which may hold spaces and parentheses: fields[0] is the state (field 3
// of proc(5)).
func statFields(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:]), true
}

// procTree is what the accept watcher knows of the process trees: one
// reader shared by every worker it looks at, read again at most every
// acceptPollMax, so that many starting workers do not each scan /proc.
type procTree struct {
	tree  func(pid int) []int
	taken time.Time
}

// descendants returns the processes descended from pid, reading the trees
// again when what it holds is older than acceptPollMax at now.
func (t *procTree) descendants(pid int, now time.Time) []int {
	if t.tree == nil || now.Sub(t.taken) >= acceptPollMax {
		t.tree, t.taken = treeReader(), now
	}
	return t.tree(pid)[1:]
}
