package scep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/logging"
)

// challengeSource yields the challenge password for one request. Errors never contain it.
type challengeSource interface {
	challenge(ctx context.Context) (logging.Secret, error)
}

// staticChallenge is a password from the configuration.
type staticChallenge logging.Secret

func (s staticChallenge) challenge(context.Context) (logging.Secret, error) {
	return logging.Secret(s), nil
}

// fileChallenge reads the password from a file at every request, so that it can be rotated (or
// mounted from a secret store) without a restart.
type fileChallenge struct {
	path    string
	setting string // as configured, for messages
}

func (f fileChallenge) challenge(context.Context) (logging.Secret, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		// A missing file may be a secret mount that is not there yet.
		return "", ca.Retryable(fmt.Errorf("challengeFile %q: %w", f.setting, err), 0)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", ca.Permanentf("challengeFile %q is empty", f.setting)
	}
	return logging.Secret(pw), nil
}

// ndesChallenge fetches a one-time password from the NDES admin page (mscep_admin) as the
// adapter's service account: with HTTP Basic authentication, or with NTLM (Windows
// authentication, which IIS enables there by default; its client is wrapped in an NTLM
// negotiator). Kerberos is not spoken.
type ndesChallenge struct {
	url          string
	username     string
	passwordFile string
	auth         string // AuthBasic or AuthNTLM
	client       *http.Client
}

// ndesCacheFullRetry is the retry hint when NDES's password cache is full: its passwords expire
// after 60 minutes by default, so asking again within seconds is pointless.
const ndesCacheFullRetry = 5 * time.Minute

func (n *ndesChallenge) challenge(ctx context.Context) (logging.Secret, error) {
	const op = "dynamicChallenge"
	b, err := os.ReadFile(n.passwordFile)
	if err != nil {
		return "", ca.Retryable(fmt.Errorf("%s.passwordFile: %w", op, err), 0)
	}
	password := strings.TrimSpace(string(b))
	req, err := http.NewRequest(http.MethodGet, n.url, nil)
	if err != nil {
		return "", ca.Permanentf("%s.url: %v", op, err)
	}
	req.SetBasicAuth(n.username, password)
	where := req.URL.Host + req.URL.Path
	resp, err := n.client.Do(req.WithContext(ctx))
	if err != nil {
		return "", transportError(ctx, "fetching the NDES challenge password", where, err)
	}
	defer resp.Body.Close()
	body, err := readLimited(resp)
	if err != nil {
		return "", transportError(ctx, "fetching the NDES challenge password", where, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized && n.auth == AuthNTLM:
		return "", ca.Permanentf("%s: the NDES admin page at %s refused the NTLM credentials of %q (HTTP 401, offers %s); check username (DOMAIN\\user or user@domain) and passwordFile, and that Windows authentication with NTLM is enabled on mscep_admin",
			op, where, n.username, offered(resp))
	case resp.StatusCode == http.StatusUnauthorized:
		return "", ca.Permanentf("%s: the NDES admin page at %s refused the credentials of %q (HTTP 401, offers %s); check username and passwordFile, and that Basic authentication is enabled on mscep_admin (for Windows authentication set dynamicChallenge.auth: ntlm)",
			op, where, n.username, offered(resp))
	case resp.StatusCode == http.StatusForbidden:
		return "", ca.Permanentf("%s: the NDES admin page at %s denies %q (HTTP 403)", op, where, n.username)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return "", ca.Permanentf("%s: the NDES admin page at %s redirects (HTTP %d to %q); set dynamicChallenge.url to the final address",
			op, where, resp.StatusCode, resp.Header.Get("Location"))
	case resp.StatusCode != http.StatusOK:
		// The page body is never quoted: it may hold a password.
		return "", statusError("fetching the NDES challenge password", where, resp, nil)
	}
	pw, err := parseNDESAdminPage(body, resp.Header.Get("Content-Type"))
	switch {
	case errors.Is(err, errNDESCacheFull):
		return "", ca.Retryable(fmt.Errorf("%s from %s: %w", op, where, err), ndesCacheFullRetry)
	case errors.Is(err, errNDESNoPermission):
		return "", ca.Permanent(fmt.Errorf("%s from %s as %q: %w", op, where, n.username, err))
	case err != nil:
		return "", ca.Permanent(fmt.Errorf("%s from %s: %w", op, where, err))
	}
	return pw, nil
}

// offered names the authentication schemes a 401 offers (WWW-Authenticate), without their data.
func offered(resp *http.Response) string {
	var schemes []string
	for _, h := range resp.Header.Values("WWW-Authenticate") {
		scheme, _, _ := strings.Cut(strings.TrimSpace(h), " ")
		if scheme != "" && !slices.Contains(schemes, scheme) {
			schemes = append(schemes, scheme)
		}
	}
	if len(schemes) == 0 {
		return "no scheme"
	}
	return strings.Join(schemes, ", ")
}

// readLimited reads at most maxResponse bytes of a body.
func readLimited(resp *http.Response) ([]byte, error) {
	return io.ReadAll(io.LimitReader(resp.Body, maxResponse))
}

// Errors of the NDES admin page that are not a password.
var (
	errNDESCacheFull = errors.New("NDES answered that its password cache is full: passwords are handed out faster than they are used or expire; " +
		"raise PasswordMax or lower PasswordValidity under HKLM\\Software\\Microsoft\\Cryptography\\MSCEP, or wait for passwords to expire")
	errNDESNoPermission = errors.New("NDES answered that the account does not have sufficient permission: " +
		"it needs Enroll (and Read) on the certificate template and must be allowed to use the NDES admin page (local administrator on the NDES server, or CA administrator when NDES runs on the CA)")
	errNDESNoPassword = errors.New("no challenge password found in the NDES admin page: " +
		"check dynamicChallenge.url (…/certsrv/mscep_admin/), and whether NDES is set to use a single static password instead")
	errNDESNotAPage  = errors.New("the answer is not an NDES admin page")
	errNDESAmbiguous = errors.New("the NDES admin page shows several password-like values; cannot tell which is the challenge")
)

var (
	// The English page says "The enrollment challenge password is: <B> 1A2B3C4D5E6F7A8B </B>".
	reNDESEnglish = regexp.MustCompile(`(?is)enrollment\s+challenge\s+password\s+is:?\s*(?:<[^>]*>\s*)*<b>\s*([^<\s]+)\s*</b>`)
	// Other languages are recognised by the page's bold elements: the password is the bold token
	// of hexadecimal digits, while the CA thumbprint (also bold) comes in blank-separated groups.
	reBold           = regexp.MustCompile(`(?is)<b>(.*?)</b>`)
	reNDESPassword   = regexp.MustCompile(`^[0-9A-Fa-f]{8,64}$`)
	reNDESCacheFull  = regexp.MustCompile(`(?i)password\s+cache\s+is\s+full`)
	reNDESPermission = regexp.MustCompile(`(?i)do\s+not\s+have\s+sufficient\s+permission`)
	reNDESThumbprint = regexp.MustCompile(`(?i)thumbprint`)
	reHTMLTag        = regexp.MustCompile(`<[^>]*>`)
)

// parseNDESAdminPage extracts the challenge password from the mscep_admin page. NDES writes the
// page in UTF-16LE (with or without a byte order mark); UTF-8 is accepted too.
func parseNDESAdminPage(body []byte, contentType string) (logging.Secret, error) {
	text := decodePage(body, contentType)
	if reNDESCacheFull.MatchString(text) {
		return "", errNDESCacheFull
	}
	if reNDESPermission.MatchString(text) {
		return "", errNDESNoPermission
	}
	if m := reNDESEnglish.FindStringSubmatch(text); m != nil {
		// An entity may decode to a blank or a control character, which no password has.
		if pw := html.UnescapeString(m[1]); !strings.ContainsFunc(pw, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			return logging.Secret(pw), nil
		}
	}
	var candidates []string
	for _, m := range reBold.FindAllStringSubmatch(text, -1) {
		v := strings.TrimSpace(html.UnescapeString(reHTMLTag.ReplaceAllString(m[1], "")))
		if reNDESPassword.MatchString(v) {
			candidates = append(candidates, v)
		}
	}
	if len(candidates) > 1 {
		// A thumbprint written without blanks is an MD5 or SHA-1 hash (32 or 40 digits); NDES
		// passwords are shorter.
		candidates = slices.DeleteFunc(candidates, func(v string) bool { return len(v) == 32 || len(v) == 40 })
	}
	switch {
	case len(candidates) == 1:
		return logging.Secret(candidates[0]), nil
	case len(candidates) > 1:
		return "", errNDESAmbiguous
	case !strings.Contains(strings.ToLower(text), "<html") && !reNDESThumbprint.MatchString(text):
		return "", errNDESNotAPage
	default:
		return "", errNDESNoPassword
	}
}

// decodePage turns the page into a Go string: UTF-16LE when it says so (BOM or charset) or looks
// like it (NUL in every other byte of ASCII text), else UTF-8.
func decodePage(b []byte, contentType string) string {
	ct := strings.ToLower(contentType)
	switch {
	case bytes.HasPrefix(b, []byte{0xff, 0xfe}):
		return decodeUTF16LE(b[2:])
	case bytes.HasPrefix(b, []byte{0xef, 0xbb, 0xbf}):
		return string(b[3:])
	case strings.Contains(ct, "utf-16") || looksUTF16LE(b):
		return decodeUTF16LE(b)
	}
	if !utf8.Valid(b) {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return string(b)
}

func looksUTF16LE(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	zeros := 0
	n := min(len(b), 200) &^ 1
	for i := 1; i < n; i += 2 {
		if b[i] == 0 {
			zeros++
		}
	}
	return zeros*4 >= n // at least half of the odd bytes
}

func decodeUTF16LE(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
	}
	return string(utf16.Decode(u))
}
