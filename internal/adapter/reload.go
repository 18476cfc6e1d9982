package adapter

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess"
)

// liveKeys are the configuration keys a reload applies to the running adapter (a key and the
// keys under it). Every other key keeps its value from the start until a restart: they name
// what the adapter is (instanceId), where its work is (journal, pubsub) and what it listens on.
func liveKeys() []string {
	return []string{
		"customers",
		"google.rateLimit",
		"log.level",
		"audit",
		"profiles",
		"caConnections",
		"verifiedAccess.apiVersion", // the default of the profiles, which are reloaded
		"verifiedAccess.profiles",
		"verifiedAccess.tls",
		"verifiedAccess.rateLimit",
	}
}

// ReloadFile reads the configuration at path and applies it (Reload). A file that does not load
// or validate is refused, logged and counted, and the running configuration stays; the audit log
// is reopened at its current path anyway, since logrotate signals a reload after moving it.
func (a *Adapter) ReloadFile(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		a.refused(err)
		a.reopenAudit(a.auditPath())
		return fmt.Errorf("reload %s: %w", path, err)
	}
	return a.Reload(cfg)
}

// Reload applies cfg, loaded and validated, to the running adapter. Everything it needs is built
// from cfg first — profiles compiled, CA connections built (their keys, certificates and secrets
// read and checked), enrollment profiles bound, the enrollment server's TLS pair read, the audit
// log opened; if any of that fails the reload is refused, logged and counted, and nothing
// changes. Otherwise it is swapped in at once: the steps and enrollments in flight finish with
// the connectors they started with, new ones use the new, and the old connectors are closed once
// unused. Keys that changed but only take effect on a restart (outside liveKeys) are named in a
// warning.
func (a *Adapter) Reload(cfg *config.Config) error {
	a.reloading.Lock()
	defer a.reloading.Unlock()
	err := a.reload(cfg)
	if err != nil {
		a.refused(err)
	}
	return err
}

func (a *Adapter) reload(cfg *config.Config) error {
	for _, w := range cfg.Warnings() {
		a.log.Warn("configuration warning", zap.String("path", w.Path), zap.String("warning", w.Message))
	}
	profiles, perr := Profiles(cfg)
	if perr == nil && a.directory == nil {
		perr = needsNoDirectory(profiles)
	}
	conns, cerr := Connectors(cfg, a.log)
	if err := errors.Join(perr, cerr, CheckRevokers(cfg, conns)); err != nil {
		closeConnectors(a.log, conns, nil)
		return err
	}
	var va *verifiedaccess.Reconfiguration
	if a.va != nil && cfg.VerifiedAccess.Enabled {
		vaProfiles, err := VerifiedAccessProfiles(cfg, conns)
		if err == nil {
			va, err = a.va.Prepare(cfg.VerifiedAccess, vaProfiles)
		}
		if err != nil {
			closeConnectors(a.log, conns, nil)
			return err
		}
	}
	trail, err := a.Audit.Prepare(cfg.Audit.Path)
	if err != nil {
		closeConnectors(a.log, conns, nil)
		return err
	}

	// From here on nothing fails.
	old := a.conns
	a.conns = conns
	idle := []<-chan struct{}{a.Engine.Reconfigure(profiles, conns)}
	if va != nil {
		idle = append(idle, va.Apply())
	}
	if a.va == nil || va != nil {
		go func() {
			for _, c := range idle {
				<-c
			}
			closeConnectors(a.log, old, conns)
		}()
	}
	// Else the enrollment server runs on (verifiedAccess.enabled takes a restart) with the
	// profiles it has, bound to the old connectors, which therefore stay open.
	if err := trail.Apply(); err != nil {
		a.log.Warn("audit log", zap.Error(err))
	}
	a.receiver.SetCustomers(cfg.Customers)
	if err := a.api.SetRateLimit(APIRateLimit(cfg.Google.RateLimit)); err != nil {
		a.log.Warn("google.rateLimit", zap.Error(err)) // validated already; kept as it was
	}
	if a.vaClient != nil {
		a.vaClient.SetRateLimit(cfg.Google.RateLimit)
	}
	if a.LogLevel != nil {
		if err := a.LogLevel.Set(cfg.Log.Level); err != nil {
			a.log.Warn("log level", zap.Error(err)) // validated already; kept as it was
		}
	}
	a.opsReconfigured(conns)
	a.m.Reloads.WithLabelValues(metrics.ReloadApplied).Inc()
	a.log.Info("configuration reloaded", zap.Int("profiles", len(profiles)), zap.Int("ca_connections", len(conns)),
		zap.Strings("customers", cfg.Customers), zap.String("log_level", cfg.Log.Level), zap.String("audit_path", cfg.Audit.Path))
	if keys := restartKeys(a.cfg, cfg); len(keys) > 0 {
		a.log.Warn("configuration keys changed that take effect only after a restart; running with their old values",
			zap.Strings("keys", keys))
	}
	return nil
}

func (a *Adapter) refused(err error) {
	a.m.Reloads.WithLabelValues(metrics.ReloadRefused).Inc()
	a.log.Error("configuration reload refused; the running configuration stays", zap.Error(err))
}

func (a *Adapter) auditPath() string { return a.Audit.Path() }

func (a *Adapter) reopenAudit(path string) {
	if err := a.Audit.Reopen(path); err != nil {
		a.log.Error("audit log not reopened; still writing to the old file", zap.Error(err))
	}
}

// closeConnectors closes the connectors of conns that hold resources (io.Closer) and are not
// also in keep.
func closeConnectors(log *zap.Logger, conns, keep map[string]*engine.CAConnection) {
	for name, c := range conns {
		if k, ok := keep[name]; ok && k == c {
			continue
		}
		if closer, ok := c.Connector.(io.Closer); ok {
			if err := closer.Close(); err != nil {
				log.Warn("closing a replaced CA connector", zap.String("ca_connection", name), zap.Error(err))
			}
		}
	}
}

// restartKeys lists the keys outside liveKeys whose values differ between running and next, by
// YAML path.
func restartKeys(running, next *config.Config) []string {
	var out []string
	diffKeys(reflect.ValueOf(*running), reflect.ValueOf(*next), "", &out)
	live := liveKeys()
	keys := out[:0]
	for _, k := range out {
		if !underAny(k, live) {
			keys = append(keys, k)
		}
	}
	return keys
}

func underAny(key string, prefixes []string) bool {
	for _, p := range prefixes {
		if key == p || strings.HasPrefix(key, p+".") {
			return true
		}
	}
	return false
}

// diffKeys appends the YAML paths of the values that differ between the structs a and b,
// walking nested sections; maps and lists count as one value each.
func diffKeys(a, b reflect.Value, prefix string, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		av, bv := a.Field(i), b.Field(i)
		if f.Type.Kind() == reflect.Struct {
			diffKeys(av, bv, path, out)
			continue
		}
		if !reflect.DeepEqual(av.Interface(), bv.Interface()) {
			*out = append(*out, path)
		}
	}
}
