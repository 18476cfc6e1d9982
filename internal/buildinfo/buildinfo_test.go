package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	recorded := &debug.BuildInfo{
		GoVersion: "go1.26.1",
		Main:      debug.Module{Path: "github.com/certprov/certprov-adapter", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2030-01-02T03:04:05Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	tests := []struct {
		name                  string
		version, commit, date string
		bi                    *debug.BuildInfo
		want                  Info
	}{
		{
			name: "stamped values win over the toolchain's", version: "v1.2.3", commit: "feedface", date: "2031-05-06T07:08:09Z", bi: recorded,
			want: Info{Version: "v1.2.3", Commit: "feedface", Date: "2031-05-06T07:08:09Z", GoVersion: "go1.26.1"},
		},
		{
			name: "toolchain record when nothing is stamped", bi: recorded,
			want: Info{Version: "v0.3.0", Commit: "0123456789abcdef0123456789abcdef01234567-dirty", Date: "2030-01-02T03:04:05Z", GoVersion: "go1.26.1"},
		},
		{
			name: "each field falls back on its own", version: "v1.2.3", bi: recorded,
			want: Info{Version: "v1.2.3", Commit: "0123456789abcdef0123456789abcdef01234567-dirty", Date: "2030-01-02T03:04:05Z", GoVersion: "go1.26.1"},
		},
		{
			name: "built without VCS information (-buildvcs=false)",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "(devel)"}},
			want: Info{Version: "(devel)", Commit: Unknown, Date: Unknown, GoVersion: "go1.26.1"},
		},
		{
			name: "no build information at all",
			want: Info{Version: "(devel)", Commit: Unknown, Date: Unknown},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resolve(tt.version, tt.commit, tt.date, tt.bi)
			if tt.want.GoVersion == "" {
				tt.want.GoVersion = got.GoVersion // runtime.Version(), whatever built the test
			}
			got.Platform = ""
			if got != tt.want {
				t.Errorf("resolve = %+v\nwant      %+v", got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "v1.2.3", Commit: "abc", Date: "2030-01-02T03:04:05Z", GoVersion: "go1.26.1", Platform: "linux/arm64"}
	if got, want := i.String(), "v1.2.3 (commit abc, built 2030-01-02T03:04:05Z, go1.26.1 linux/arm64)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
