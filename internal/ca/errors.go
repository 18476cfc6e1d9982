package ca

import (
	"errors"
	"fmt"
	"time"
)

// Class says what the engine should do after an error.
type Class int

const (
	// ClassRetryable errors are transient: back off and try again until the step's deadline.
	ClassRetryable Class = iota
	// ClassPermanent errors can never succeed as is: tell the user at once.
	ClassPermanent
	// ClassPending means the CA accepted the request but has not issued yet.
	ClassPending
)

func (c Class) String() string {
	switch c {
	case ClassPermanent:
		return "permanent"
	case ClassPending:
		return "pending"
	default:
		return "retryable"
	}
}

type classified struct {
	class      Class
	retryAfter time.Duration
	err        error
}

func (e *classified) Error() string { return e.err.Error() }
func (e *classified) Unwrap() error { return e.err }

// Permanent marks err as one that retrying cannot fix (the CA refused the subject, bad credentials).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &classified{class: ClassPermanent, err: err}
}

// Permanentf is Permanent(fmt.Errorf(...)).
func Permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}

// Retryable marks err as transient; retryAfter, when positive, is the CA's own hint.
func Retryable(err error, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	return &classified{class: ClassRetryable, retryAfter: retryAfter, err: err}
}

// PendingError reports that the CA accepted the request and will issue later.
type PendingError struct {
	Ticket     string        // connector-specific handle to resume with (Request.Ticket)
	RetryAfter time.Duration // when to ask again; zero lets the engine choose
	Reason     string
}

func (e *PendingError) Error() string {
	if e.Reason != "" {
		return "certificate pending: " + e.Reason
	}
	return "certificate pending"
}

// Classify returns the class of err and the retry hint it carries. Unclassified errors are
// retryable: a CA that failed in an unexpected way may well work a minute later.
func Classify(err error) (Class, time.Duration) {
	var p *PendingError
	if errors.As(err, &p) {
		return ClassPending, p.RetryAfter
	}
	var c *classified
	if errors.As(err, &c) {
		return c.class, c.retryAfter
	}
	return ClassRetryable, 0
}

// IsPermanent reports whether err is classified permanent.
func IsPermanent(err error) bool {
	c, _ := Classify(err)
	return c == ClassPermanent
}
