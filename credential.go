package recluster

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// resolveCredential turns Options.User and Options.Group into the ids the
// workers run with; nil when neither is set.
func resolveCredential(userName, groupName string) (*syscall.Credential, error) {
	if userName == "" && groupName == "" {
		return nil, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("recluster: running workers as user %q group %q needs the master to run as root (it binds the sockets, then only the workers drop privileges); start it as root, or leave out User and Group", userName, groupName)
	}
	cred := &syscall.Credential{Groups: []uint32{}} // no supplementary groups of root's
	if userName != "" {
		u, err := lookupUser(userName)
		if err != nil {
			return nil, fmt.Errorf("recluster: user %q: %v; give an existing user name or numeric uid", userName, err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred.Uid, cred.Gid = uint32(uid), uint32(gid)
	}
	if groupName != "" {
		g, err := lookupGroup(groupName)
		if err != nil {
			return nil, fmt.Errorf("recluster: group %q: %v; give an existing group name or numeric gid", groupName, err)
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		cred.Gid = uint32(gid)
	}
	return cred, nil
}

func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
		// A numeric uid need not have a passwd entry (containers).
		return &user.User{Uid: name, Gid: name, Username: name}, nil
	}
	return user.Lookup(name)
}

func lookupGroup(name string) (*user.Group, error) {
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		return &user.Group{Gid: name, Name: name}, nil
	}
	return user.LookupGroup(name)
}
