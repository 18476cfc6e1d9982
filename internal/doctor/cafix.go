package doctor

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca/local"
)

// caFix says what to do about a CA connection whose health check failed with err. Connectors
// do not all wrap their transport errors, so the message is read too.
func caFix(key string, c CAConnection, err error, timeout time.Duration) string {
	host := "the CA"
	if u, perr := url.Parse(c.URL); perr == nil && u.Host != "" {
		host = u.Host
	}
	msg := err.Error()
	var (
		dnsErr   *net.DNSError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		netErr   net.Error
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(msg, "connection refused"):
		return fmt.Sprintf("nothing accepts connections at %s: start the CA, or correct %s.url", host, key)
	case errors.As(err, &dnsErr) || strings.Contains(msg, "no such host"):
		return fmt.Sprintf("%s does not resolve: correct %s.url, or the DNS of this host", host, key)
	case errors.As(err, &unknown) || strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Sprintf("the certificate of %s is not trusted here: set %s.tls.caFile to the bundle of the CA that signed it", host, key)
	case errors.As(err, &hostname) || strings.Contains(msg, "certificate is valid for"):
		return fmt.Sprintf("the certificate of %s does not name it: put a name it carries in %s.url, or set %s.tls.serverName", host, key, key)
	case (errors.As(err, &invalid) && invalid.Reason == x509.Expired) && c.Type != local.Type:
		return fmt.Sprintf("the TLS certificate of %s expired: renew it on the server", host)
	case strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate") || strings.Contains(msg, "unknown certificate authority"):
		return fmt.Sprintf("%s refused the client certificate: set %s.tls.certFile and keyFile to one it accepts", host, key)
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) || strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "Timeout"):
		return fmt.Sprintf("no answer from %s within %s: check the firewall and proxy between this host and it, or raise %s.timeout", host, timeout, key)
	case c.Type == local.Type && strings.Contains(msg, "expired"):
		return fmt.Sprintf("the CA certificate expired: create a new CA (certprov-adapter init-ca) or renew this one, and point %s.certificateFile and keyFile at it", key)
	case c.Type == local.Type && strings.Contains(msg, "not valid before"):
		return "the CA certificate is not valid yet: check this host's clock"
	case strings.Contains(msg, "HTTP 401") || strings.Contains(msg, "HTTP 403"):
		return fmt.Sprintf("the CA refused the adapter's credentials: check %s's username and passwordFile, provisioner, headerFiles or tls client certificate", key)
	case strings.Contains(msg, "fingerprint"):
		return fmt.Sprintf("the CA's certificate does not match the pinned fingerprint: check %s.caCertFingerprint or rootFingerprint against the CA", key)
	}
	return fmt.Sprintf("check %s (url, tls, credentials) against the CA; the detail says what it answered", key)
}
