package config

import (
	"errors"
	"strings"

	"github.com/certprov/certprov-adapter/internal/cleartext"
)

// The sections whose endpoint carries google.credentials: the Certificate Provisioning API
// client's and the Verified Access client's.
const (
	SectionGoogle         = "google"
	SectionVerifiedAccess = keyVerifiedAccess
)

// OptOutKey is the key, in every section that has one, of the boolean that accepts sending
// secrets unprotected to a host that is not loopback.
const OptOutKey = "insecureAllowCleartext"

// EndpointCleartext checks the endpoint of section (SectionGoogle or SectionVerifiedAccess), to
// which the client sends an OAuth access token for creds: plain http is refused unless it goes to
// loopback or allowed (section.insecureAllowCleartext) is set, in which case the exposure is
// returned to be logged. Credentials type none sends no token, so any endpoint is fine. Validate
// and the API clients both call it, so that a refusal reads the same wherever it happens.
func EndpointCleartext(section, endpoint string, creds Credentials, allowed bool) (warning *cleartext.Exposure, err error) {
	if endpoint == "" || creds.Type == CredentialsNone {
		return nil, nil
	}
	return EndpointRule(section).URL(endpoint, allowed)
}

// EndpointRule is the rule for the endpoint of section (SectionGoogle or SectionVerifiedAccess),
// which the API clients apply with the names of these settings.
func EndpointRule(section string) cleartext.Rule {
	return cleartext.Rule{
		Setting: joinPath(section, "endpoint"),
		OptOut:  joinPath(section, OptOutKey),
		Secret:  "the OAuth access token of google.credentials",
	}
}

// DSNCleartext checks journal.dsn: it must reach only this machine (loopback or a unix socket) or
// verify the server's TLS certificate (sslmode=verify-ca or verify-full), unless allowed
// (journal.insecureAllowCleartext) is set, in which case the exposure is returned to be logged.
// PGSSLMODE and the other PG* variables count, as they do when pgx connects. Validate and
// the PostgreSQL journal both call it. Messages never contain the DSN's password.
func DSNCleartext(dsn string, allowed bool) (warning *cleartext.Exposure, err error) {
	rule := cleartext.Rule{
		Setting: "journal.dsn",
		OptOut:  joinPath("journal", OptOutKey),
		Secret:  "the password and journal data",
	}
	return rule.PostgresDSN(dsn, allowed)
}

// cleartextProblem records a refusal from EndpointCleartext or DSNCleartext at path, the setting
// it is about, without repeating the path in the message.
func cleartextProblem(ps *problems, path string, err error) {
	if err == nil {
		return
	}
	msg := err.Error()
	var e *cleartext.Exposure
	if errors.As(err, &e) {
		msg = e.Message()
	}
	msg, _ = strings.CutPrefix(msg, path+": ")
	ps.add(path, "%s", msg)
}
