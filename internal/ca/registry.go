package ca

import (
	"fmt"
	"sort"
	"sync"

	"go.uber.org/zap"
)

// Settings is a connector's own part of the configuration (everything under
// caConnections.<name> except the keys the adapter itself understands). Factories decode it
// strictly and name the offending key in their errors.
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

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
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

// New builds the connector of type typ.
func New(typ string, settings Settings, env Env) (Connector, error) {
	mu.RLock()
	f, ok := factories[typ]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unsupported CA connector type %q (known: %v)", typ, Types())
	}
	c, err := f(settings, env)
	if err != nil {
		return nil, fmt.Errorf("%s connector %q: %w", typ, env.Name, err)
	}
	return c, nil
}

// Types lists the registered connector types, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(factories))
	for t := range factories {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
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
