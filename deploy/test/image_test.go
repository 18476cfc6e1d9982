package deploytest

import (
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// The build identity the image tests stamp in, as `make image` passes it to docker build.
const (
	testVersion = "v9.8.7-rc.1"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
	testDate    = "2030-01-02T03:04:05Z"
)

// dockerfile is the parsed Dockerfile, by stage name.
type dockerfile struct {
	stages []instructions.Stage
}

func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	f, err := os.Open(repoPath("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ast, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	stages, _, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return &dockerfile{stages: stages}
}

func (d *dockerfile) stage(t *testing.T, name string) *instructions.Stage {
	t.Helper()
	for i := range d.stages {
		if d.stages[i].Name == name {
			return &d.stages[i]
		}
	}
	t.Fatalf("Dockerfile: no stage %q", name)
	return nil
}

func commandsOf[T instructions.Command](s *instructions.Stage) []T {
	var out []T
	for _, c := range s.Commands {
		if x, ok := c.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// TestDockerfile checks the image's contract from the Dockerfile itself: the default target is
// the production image; it holds the daemon alone, runs as 65532, owns its journal volume,
// listens for ops on every interface and carries the OCI labels.
func TestDockerfile(t *testing.T) {
	ep := ops(t)
	d := parseDockerfile(t)
	if last := d.stages[len(d.stages)-1]; last.Name != "adapter" {
		t.Errorf("the last stage (the default target) is %q, want adapter", last.Name)
	}
	adapter := d.stage(t, "adapter")
	if !strings.HasPrefix(adapter.BaseName, "gcr.io/distroless/static") {
		t.Errorf("adapter base %q: want distroless static", adapter.BaseName)
	}
	users := commandsOf[*instructions.UserCommand](adapter)
	if len(users) == 0 || users[len(users)-1].User != fmt.Sprintf("%d:%d", runtimeUID, runtimeUID) {
		t.Errorf("adapter USER: want %d:%d, got %v", runtimeUID, runtimeUID, users)
	}
	env := map[string]string{}
	for _, e := range commandsOf[*instructions.EnvCommand](adapter) {
		for _, kv := range e.Env {
			env[kv.Key] = kv.Value
		}
	}
	if want := fmt.Sprintf(":%d", ep.Port); env["CERTPROV_OPS_LISTEN"] != want {
		t.Errorf("ENV CERTPROV_OPS_LISTEN=%q, want %q", env["CERTPROV_OPS_LISTEN"], want)
	}
	var volumes []string
	for _, v := range commandsOf[*instructions.VolumeCommand](adapter) {
		volumes = append(volumes, v.Volumes...)
	}
	if !slices.Equal(volumes, []string{dataDir}) {
		t.Errorf("VOLUME %v, want [%s]", volumes, dataDir)
	}
	var binaries []string
	ownsData := false
	for _, c := range commandsOf[*instructions.CopyCommand](adapter) {
		for _, src := range c.SourcePaths {
			if strings.Contains(src, "/bin/") {
				binaries = append(binaries, path.Base(src))
			}
			if src == dataDir && c.DestPath == dataDir && c.Chown == fmt.Sprintf("%d:%d", runtimeUID, runtimeUID) {
				ownsData = true
			}
		}
	}
	if !slices.Equal(binaries, []string{"certprov-adapter"}) {
		t.Errorf("adapter image copies binaries %v, want the daemon alone", binaries)
	}
	if !ownsData {
		t.Errorf("adapter image: %s is not copied in owned by %d:%d (a non-root daemon cannot create it)", dataDir, runtimeUID, runtimeUID)
	}
	labels := map[string]string{}
	for _, l := range commandsOf[*instructions.LabelCommand](adapter) {
		for _, kv := range l.Labels {
			labels[kv.Key] = strings.Trim(kv.Value, `"`)
		}
	}
	for _, k := range []string{"title", "description", "licenses", "source", "version", "revision", "created"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("adapter image lacks LABEL org.opencontainers.image.%s", k)
		}
	}
	if labels["org.opencontainers.image.version"] != "${VERSION}" || labels["org.opencontainers.image.revision"] != "${COMMIT}" {
		t.Errorf("version labels %q/%q do not come from the VERSION and COMMIT build args", labels["org.opencontainers.image.version"], labels["org.opencontainers.image.revision"])
	}

	emu := d.stage(t, "emulator")
	var emuBins []string
	for _, c := range commandsOf[*instructions.CopyCommand](emu) {
		for _, src := range c.SourcePaths {
			emuBins = append(emuBins, path.Base(src))
		}
	}
	if !slices.Equal(emuBins, []string{"certprov-emulator"}) {
		t.Errorf("emulator image copies %v, want certprov-emulator alone", emuBins)
	}
}

var (
	imageOnce sync.Once
	imageBin  string // directory holding the binaries the Dockerfile's build stage produced
	imageErr  error
)

// imageBinaries runs the Dockerfile's build stage here: the build context filtered by
// .dockerignore, no .git, the stage's build args set as `make image` sets them, and the stage's
// make command line exactly as written. It returns the directory with the binaries the later
// stages copy.
func imageBinaries(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() { imageBin, imageErr = runBuildStage(t) })
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageBin
}

func runBuildStage(t *testing.T) (string, error) {
	d := parseDockerfile(t)
	build := d.stage(t, "build")
	ctx := filepath.Join(workDir, "build-context")
	if err := os.Mkdir(ctx, 0o755); err != nil {
		return "", err
	}
	if err := copyContext(repoPath(), ctx); err != nil {
		return "", fmt.Errorf("build context: %w", err)
	}
	workdir := ""
	var makeRuns []*instructions.RunCommand
	args := map[string]string{}
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.WorkdirCommand:
			workdir = c.Path
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				args[a.Key] = deref(a.Value)
			}
		case *instructions.RunCommand:
			if len(c.CmdLine) == 1 && strings.HasPrefix(c.CmdLine[0], "make ") {
				makeRuns = append(makeRuns, c)
			}
		}
	}
	if len(makeRuns) != 1 || workdir == "" {
		return "", fmt.Errorf("Dockerfile build stage: want a WORKDIR and one RUN make …, got %d make runs", len(makeRuns))
	}
	for k, v := range map[string]string{"VERSION": testVersion, "COMMIT": testCommit, "DATE": testDate} {
		if _, ok := args[k]; !ok {
			return "", fmt.Errorf("Dockerfile build stage: no ARG %s", k)
		}
		args[k] = v
	}
	cmd := exec.Command("sh", "-c", makeRuns[0].CmdLine[0])
	cmd.Dir = ctx
	// The golang image's environment: none of this machine's build settings leak in.
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CGO_ENABLED", "GOFLAGS", "GOOS", "GOARCH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	for k, v := range args {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("RUN %s: %w\n%s", makeRuns[0].CmdLine[0], err, out)
	}
	// The later stages copy from WORKDIR/bin/.
	return filepath.Join(ctx, "bin"), nil
}

// copyContext copies the repository into dst as docker build would send it, honouring
// .dockerignore (with Docker's own pattern matcher).
func copyContext(root, dst string) error {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return err
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return err
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if skip {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		if de.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !de.Type().IsRegular() {
			return nil
		}
		return copyFile(p, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestImageBuild: what the Dockerfile builds is a static, stripped binary that reports the
// version, commit and date the build was given. (No Docker engine runs here; this is the build
// stage's own command line, run on the filtered context.)
func TestImageBuild(t *testing.T) {
	bin := imageBinaries(t)
	for _, name := range []string{"certprov-adapter", "certprov-emulator"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(bin, name)
			checkStatic(t, p)
			out, err := exec.Command(p, "version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s version: %v\n%s", name, err, out)
			}
			want := fmt.Sprintf("%s %s (commit %s, built %s, %s %s/%s)\n", name, testVersion, testCommit, testDate, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if string(out) != want {
				t.Errorf("%s version:\n got %q\nwant %q", name, out, want)
			}
		})
	}
}

// checkStatic fails unless the ELF file at p needs no dynamic loader or shared library (it runs
// on distroless/static) and has no symbol table (built with -s -w).
func checkStatic(t *testing.T, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static", p)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s links shared libraries %v (%v): not static", p, libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s has a symbol table: not built with -s", p)
	}
}
