// Package buildinfo says which build of the adapter is running. The release build (Makefile,
// Dockerfile) stamps the version, commit and date in with -ldflags -X; a plain `go build` or
// `go install` leaves them empty, and the values the Go toolchain recorded (module version,
// vcs.revision, vcs.time) are used instead.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/certprov/certprov-adapter/internal/buildinfo.version=v1.2.3"
// (likewise commit and date); see the Makefile's LDFLAGS.
var (
	version string
	commit  string
	date    string
)

// Unknown stands for a value that neither the release build nor the toolchain recorded.
const Unknown = "unknown"

// Info describes one build.
type Info struct {
	Version   string // semantic version, e.g. v1.2.3 or v1.2.3-4-gabcdef0; "(devel)" for an untagged local build
	Commit    string // full VCS revision, with "-dirty" when the tree had local changes; Unknown if none
	Date      string // commit (or build) time, RFC 3339 in UTC; Unknown if none
	GoVersion string // toolchain that built the binary, e.g. go1.26.8
	Platform  string // GOOS/GOARCH
}

// Get returns the running binary's build information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, commit, date, bi)
}

// resolve prefers the stamped values and falls back to the toolchain's record, field by field.
func resolve(version, commit, date string, bi *debug.BuildInfo) Info {
	info := Info{
		Version:   version,
		Commit:    commit,
		Date:      date,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		var rev, at string
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" && dirty {
			rev += "-dirty"
		}
		if info.Version == "" {
			info.Version = bi.Main.Version
		}
		if info.Commit == "" {
			info.Commit = rev
		}
		if info.Date == "" {
			info.Date = at
		}
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	if info.Commit == "" {
		info.Commit = Unknown
	}
	if info.Date == "" {
		info.Date = Unknown
	}
	return info
}

// String is the one-line form the version commands print after the program name:
// "v1.2.3 (commit 0123abcd…, built 2030-01-02T03:04:05Z, go1.26.8 linux/amd64)".
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, built %s, %s %s)", i.Version, i.Commit, i.Date, i.GoVersion, i.Platform)
}
