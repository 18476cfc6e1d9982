package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ControlClient talks to a running emulator's control API (certprov-emulator provision, the
// load harness). It is safe for concurrent use.
type ControlClient struct {
	base string
	http *http.Client
}

// NewControlClient returns a client for the emulator at base (http://host:port); nil uses a
// client with a 30 s timeout.
func NewControlClient(base string, client *http.Client) *ControlClient {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	return &ControlClient{base: strings.TrimRight(base, "/"), http: client}
}

// Create starts processes and returns their names, in the order of specs.
func (c *ControlClient) Create(ctx context.Context, specs []ProcessSpec) ([]string, error) {
	var resp CreateProcessesResponse
	if err := c.do(ctx, http.MethodPost, ControlPath, CreateProcessesRequest{Specs: specs}, &resp); err != nil {
		return nil, fmt.Errorf("create processes: %w", err)
	}
	if len(resp.Names) != len(specs) {
		return nil, fmt.Errorf("create processes: emulator returned %d names for %d specs", len(resp.Names), len(specs))
	}
	return resp.Names, nil
}

// List returns a snapshot of every process, sorted by name.
func (c *ControlClient) List(ctx context.Context) ([]Snapshot, error) {
	var resp ListProcessesResponse
	if err := c.do(ctx, http.MethodGet, ControlPath, nil, &resp); err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	return resp.Processes, nil
}

// Notify publishes the notifications of the named processes at once (NotifyAll).
func (c *ControlClient) Notify(ctx context.Context, names []string) error {
	var resp NotifyResponse
	if err := c.do(ctx, http.MethodPost, NotifyPath, NotifyRequest{Names: names}, &resp); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// Stats returns the emulator's counts, MaxInWindow over window.
func (c *ControlClient) Stats(ctx context.Context, window time.Duration) (Stats, error) {
	var st Stats
	if err := c.do(ctx, http.MethodGet, StatsPath+"?window="+url.QueryEscape(window.String()), nil, &st); err != nil {
		return Stats{}, fmt.Errorf("stats: %w", err)
	}
	return st, nil
}

// maxControlResponse bounds a control answer: a list of 100,000 processes with their
// certificates is about 150 MB.
const maxControlResponse = 512 << 20

func (c *ControlClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxControlResponse))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var env struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &env) == nil && env.Error.Message != "" {
			return fmt.Errorf("%s %s: %d: %s", method, req.URL, resp.StatusCode, env.Error.Message)
		}
		return fmt.Errorf("%s %s: %s", method, req.URL, resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}
