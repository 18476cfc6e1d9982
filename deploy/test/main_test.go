package deploytest

import (
	"fmt"
	"os"
	"testing"
)

// workDir holds what several tests share (the binaries the Dockerfile's build stage makes); it
// outlives any single test and is removed when they all ended.
var workDir string

func TestMain(m *testing.M) {
	var err error
	workDir, err = os.MkdirTemp("", "certprov-deploytest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(workDir)
	os.Exit(code)
}
