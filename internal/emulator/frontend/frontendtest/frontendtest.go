// Package frontendtest reads the emulator's answers back in tests: the error a generated Google
// client returns for Google's error envelope.
package frontendtest

import (
	"encoding/json"
	"errors"
	"testing"

	"google.golang.org/api/googleapi"
)

// WantError checks that err is a *googleapi.Error with the HTTP code and, unless status is
// empty, the envelope's google.rpc status name, and returns it.
func WantError(t testing.TB, err error, code int, status string) *googleapi.Error {
	t.Helper()
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) {
		t.Fatalf("error = %v, want *googleapi.Error %d %s", err, code, status)
	}
	if gerr.Code != code {
		t.Fatalf("HTTP code = %d (%s), want %d %s", gerr.Code, gerr.Message, code, status)
	}
	if status != "" && Status(gerr.Body) != status {
		t.Fatalf("error body = %s, want status %s", gerr.Body, status)
	}
	return gerr
}

// Status is the google.rpc status name in an error envelope; empty if body is none.
func Status(body string) string {
	var env struct {
		Error struct {
			Status string `json:"status"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		return ""
	}
	return env.Error.Status
}
