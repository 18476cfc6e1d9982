package deploytest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRelease runs `make release` for linux/amd64 twice and checks the archive: the files it
// must hold, static binaries for the right architecture, SHA256SUMS that match, and the same
// bytes both times (reproducible). linux/arm64 is the same recipe with GOARCH=arm64.
func TestRelease(t *testing.T) {
	var first []byte
	for i := range 2 {
		dist := filepath.Join(t.TempDir(), "dist")
		cmd := exec.Command("make", "-C", repoPath(), "release", "PLATFORMS=linux/amd64", "DIST="+dist,
			"VERSION="+testVersion, "COMMIT="+testCommit, "DATE="+testDate)
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=") || strings.HasPrefix(kv, "GOFLAGS=")
		})
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make release: %v\n%s", err, out)
		}
		name := fmt.Sprintf("certprov-adapter_%s_linux_amd64", testVersion)
		archive, err := os.ReadFile(filepath.Join(dist, name+".tar.gz"))
		if err != nil {
			t.Fatal(err)
		}
		sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(archive)
		if want := hex.EncodeToString(sum[:]) + "  " + name + ".tar.gz\n"; string(sums) != want {
			t.Errorf("SHA256SUMS:\n%s\nwant\n%s", sums, want)
		}
		if i == 0 {
			first = archive
			checkArchive(t, archive, name)
		} else if !bytes.Equal(first, archive) {
			t.Error("two release builds of the same commit differ: not reproducible")
		}
	}
}

func checkArchive(t *testing.T, archive []byte, name string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var files []string
	dir := t.TempDir()
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want 0:0", h.Name, h.Uid, h.Gid)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		files = append(files, h.Name)
		if base := filepath.Base(h.Name); strings.HasPrefix(base, "certprov-") && !strings.Contains(base, ".") {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, base)
			writeFile(t, p, b)
			checkStatic(t, p)
			f, err := elf.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			if f.Machine != elf.EM_X86_64 {
				t.Errorf("%s is for %v, want x86-64", h.Name, f.Machine)
			}
			f.Close()
		}
	}
	var want []string
	for _, f := range []string{"LICENSE", "README.md", "certprov-adapter", "certprov-adapter.service", "certprov-emulator", "example.yaml"} {
		want = append(want, name+"/"+f)
	}
	slices.Sort(files)
	if !slices.Equal(files, want) {
		t.Errorf("archive holds %v, want %v", files, want)
	}
}
