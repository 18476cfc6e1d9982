// Package logging builds the adapter's zap logger and provides Secret, a string that redacts
// itself wherever it is printed, so that credentials cannot reach a log by accident.
package logging

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Levels accepted by New (and by the log.level configuration key).
const (
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Formats accepted by New (and by the log.format configuration key).
const (
	// FormatJSON is one JSON object per line, for log collectors.
	FormatJSON = "json"
	// FormatConsole is human-readable text, for a terminal.
	FormatConsole = "console"
)

// New returns a logger writing to standard error at the given level and format.
//
// Sampling is off in both formats: every claim, signature and upload is an audit event that
// must not be dropped however many processes run at once. Stack traces are attached from error
// level on, and DPanic never panics, so that a logging call cannot take the daemon down.
func New(level, format string) (*zap.Logger, error) {
	log, _, err := build(level, format, zapcore.Lock(os.Stderr))
	return log, err
}

// NewLeveled is New, and the handle that changes its level while it runs (a reload).
func NewLeveled(level, format string) (*zap.Logger, *Level, error) {
	return build(level, format, zapcore.Lock(os.Stderr))
}

// Level is the level of a running logger.
type Level struct{ a zap.AtomicLevel }

// Set changes the level to one of the documented ones; another leaves it as it is.
func (l *Level) Set(level string) error {
	lvl, err := parseLevel(level)
	if err != nil {
		return err
	}
	l.a.SetLevel(lvl)
	return nil
}

// String is the level's name.
func (l *Level) String() string { return l.a.Level().String() }

// build is NewLeveled with the output chosen by the caller (tests capture it).
func build(level, format string, out zapcore.WriteSyncer) (*zap.Logger, *Level, error) {
	parsed, err := parseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	lvl := zap.NewAtomicLevelAt(parsed)
	var enc zapcore.Encoder
	switch format {
	case FormatJSON:
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case FormatConsole:
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, nil, fmt.Errorf("log format %q: want %s or %s", format, FormatJSON, FormatConsole)
	}
	core := zapcore.NewCore(enc, out, lvl)
	return zap.New(core,
		zap.AddCaller(),
		zap.AddStacktrace(zapcore.ErrorLevel),
		zap.ErrorOutput(zapcore.Lock(os.Stderr)),
	), &Level{a: lvl}, nil
}

// parseLevel accepts exactly the documented levels; zap's own parser also knows dpanic, panic
// and fatal, which would let a configuration silence errors.
func parseLevel(level string) (zapcore.Level, error) {
	switch level {
	case LevelDebug:
		return zapcore.DebugLevel, nil
	case LevelInfo:
		return zapcore.InfoLevel, nil
	case LevelWarn:
		return zapcore.WarnLevel, nil
	case LevelError:
		return zapcore.ErrorLevel, nil
	default:
		return zapcore.InfoLevel, fmt.Errorf("log level %q: want %s, %s, %s or %s",
			level, LevelDebug, LevelInfo, LevelWarn, LevelError)
	}
}
