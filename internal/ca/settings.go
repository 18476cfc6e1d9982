package ca

import (
	"fmt"
	"path/filepath"
	"reflect"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// Decode decodes a connector's settings into dst (a pointer to a struct with mapstructure tags),
// strictly: an unknown key is an error naming it. Durations are written as strings ("30s",
// "720h"); nested structs (e.g. a TLS block) decode the same way.
func Decode(s Settings, dst any) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		ErrorUnused: true,
		DecodeHook:  durationHook,
		Result:      dst,
	})
	if err != nil {
		return fmt.Errorf("settings decoder: %w", err)
	}
	if err := dec.Decode(map[string]any(s)); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	return nil
}

// durationHook parses duration strings and quotes the value when it cannot.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	d, err := time.ParseDuration(data.(string))
	if err != nil {
		return nil, fmt.Errorf("%q is not a duration (write e.g. 30s or 720h)", data)
	}
	return d, nil
}

// Path resolves a settings path against the config file's directory.
func (e Env) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || e.BaseDir == "" {
		return p
	}
	return filepath.Join(e.BaseDir, p)
}
