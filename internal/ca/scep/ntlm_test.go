package scep

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	//lint:ignore SA1019 NTLM's password hash is MD4 by definition (MS-NLMP 3.3.2)
	"golang.org/x/crypto/md4"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/csr"
)

// ntlmAdmin is an NDES admin page behind IIS Windows authentication: it offers Negotiate and
// NTLM, runs the NTLM handshake (MS-NLMP: NEGOTIATE, CHALLENGE, AUTHENTICATE) on one
// connection, and verifies the client's NTLMv2 response against the account's password. It
// is written from the specification, not from the client library, and refuses what IIS refuses:
// Basic credentials, an AUTHENTICATE on another connection than its CHALLENGE, a response made
// with another password, user or server challenge, NTLMv1.
type ntlmAdmin struct {
	t                      testing.TB
	user, domain, password string
	page                   func() []byte
	srv                    *httptest.Server

	mu         sync.Mutex
	challenges map[string]ntlmChallenge // by connection (remote address)
	served     int                      // pages served to an authenticated request
	refused    []string                 // why requests were refused
}

type ntlmChallenge struct {
	server     [8]byte
	targetInfo []byte
}

// NEGOTIATE flags the server's CHALLENGE sets (MS-NLMP 2.2.2.5).
const (
	ntlmUnicode         = 0x00000001
	ntlmRequestTarget   = 0x00000004
	ntlmNTLM            = 0x00000200
	ntlmAlwaysSign      = 0x00008000
	ntlmTargetDomain    = 0x00010000
	ntlmExtendedSession = 0x00080000
	ntlmTargetInfo      = 0x00800000
	ntlmVersion         = 0x02000000
	ntlm128             = 0x20000000
	ntlm56              = 0x80000000
)

func newNTLMAdmin(t testing.TB, user, domain, password string, page func() []byte) *ntlmAdmin {
	t.Helper()
	a := &ntlmAdmin{t: t, user: user, domain: domain, password: password, page: page, challenges: map[string]ntlmChallenge{}}
	a.srv = httptest.NewServer(a)
	t.Cleanup(a.srv.Close)
	return a
}

func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

func fromUTF16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

func (a *ntlmAdmin) refuse(w http.ResponseWriter, format string, args ...any) {
	a.mu.Lock()
	a.refused = append(a.refused, fmt.Sprintf(format, args...))
	a.mu.Unlock()
	w.Header().Add("WWW-Authenticate", "Negotiate")
	w.Header().Add("WWW-Authenticate", "NTLM")
	http.Error(w, "401 - Unauthorized: Access is denied due to invalid credentials.", http.StatusUnauthorized)
}

func (a *ntlmAdmin) refusals() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.refused...)
}

func (a *ntlmAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if scheme != "NTLM" && scheme != "Negotiate" {
		a.refuse(w, "scheme %q", scheme)
		return
	}
	msg, err := base64.StdEncoding.DecodeString(token)
	if err != nil || len(msg) < 12 || !bytes.Equal(msg[:8], []byte("NTLMSSP\x00")) {
		a.refuse(w, "not an NTLM message")
		return
	}
	switch binary.LittleEndian.Uint32(msg[8:]) {
	case 1: // NEGOTIATE: answer a CHALLENGE for this connection
		ch := ntlmChallenge{targetInfo: a.targetInfo()}
		_, _ = rand.Read(ch.server[:])
		a.mu.Lock()
		a.challenges[r.RemoteAddr] = ch
		a.mu.Unlock()
		w.Header().Set("WWW-Authenticate", scheme+" "+base64.StdEncoding.EncodeToString(a.challengeMessage(ch)))
		http.Error(w, "401 - Unauthorized", http.StatusUnauthorized)
	case 3: // AUTHENTICATE: on the connection that got the CHALLENGE
		a.mu.Lock()
		ch, ok := a.challenges[r.RemoteAddr]
		delete(a.challenges, r.RemoteAddr)
		a.mu.Unlock()
		if !ok {
			a.refuse(w, "AUTHENTICATE without a CHALLENGE on this connection")
			return
		}
		if err := a.verify(msg, ch); err != nil {
			a.refuse(w, "%v", err)
			return
		}
		a.mu.Lock()
		a.served++
		a.mu.Unlock()
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(a.page())
	default:
		a.refuse(w, "message type %d", binary.LittleEndian.Uint32(msg[8:]))
	}
}

// targetInfo is the AV_PAIR list of the CHALLENGE (MS-NLMP 2.2.2.1): domain and computer
// names, a timestamp, the end.
func (a *ntlmAdmin) targetInfo() []byte {
	var b []byte
	pair := func(id uint16, v []byte) {
		b = binary.LittleEndian.AppendUint16(b, id)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	pair(2, utf16le(a.domain)) // MsvAvNbDomainName
	pair(1, utf16le("NDES01")) // MsvAvNbComputerName
	ft := uint64(time.Now().UnixNano()/100) + 116444736000000000
	pair(7, binary.LittleEndian.AppendUint64(nil, ft)) // MsvAvTimestamp
	pair(0, nil)                                       // MsvAvEOL
	return b
}

// challengeMessage is the CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2).
func (a *ntlmAdmin) challengeMessage(ch ntlmChallenge) []byte {
	const headerLen = 56
	target := utf16le(a.domain)
	m := append([]byte("NTLMSSP\x00"), 2, 0, 0, 0)
	m = binary.LittleEndian.AppendUint16(m, uint16(len(target)))
	m = binary.LittleEndian.AppendUint16(m, uint16(len(target)))
	m = binary.LittleEndian.AppendUint32(m, headerLen)
	m = binary.LittleEndian.AppendUint32(m, ntlmUnicode|ntlmRequestTarget|ntlmNTLM|ntlmAlwaysSign|ntlmTargetDomain|
		ntlmExtendedSession|ntlmTargetInfo|ntlmVersion|ntlm128|ntlm56)
	m = append(m, ch.server[:]...)
	m = append(m, make([]byte, 8)...)
	m = binary.LittleEndian.AppendUint16(m, uint16(len(ch.targetInfo)))
	m = binary.LittleEndian.AppendUint16(m, uint16(len(ch.targetInfo)))
	m = binary.LittleEndian.AppendUint32(m, uint32(headerLen+len(target)))
	m = append(m, 10, 0, 0x63, 0x45, 0, 0, 0, 15) // version: Windows 10.0 build 17763, NTLM revision 15
	m = append(m, target...)
	return append(m, ch.targetInfo...)
}

// verify checks an AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3) with an NTLMv2 response (3.3.2).
func (a *ntlmAdmin) verify(msg []byte, ch ntlmChallenge) error {
	if len(msg) < 64 {
		return errors.New("AUTHENTICATE too short")
	}
	field := func(at int) ([]byte, error) {
		l, off := int(binary.LittleEndian.Uint16(msg[at:])), int(binary.LittleEndian.Uint32(msg[at+4:]))
		if off+l > len(msg) {
			return nil, fmt.Errorf("field at %d out of bounds", at)
		}
		return msg[off : off+l], nil
	}
	nt, err := field(20)
	if err != nil {
		return err
	}
	domainB, err := field(28)
	if err != nil {
		return err
	}
	userB, err := field(36)
	if err != nil {
		return err
	}
	if len(nt) == 24 {
		return errors.New("NTLMv1 response refused")
	}
	if len(nt) < 16+28 {
		return fmt.Errorf("NT response of %d bytes", len(nt))
	}
	user, domain := fromUTF16le(userB), fromUTF16le(domainB)
	if !strings.EqualFold(user, a.user) || !strings.EqualFold(domain, a.domain) {
		return fmt.Errorf("unknown account %s\\%s", domain, user)
	}
	proof, blob := nt[:16], nt[16:]
	if !bytes.Contains(blob, ch.targetInfo[:len(ch.targetInfo)-4]) {
		return errors.New("the NTLMv2 blob does not carry the server's target info")
	}
	h := md4.New()
	h.Write(utf16le(a.password))
	key := hmacMD5(h.Sum(nil), utf16le(strings.ToUpper(user)+domain))
	if !hmac.Equal(proof, hmacMD5(key, ch.server[:], blob)) {
		return fmt.Errorf("wrong NTLMv2 response for %s\\%s", domain, user)
	}
	return nil
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// TestDynamicChallengeNTLM fetches the challenge from an admin page that speaks only Windows
// authentication: with auth: ntlm the handshake succeeds and the password is the page's; a wrong
// account password, or Basic, is refused with a message that says so and never holds it.
func TestDynamicChallengeNTLM(t *testing.T) {
	const accountPassword = "Acc0unt-Passw0rd"
	tests := []struct {
		name, username, password, auth string
		wantErr                        string
	}{
		{"DOMAIN\\user", `CONTOSO\svc-ndes`, accountPassword, "ntlm", ""},
		{"lower-case account", `contoso\SVC-NDES`, accountPassword, "ntlm", ""},
		{"wrong password", `CONTOSO\svc-ndes`, "wrong", "ntlm", "refused the NTLM credentials"},
		{"another account", `CONTOSO\someone`, accountPassword, "ntlm", "refused the NTLM credentials"},
		{"basic against Windows authentication", `CONTOSO\svc-ndes`, accountPassword, "", "offers Negotiate, NTLM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			admin := newNTLMAdmin(t, "svc-ndes", "CONTOSO", accountPassword, ndesPage(t, "5D2C8E4F1A3B6C7D"))
			dyn := map[string]any{
				"url":          admin.srv.URL + "/certsrv/mscep_admin/",
				"username":     tc.username,
				"passwordFile": writePasswordFile(t, tc.password),
			}
			if tc.auth != "" {
				dyn["auth"] = tc.auth
			}
			c := newTestConnector(t, ca.Settings{"url": "https://ndes.invalid/certsrv/mscep/mscep.dll", "dynamicChallenge": dyn})
			attrs, err := c.CSRAttributes(ctxT(t), &ca.Request{Key: "p"})
			if tc.wantErr != "" {
				if err == nil || !ca.IsPermanent(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("CSRAttributes: %v; want a permanent error containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), accountPassword) {
					t.Fatalf("error %q reveals the account password", err)
				}
				if len(admin.refusals()) == 0 {
					t.Error("the server refused nothing")
				}
				return
			}
			if err != nil {
				t.Fatalf("CSRAttributes: %v (server refused: %q)", err, admin.refusals())
			}
			want, err := csr.ChallengePassword("5D2C8E4F1A3B6C7D")
			if err != nil {
				t.Fatal(err)
			}
			if len(attrs) != 1 || !bytes.Equal(attrs[0].Values[0].FullBytes, want.Values[0].FullBytes) {
				t.Fatalf("attributes %+v, want the page's challenge password", attrs)
			}
			// Each request authenticates afresh: NDES hands out one password per page view.
			if _, err := c.CSRAttributes(ctxT(t), &ca.Request{Key: "p2"}); err != nil {
				t.Fatalf("second CSRAttributes: %v", err)
			}
			admin.mu.Lock()
			served := admin.served
			admin.mu.Unlock()
			if served != 2 {
				t.Errorf("pages served to authenticated requests: %d, want 2", served)
			}
		})
	}
}

// TestNTLMAdminRefusesWhatIISRefuses proves the fake is strict: Basic credentials, an
// AUTHENTICATE on a new connection, and a response to another server challenge are refused.
func TestNTLMAdminRefusesWhatIISRefuses(t *testing.T) {
	admin := newNTLMAdmin(t, "svc-ndes", "CONTOSO", "pw", func() []byte { return []byte("<html>page</html>") })
	get := func(client *http.Client, auth string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, admin.srv.URL, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(`CONTOSO\svc-ndes:pw`))
	if resp := get(http.DefaultClient, basic); resp.StatusCode != http.StatusUnauthorized ||
		strings.Join(resp.Header.Values("WWW-Authenticate"), ",") != "Negotiate,NTLM" {
		t.Errorf("Basic: HTTP %d, WWW-Authenticate %v", resp.StatusCode, resp.Header.Values("WWW-Authenticate"))
	}
	// A NEGOTIATE on one connection, then a forged AUTHENTICATE on a fresh one.
	negotiate := "NTLM " + base64.StdEncoding.EncodeToString(append([]byte("NTLMSSP\x00"), 1, 0, 0, 0, 0, 0, 0, 0))
	if resp := get(http.DefaultClient, negotiate); resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "NTLM TlRMTVNTUAACAAAA") {
		t.Fatalf("NEGOTIATE: HTTP %d, %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	authenticate := append([]byte("NTLMSSP\x00"), 3, 0, 0, 0)
	authenticate = append(authenticate, make([]byte, 64)...)
	if resp := get(fresh, "NTLM "+base64.StdEncoding.EncodeToString(authenticate)); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("AUTHENTICATE on another connection: HTTP %d", resp.StatusCode)
	}
	got := admin.refusals()
	if len(got) != 2 || !strings.Contains(got[0], `scheme "Basic"`) || !strings.Contains(got[1], "without a CHALLENGE on this connection") {
		t.Errorf("refusals %q", got)
	}
}

func TestDynamicChallengeAuthSetting(t *testing.T) {
	err := Check(ca.Settings{
		"url": "https://ndes.example.com/certsrv/mscep/mscep.dll", "signerKeyFile": "s.key", "signerCertFile": "s.crt",
		"dynamicChallenge": map[string]any{"url": "https://ndes.example.com/certsrv/mscep_admin/", "username": `CONTOSO\svc`,
			"passwordFile": "pw", "auth": "kerberos"},
	})
	var se *ca.SettingError
	if !errors.As(err, &se) || se.Key != "dynamicChallenge.auth" || !strings.Contains(err.Error(), `"kerberos": want basic or ntlm`) {
		t.Fatalf("Check: %v; want a problem at dynamicChallenge.auth", err)
	}
}
