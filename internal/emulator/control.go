package emulator

import (
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
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
		writeError(w, notFound("no such control resource: %s", r.URL.Path), 0)
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, ListProcessesResponse{Processes: e.Snapshots()})
	case http.MethodPost:
		e.createProcesses(w, r)
	default:
		writeError(w, &apiError{code: http.StatusMethodNotAllowed, status: "UNIMPLEMENTED",
			message: "use GET or POST on " + ControlPath}, 0)
	}
}

// createProcesses validates every spec first, so a bad request creates nothing, then starts the
// processes concurrently (RSA key generation dominates).
func (e *Emulator) createProcesses(w http.ResponseWriter, r *http.Request) {
	var req CreateProcessesRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, invalidArgument("create processes: %v", err), 0)
		return
	}
	if len(req.Specs) == 0 {
		writeError(w, invalidArgument("create processes: no specs"), 0)
		return
	}
	for i, s := range req.Specs {
		if _, err := s.normalize(); err != nil {
			writeError(w, invalidArgument("create processes: spec %d: %v", i, err), 0)
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
		writeError(w, &apiError{code: http.StatusInternalServerError, status: "INTERNAL",
			message: "create processes: " + strings.ReplaceAll(err.Error(), "\n", "; ")}, 0)
		return
	}
	writeJSON(w, http.StatusOK, CreateProcessesResponse{Names: names})
}
