package relpath

import (
	"path/filepath"
	"testing"
)

func TestResolve(t *testing.T) {
	base := filepath.Join(t.TempDir(), "etc")
	abs := filepath.Join(t.TempDir(), "key.pem")
	tests := []struct{ base, p, want string }{
		{base, "key.pem", filepath.Join(base, "key.pem")},
		{base, filepath.Join("keys", "sa.json"), filepath.Join(base, "keys", "sa.json")},
		{base, filepath.Join("..", "x"), filepath.Join(filepath.Dir(base), "x")},
		{base, abs, abs},
		{base, "", ""},
		{"", "key.pem", "key.pem"},
	}
	for _, tc := range tests {
		if got := Resolve(tc.base, tc.p); got != tc.want {
			t.Errorf("Resolve(%q, %q) = %q, want %q", tc.base, tc.p, got, tc.want)
		}
	}
}
