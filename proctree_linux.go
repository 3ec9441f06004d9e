package recluster

import (
	"os"
	"strconv"
	"strings"
)

// processTree returns pid and every process descended from it. Servers
// that fork (gunicorn's arbiter, `npm start`, a shell) do their serving
// in children, so what a worker is and holds is its whole tree.
func processTree(pid int) []int { return readProcTable().tree(pid) }

// procTable is one reading of every process's parent: children by parent
// pid. The kernel has no cheap list of a process's children unless it was
// built with CONFIG_PROC_CHILDREN, so the tree is found from every
// process's parent in /proc/*/stat; one table serves every worker of a
// status snapshot.
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
