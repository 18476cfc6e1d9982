// Package cleartext decides whether a connection would carry a secret unprotected beyond this
// machine: plain http, or PostgreSQL without a verified TLS server, to a host that is not
// loopback. Configuration validation and the clients that open these connections ask the same
// questions here, so `certprov-adapter validate` refuses exactly what the daemon refuses when it
// starts, in the same words.
//
// Every rule has an explicit opt-out, for networks the operator trusts (a service mesh that
// encrypts, a private link); while one is in effect the client logs a warning at start-up.
package cleartext

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// LoopbackHost reports whether host (a name or an IP literal, without port or brackets) is this
// machine: "localhost", 127.0.0.0/8 or ::1, IPv4-mapped forms included. Other names are not
// resolved: a DNS answer proves nothing about where the packets go, and it can change.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Rule names a setting that carries a secret, so that a refusal says which key, what would be
// exposed and how to opt out.
type Rule struct {
	// Setting is the configuration path of the URL or DSN, e.g. "google.endpoint".
	Setting string
	// OptOut is the configuration path of the boolean that accepts the risk, e.g.
	// "google.insecureAllowCleartext".
	OptOut string
	// Secret says what would travel unprotected, e.g. "the OAuth access token".
	Secret string
}

// Exposure is a connection that would carry a rule's secret unprotected to a host that is not
// loopback. As an error it is the refusal; with the opt-out set it is logged with Warn instead.
// Its text never contains a password or a query string.
type Exposure struct {
	Rule
	// Host is where the secret would go: a host name or address, with the port for PostgreSQL.
	Host string
	// Problem says what is wrong, naming the secret and the host, without the setting.
	Problem string
	// Fix says how to protect the secret.
	Fix string
}

// Message is the refusal without the setting's path, for callers that report the path apart
// (configuration problems).
func (e *Exposure) Message() string {
	return fmt.Sprintf("%s; %s, or set %s: true to accept the risk on a network you trust", e.Problem, e.Fix, e.OptOut)
}

// Error is the refusal, starting with the setting's path.
func (e *Exposure) Error() string { return e.Setting + ": " + e.Message() }

// Warn logs the exposure as accepted: the opt-out is in effect. A nil exposure (nothing to
// accept) logs nothing, so callers may pass on what a check returned.
func (e *Exposure) Warn(log *zap.Logger) {
	if e == nil || log == nil {
		return
	}
	log.Warn("secrets travel unprotected: "+e.OptOut+" is set",
		zap.String("setting", e.Setting), zap.String("host", e.Host), zap.String("problem", e.Problem))
}

// judge turns an exposure into the result of a check: nothing, an accepted warning, or the
// refusal.
func judge(e *Exposure, allowed bool) (*Exposure, error) {
	switch {
	case e == nil:
		return nil, nil
	case allowed:
		return e, nil
	default:
		return nil, e
	}
}

// URL checks a URL that the rule's secret is sent to. https, and http to a loopback host, protect
// it: URL returns (nil, nil). Plain http elsewhere is refused with an *Exposure error unless
// allowed (the opt-out is set), in which case the exposure comes back as a warning for the
// caller to log. A URL that does not parse, or has another scheme, is the caller's to report.
func (r Rule) URL(raw string, allowed bool) (warning *Exposure, err error) {
	u, perr := url.Parse(raw)
	if perr != nil || !strings.EqualFold(u.Scheme, "http") || u.Host == "" || LoopbackHost(u.Hostname()) {
		return nil, nil
	}
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String() // no user:password@, no query
	return judge(&Exposure{
		Rule:    r,
		Host:    u.Hostname(),
		Problem: fmt.Sprintf("%s is plain http: %s would travel in clear to %s, which is not this machine", shown, r.Secret, u.Hostname()),
		Fix:     "use https",
	}, allowed)
}

// PostgresDSN checks a PostgreSQL connection string (a postgres:// URL or key=value pairs) the
// way pgx will connect with it, PG* environment variables (PGSSLMODE, PGHOST, …) and service
// files included. Every host it may reach must be a unix socket, loopback, or reached over TLS
// that verifies the server (sslmode=verify-ca or verify-full, or sslrootcert with require, as in
// libpq). Otherwise the result is as for URL. A string pgx cannot parse is an error that does not
// quote it.
func (r Rule) PostgresDSN(dsn string, allowed bool) (warning *Exposure, err error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: not a usable PostgreSQL connection string: %s", r.Setting, parseProblem(err))
	}
	for _, t := range targets(cfg) {
		if t.unix || LoopbackHost(t.host) || t.verified() {
			continue
		}
		return judge(r.postgresExposure(t), allowed)
	}
	return nil, nil
}

// target is one host pgx may connect to, with the TLS configurations it tries there in order
// (nil: without TLS).
type target struct {
	host, addr string
	unix       bool
	tls        []*tls.Config
}

// verified reports whether every attempt at the target uses TLS that checks the server's
// certificate: with the hostname (verify-full), or at least the chain (verify-ca, which pgx
// implements with InsecureSkipVerify and its own VerifyPeerCertificate).
func (t target) verified() bool {
	for _, c := range t.tls {
		if c == nil || (c.InsecureSkipVerify && c.VerifyPeerCertificate == nil) {
			return false
		}
	}
	return true
}

// targets groups pgx's primary configuration and its fallbacks by host and port: pgx expresses
// sslmode prefer and allow, and multiple hosts, as fallbacks.
func targets(cfg *pgconn.Config) []target {
	type attempt struct {
		host string
		port uint16
		tls  *tls.Config
	}
	attempts := []attempt{{cfg.Host, cfg.Port, cfg.TLSConfig}}
	for _, f := range cfg.Fallbacks {
		attempts = append(attempts, attempt{f.Host, f.Port, f.TLSConfig})
	}
	var out []target
	for _, a := range attempts {
		network, addr := pgconn.NetworkAddress(a.host, a.port)
		if n := len(out); n > 0 && out[n-1].addr == addr {
			out[n-1].tls = append(out[n-1].tls, a.tls)
			continue
		}
		out = append(out, target{host: a.host, addr: addr, unix: network == "unix", tls: []*tls.Config{a.tls}})
	}
	return out
}

// postgresExposure names the sslmode that produced t's attempts (pgx's configTLS: disable → no
// TLS; allow → none, then unverified; prefer → unverified, then none; require → unverified).
func (r Rule) postgresExposure(t target) *Exposure {
	unverified := func(c *tls.Config) bool { return c != nil && c.InsecureSkipVerify && c.VerifyPeerCertificate == nil }
	var problem string
	switch {
	case len(t.tls) == 1 && t.tls[0] == nil:
		problem = fmt.Sprintf("sslmode=disable: %s would travel in clear to %s", r.Secret, t.addr)
	case len(t.tls) == 2 && t.tls[0] == nil:
		problem = fmt.Sprintf("sslmode=allow tries without TLS first: %s would travel in clear to %s", r.Secret, t.addr)
	case len(t.tls) == 2 && t.tls[1] == nil:
		problem = fmt.Sprintf("sslmode=prefer (the default when neither the DSN nor PGSSLMODE sets one) falls back to no TLS and does not verify the server: %s could travel in clear to %s", r.Secret, t.addr)
	case len(t.tls) == 1 && unverified(t.tls[0]):
		problem = fmt.Sprintf("sslmode=require encrypts but does not verify the server: whoever answers for %s would get %s", t.addr, r.Secret)
	default:
		problem = fmt.Sprintf("the connection to %s does not verify the server: %s could reach someone else", t.addr, r.Secret)
	}
	if mode := os.Getenv("PGSSLMODE"); mode != "" {
		problem += fmt.Sprintf(" (PGSSLMODE=%s applies where the DSN sets no sslmode)", mode)
	}
	return &Exposure{
		Rule:    r,
		Host:    t.addr,
		Problem: problem,
		Fix:     "use sslmode=verify-full (with sslrootcert naming the server's CA if the system roots do not hold it)",
	}
}

// parseProblem is pgx's reason for refusing a connection string without the string itself:
// pgx masks the passwords it can recognise, but in a malformed string it may not find them.
func parseProblem(err error) string {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return "cannot parse it"
	}
	// ParseConfigError reads "cannot parse `<masked string>`: <reason>".
	msg := pe.Error()
	if i := strings.LastIndex(msg, "`: "); i >= 0 {
		return msg[i+len("`: "):]
	}
	return "cannot parse it"
}
