package postgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/cleartext"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
)

// Open applies the rule of journal.dsn itself: a DSN that would send the password and the journal
// to another host without verified TLS is refused before any connection is made, unless the
// opt-out is given, which is logged.
func TestOpenRefusesCleartextToAnotherHost(t *testing.T) {
	t.Setenv("PGSSLMODE", "")
	const dsn = "postgres://certprov:s3cret-pw@db.example.com:5432/certprov?sslmode=disable"
	_, err := postgres.Open(context.Background(), dsn)
	var e *cleartext.Exposure
	if !errors.As(err, &e) || e.Host != "db.example.com:5432" {
		t.Fatalf("Open = %v, want the journal.dsn exposure", err)
	}
	if strings.Contains(err.Error(), "s3cret-pw") || !strings.Contains(err.Error(), "journal.insecureAllowCleartext") {
		t.Errorf("error %q", err)
	}

	// With the opt-out Open goes on to connect; a cancelled context stops it there, so that the
	// test needs no network.
	core, logs := observer.New(zapcore.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := postgres.Open(ctx, dsn, postgres.WithInsecureAllowCleartext(true), postgres.WithLogger(zap.New(core)))
	if err == nil {
		_ = s.Close()
		t.Fatal("Open succeeded with a cancelled context")
	}
	if errors.As(err, &e) {
		t.Fatalf("Open with the opt-out still refused: %v", err)
	}
	if w := logs.FilterField(zap.String("setting", "journal.dsn")).All(); len(w) != 1 || w[0].ContextMap()["host"] != "db.example.com:5432" {
		t.Fatalf("warnings %+v, want one for journal.dsn", logs.All())
	}
}

// The test cluster's DSN (loopback, sslmode=disable) opens without an opt-out and without a warning.
func TestOpenLoopbackNeedsNoOptOut(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	s, err := postgres.Open(context.Background(), testDSN(t), postgres.WithTable(newTable(t)), postgres.WithLogger(zap.New(core)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if logs.Len() != 0 {
		t.Errorf("warnings for a loopback DSN: %+v", logs.All())
	}
}
