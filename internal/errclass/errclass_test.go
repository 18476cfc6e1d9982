package errclass

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

type ownClass struct{}

func (ownClass) Error() string                      { return "pending upstream" }
func (ownClass) ErrorClass() (Class, time.Duration) { return Pending, 3 * time.Second }

func TestOf(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		class Class
		hint  time.Duration
	}{
		{"unclassified", io.ErrUnexpectedEOF, Retryable, 0},
		{"permanent", Mark(io.EOF, Permanent, 0), Permanent, 0},
		{"retryable with a hint", Mark(io.EOF, Retryable, time.Minute), Retryable, time.Minute},
		{"wrapped", fmt.Errorf("issue x: %w", Mark(io.EOF, Permanent, 0)), Permanent, 0},
		{"outermost wins", Mark(fmt.Errorf("again: %w", Mark(io.EOF, Permanent, 0)), Retryable, 0), Retryable, 0},
		{"an error's own class", fmt.Errorf("ca: %w", ownClass{}), Pending, 3 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if c, h := Of(tc.err); c != tc.class || h != tc.hint {
				t.Fatalf("Of(%v) = %s, %s; want %s, %s", tc.err, c, h, tc.class, tc.hint)
			}
		})
	}
	if Mark(nil, Permanent, 0) != nil {
		t.Fatal("Mark(nil) is not nil")
	}
	if err := Mark(io.EOF, Permanent, 0); !errors.Is(err, io.EOF) || err.Error() != "EOF" {
		t.Fatalf("Mark hides the error it classifies: %v", err)
	}
}
