// Package errclass is the adapter's one taxonomy of errors: what to do after one. The Google API
// client classifies its errors with it and the CA connectors theirs (package ca re-exports it for
// them), and the engine decides on the class alone: fail now, try again later, or ask again when
// the outcome is due.
package errclass

import (
	"errors"
	"time"
)

// Class says what to do after an error.
type Class int

const (
	// Retryable errors are transient (a timeout, HTTP 429 or 5xx, a server that is down): back
	// off and try again, within the step's retry budget, no sooner than the error's hint.
	Retryable Class = iota
	// Permanent errors can never succeed as is (a refusal, bad input, bad credentials): tell
	// the user at once.
	Permanent
	// Pending means the request was accepted and its outcome comes later: ask again on the
	// error's schedule.
	Pending
)

func (c Class) String() string {
	switch c {
	case Permanent:
		return "permanent"
	case Pending:
		return "pending"
	default:
		return "retryable"
	}
}

// Classifier is an error that states its own class and retry hint (zero for none).
type Classifier interface {
	error
	ErrorClass() (Class, time.Duration)
}

type marked struct {
	class      Class
	retryAfter time.Duration
	err        error
}

func (e *marked) Error() string                      { return e.err.Error() }
func (e *marked) Unwrap() error                      { return e.err }
func (e *marked) ErrorClass() (Class, time.Duration) { return e.class, e.retryAfter }

// Mark returns err classified as c, with retryAfter (when positive) as the hint of when to try
// again; nil stays nil. The error still wraps err (errors.Is, errors.As).
func Mark(err error, c Class, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	return &marked{class: c, retryAfter: retryAfter, err: err}
}

// Of returns the class and retry hint of the outermost Classifier in err's chain. An error
// that states no class is Retryable: a server that failed in an unexpected way may well work a
// minute later, and every retry is bounded in time.
func Of(err error) (Class, time.Duration) {
	var c Classifier
	if errors.As(err, &c) {
		return c.ErrorClass()
	}
	return Retryable, 0
}
