package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
)

// ControlPath is the collection of the control API: POST creates processes, GET lists them.
const ControlPath = "/emulator/v1/processes"

// CreateProcessesRequest is the body of POST /emulator/v1/processes.
type CreateProcessesRequest struct {
	Specs []ProcessSpec `json:"specs"`
}

// CreateProcessesResponse answers POST /emulator/v1/processes: the names of the created
// processes, in the order of the specs.
type CreateProcessesResponse struct {
	Names []string `json:"names"`
}

// ListProcessesResponse answers GET /emulator/v1/processes, sorted by name.
type ListProcessesResponse struct {
	Processes []Snapshot `json:"processes"`
}

// serveControl serves the control API. Errors use the same envelope as the REST API.
func (e *Emulator) serveControl(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == DirectoryControlPath {
		e.setDirectory(w, r)
		return
	}
	if r.URL.Path != ControlPath {
		frontend.WriteError(w, frontend.NotFound("no such control resource: %s", r.URL.Path))
		return
	}
	switch r.Method {
	case http.MethodGet:
		frontend.WriteJSON(w, http.StatusOK, ListProcessesResponse{Processes: e.Snapshots()})
	case http.MethodPost:
		e.createProcesses(w, r)
	default:
		frontend.WriteError(w, frontend.MethodNotAllowed("GET or POST", ControlPath))
	}
}

// createProcesses validates every spec first, so a bad request creates nothing, then starts the
// processes concurrently (RSA key generation dominates).
func (e *Emulator) createProcesses(w http.ResponseWriter, r *http.Request) {
	var req CreateProcessesRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, frontend.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		frontend.WriteError(w, frontend.InvalidArgument("create processes: %v", err))
		return
	}
	if len(req.Specs) == 0 {
		frontend.WriteError(w, frontend.InvalidArgument("create processes: no specs"))
		return
	}
	for i, s := range req.Specs {
		if _, err := s.normalize(); err != nil {
			frontend.WriteError(w, frontend.InvalidArgument("create processes: spec %d: %v", i, err))
			return
		}
	}

	names := make([]string, len(req.Specs))
	errs := make([]error, len(req.Specs))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, s := range req.Specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			names[i], errs[i] = e.StartProcess(r.Context(), s)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		frontend.WriteError(w, frontend.Internal(fmt.Errorf("create processes: %s", strings.ReplaceAll(err.Error(), "\n", "; "))))
		return
	}
	frontend.WriteJSON(w, http.StatusOK, CreateProcessesResponse{Names: names})
}
