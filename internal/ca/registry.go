package ca

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/suggest"
)

// Settings is a connector's own part of the configuration (everything under
// caConnections.<name> except the keys the adapter itself understands). Factories decode it
// strictly and report each problem as a *SettingError naming the offending key. Keys that name
// files end in "File" (or "Files" for a map of them), so that tools can tell paths from values.
type Settings map[string]any

// Env is what a factory may use besides its settings.
type Env struct {
	Name   string // the caConnections key, for messages
	Logger *zap.Logger
	// BaseDir resolves relative file paths in settings (the config file's directory).
	BaseDir string
}

// Factory builds a Connector from its settings.
type Factory func(settings Settings, env Env) (Connector, error)

// Check validates a connector's settings without reading any file or contacting anyone: every
// rule of its factory that needs neither (required keys, URLs, enumerations, durations, keys
// that exclude each other). It reports problems as a *SettingError each (joined), like the
// factory. It is what `validate --offline` runs, for CI of a production configuration whose
// files and servers exist only in production.
type Check func(settings Settings) error

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
	checks    = map[string]Check{}
)

// Register makes a connector type available. It is called from the init function of each
// connector package; registering one type twice is a programming error.
func Register(typ string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[typ]; dup {
		panic("ca: connector type registered twice: " + typ)
	}
	factories[typ] = f
}

// RegisterCheck registers the offline settings check of a connector type, from the same init
// function as its factory. A type without one is reported as not checked offline.
func RegisterCheck(typ string, c Check) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := checks[typ]; dup {
		panic("ca: connector check registered twice: " + typ)
	}
	checks[typ] = c
}

// New builds the connector of type typ. An unknown type is a *SettingError at "type".
func New(typ string, settings Settings, env Env) (Connector, error) {
	mu.RLock()
	f, ok := factories[typ]
	mu.RUnlock()
	if !ok {
		return nil, unknownType(typ)
	}
	c, err := f(settings, env)
	if err != nil {
		return nil, fmt.Errorf("%s connector %q: %w", typ, env.Name, err)
	}
	return c, nil
}

// CheckSettings runs the offline check of type typ on settings. checked is false when the type
// registered no check (its settings are then only checked by New); an unknown type is a
// *SettingError at "type".
func CheckSettings(typ string, settings Settings) (checked bool, err error) {
	mu.RLock()
	_, known := factories[typ]
	c, ok := checks[typ]
	mu.RUnlock()
	if !known {
		return false, unknownType(typ)
	}
	if !ok {
		return false, nil
	}
	return true, c(settings)
}

func unknownType(typ string) error {
	types := Types()
	msg := fmt.Sprintf("unsupported CA connector type %q (known: %v)", typ, types)
	if s := suggest.Closest(typ, types); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return &SettingError{Key: "type", Err: fmt.Errorf("%s", msg)}
}

// Types lists the registered connector types, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	return slices.Sorted(maps.Keys(factories))
}

// RegisterNew registers a constructor that returns its concrete connector type. It wraps it so
// that a failed construction never yields a typed nil inside the Connector interface.
func RegisterNew[C Connector](typ string, newConnector func(Settings, Env) (C, error)) {
	Register(typ, func(s Settings, env Env) (Connector, error) {
		c, err := newConnector(s, env)
		if err != nil {
			return nil, err
		}
		return c, nil
	})
}
