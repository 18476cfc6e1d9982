// Package catls builds the TLS client configuration that CA connectors share: a CA bundle to
// trust, a client certificate for mutual TLS, and a server name override.
package catls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// Options is the `tls:` block of a connector's settings.
type Options struct {
	// CAFile is a PEM bundle of the roots to trust for the CA server; empty trusts the system
	// roots.
	CAFile string `mapstructure:"caFile"`
	// CertFile and KeyFile are a client certificate and key for mutual TLS.
	CertFile string `mapstructure:"certFile"`
	KeyFile  string `mapstructure:"keyFile"`
	// ServerName overrides the name checked in the server's certificate.
	ServerName string `mapstructure:"serverName"`
}

// Check reports what is wrong with o without reading its files (ca.Check), as *ca.SettingError
// at "tls.<key>".
func (o Options) Check() error {
	if (o.CertFile == "") != (o.KeyFile == "") {
		missing := "tls.keyFile"
		if o.CertFile == "" {
			missing = "tls.certFile"
		}
		return ca.SettingErrorf(missing, "required: tls.certFile and tls.keyFile go together")
	}
	return nil
}

// Config returns the tls.Config for o; relative paths resolve through env. Problems are
// *ca.SettingError at "tls.<key>".
func (o Options) Config(env ca.Env) (*tls.Config, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		pemBytes, err := os.ReadFile(env.Path(o.CAFile))
		if err != nil {
			return nil, ca.SettingErrorf("tls.caFile", "%w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, ca.SettingErrorf("tls.caFile", "%q: no PEM certificates", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(env.Path(o.CertFile), env.Path(o.KeyFile))
		if err != nil {
			return nil, ca.SettingErrorf("tls.certFile", "with tls.keyFile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// HTTPClient returns an HTTP client that uses o and gives up on a call after timeout (the whole
// exchange, body included).
func (o Options) HTTPClient(env ca.Env, timeout time.Duration) (*http.Client, error) {
	cfg, err := o.Config(env)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.Proxy = http.ProxyFromEnvironment
	// HTTP/1.1 only: CA calls are few and small, and over HTTP/2 a refused client certificate
	// surfaces as "client conn could not be established" instead of the TLS alert an operator
	// needs to see.
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// Do sends req with client and also reports whether the whole request was written to the
// server. A connector uses it for requests that make a CA issue: when such a request failed
// after it was delivered, the CA may have issued, and asking again could issue twice.
func Do(client *http.Client, req *http.Request) (resp *http.Response, delivered bool, err error) {
	ctx, wrote := TraceDelivery(req.Context())
	resp, err = client.Do(req.WithContext(ctx))
	return resp, wrote(), err
}

// TraceDelivery is Do's delivery report for requests a vendor SDK sends with ctx: wrote reports
// whether any request made with the returned context was written to the server in full.
func TraceDelivery(ctx context.Context) (traced context.Context, wrote func() bool) {
	var done atomic.Bool
	trace := &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				done.Store(true)
			}
		},
	}
	return httptrace.WithClientTrace(ctx, trace), done.Load
}

// Held returns the TLS client certificate cfg presents, as a held certificate for the expiry
// metrics (ca.CertificateHolder); none without one.
func Held(cfg *tls.Config) []ca.HeldCertificate {
	if cfg == nil || len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return nil
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
			return nil
		}
	}
	return []ca.HeldCertificate{{Role: ca.RoleClient, Cert: leaf}}
}

// ClientTLS returns the TLS configuration of a client built by HTTPClient; nil for another.
func ClientTLS(c *http.Client) *tls.Config {
	if c == nil {
		return nil
	}
	if tr, ok := c.Transport.(*http.Transport); ok {
		return tr.TLSClientConfig
	}
	return nil
}

// Cause is the error of an HTTP call without the *url.Error around it, which repeats the method
// and URL a connector's message names already; errors.Is(err, context.Canceled) still works.
func Cause(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// NotVerified reports whether err is the CA's TLS certificate failing verification (an unknown
// authority, a name it does not carry, an invalid certificate): a call that will fail the same
// way until the configuration changes, so connectors classify it as permanent.
func NotVerified(err error) bool {
	var (
		verr *tls.CertificateVerificationError
		aerr x509.UnknownAuthorityError
		herr x509.HostnameError
		ierr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &aerr) || errors.As(err, &herr) || errors.As(err, &ierr)
}
