// Package buildinfo says which build of recluster is running: the version
// set at link time (-ldflags "-X
// github.com/recluster-go/recluster/internal/buildinfo.Version=v1.2.3"),
// else the main module's version, plus the VCS revision that the go
// command records in the binary.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version, when set at link time, wins over the module version.
var Version string

// Info is what a build knows about itself.
type Info struct {
	Version  string // v1.2.3, a pseudo-version, or "(devel)"
	Revision string // the VCS commit, when the build recorded it
	Time     string // the commit's time (RFC 3339), when recorded
	Modified bool   // the working tree had uncommitted changes
	Go       string // the Go release that built it
}

// Read returns the running binary's build information.
func Read() Info {
	info := Info{Version: Version}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if info.Version == "" {
			info.Version = "(unknown)"
		}
		return info
	}
	info.Go = bi.GoVersion
	if info.Version == "" {
		info.Version = bi.Main.Version
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the one-line form: "v1.2.3 (revision 0123abcd, modified)".
func (i Info) String() string {
	var extra []string
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		extra = append(extra, "revision "+rev)
	}
	if i.Time != "" {
		extra = append(extra, i.Time)
	}
	if i.Modified {
		extra = append(extra, "modified")
	}
	if len(extra) == 0 {
		return i.Version
	}
	return i.Version + " (" + strings.Join(extra, ", ") + ")"
}
