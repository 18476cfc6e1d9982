package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a process the harness started: the emulator, an adapter replica or the reference
// driver. Its standard output and error go to files in the run's directory.
type child struct {
	name    string
	cmd     *exec.Cmd
	out     string // stdout file
	err     string // stderr file
	exited  chan struct{}
	waitErr error
}

// start runs bin with args in dir, output to dir/name.stdout and dir/name.stderr.
func start(dir, name, bin string, args []string, env []string) (*child, error) {
	c := &child{name: name, out: filepath.Join(dir, name+".stdout"), err: filepath.Join(dir, name+".stderr"), exited: make(chan struct{})}
	stdout, err := os.Create(c.out)
	if err != nil {
		return nil, err
	}
	stderr, err := os.Create(c.err)
	if err != nil {
		_ = stdout.Close()
		return nil, err
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = stdout, stderr
	c.cmd.Env = append(os.Environ(), env...)
	if err := c.cmd.Start(); err != nil {
		_ = stdout.Close()
		_ = stderr.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		_ = stdout.Close()
		_ = stderr.Close()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// waitFor polls the file f until re matches a line of it, and returns the submatches; it fails
// when the child exits first or ctx ends.
func (c *child) waitFor(ctx context.Context, file string, re *regexp.Regexp) ([]string, error) {
	for {
		if data, err := os.ReadFile(file); err == nil {
			if m := re.FindSubmatch(data); m != nil {
				out := make([]string, len(m))
				for i, b := range m {
					out[i] = string(b)
				}
				return out, nil
			}
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("%s exited (%v) before it was ready; %s", c.name, c.waitErr, c.tail())
		case <-ctx.Done():
			return nil, fmt.Errorf("%s not ready: %w; %s", c.name, ctx.Err(), c.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tail is the end of the child's standard error, for an error message.
func (c *child) tail() string {
	data, _ := os.ReadFile(c.err)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return fmt.Sprintf("last of %s: %s", filepath.Base(c.err), bytes.TrimSpace(data))
}

// stop sends SIGTERM and waits up to grace for the exit, then kills.
func (c *child) stop(grace time.Duration) error { return c.stopVia(c.pid(), grace) }

// stopVia sends SIGTERM to pid, the child itself or the program it runs (the adapter under
// strace, which does not pass the signal on; strace then exits with its tracee and writes its
// summary), and waits up to grace for the child's exit, then kills the child.
func (c *child) stopVia(pid int, grace time.Duration) error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", c.name, grace)
	}
}

// procSample is what /proc says about a process at one moment.
type procSample struct {
	CPU      time.Duration // user + system, all threads
	RSS, HWM int64         // bytes: resident now, and the most since the start
	Syscw    int64         // write-like system calls (write, pwrite, writev …)
	Written  int64         // bytes the process caused to be written to storage
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every Linux
// architecture Go supports.
const clockTick = 10 * time.Millisecond

// readProc samples pid from /proc.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may contain spaces; fields after it are
	// counted from its closing parenthesis: utime is field 14, stime 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	s.CPU = time.Duration(utime+stime) * clockTick

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	s.RSS, s.HWM = kbField(status, "VmRSS:"), kbField(status, "VmHWM:")
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		s.Syscw, s.Written = plainField(io, "syscw:"), plainField(io, "write_bytes:")
	}
	return s, nil
}

func kbField(data []byte, key string) int64 { return plainField(data, key) * 1024 }

func plainField(data []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

// scrapeGauge reads one unlabelled sample from a Prometheus text endpoint.
func scrapeGauge(ctx context.Context, client *http.Client, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	// Uncompressed: sampled every second, gzip would cost the driver more than a Prometheus
	// scraping every 15 s does.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no sample %s", url, name)
}

// freeAddr is a loopback address no one listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// fetch saves the body of url to path (a profile).
func fetch(ctx context.Context, client *http.Client, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}
