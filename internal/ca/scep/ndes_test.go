package scep

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/csr"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseNDESAdminPage reads recorded-style NDES admin pages in the encodings NDES uses.
func TestParseNDESAdminPage(t *testing.T) {
	tests := []struct {
		file        string
		contentType string
		body        func([]byte) []byte // optional rewrite of the file
		want        string
		wantErr     error
	}{
		{file: "ndes_admin_en.html", contentType: "text/html", want: "7E2A9C41F0B3D865"},
		{file: "ndes_admin_en_utf16le.html", contentType: "text/html; charset=utf-16", want: "7E2A9C41F0B3D865"},
		{file: "ndes_admin_en_utf16le.html", contentType: "text/html", want: "7E2A9C41F0B3D865"},
		{file: "ndes_admin_de.html", contentType: "text/html; charset=utf-8", want: "0C5D83B2A97E14F6"},
		{file: "ndes_admin_de_utf16le_nobom.html", contentType: "text/html", want: "0C5D83B2A97E14F6"},
		{file: "ndes_admin_de_utf16le_nobom.html", contentType: "text/html; charset=UTF-16", want: "0C5D83B2A97E14F6"},
		{file: "ndes_admin_de.html", body: func(b []byte) []byte { // a thumbprint without blanks
			return bytes.Replace(b, []byte("4A1B7C2D 9E3F5A6B 8C0D2E4F 6A8B0C1D"), []byte("4A1B7C2D9E3F5A6B8C0D2E4F6A8B0C1D"), 1)
		}, want: "0C5D83B2A97E14F6"},
		{file: "ndes_admin_de.html", body: func(b []byte) []byte { // two password-like values
			return bytes.Replace(b, []byte("<B> 0C5D83B2A97E14F6 </B>"), []byte("<B> 0C5D83B2A97E14F6 </B> <B>ABCDEF0123</B>"), 1)
		}, wantErr: errNDESAmbiguous},
		{file: "ndes_admin_cache_full.html", wantErr: errNDESCacheFull},
		{file: "ndes_admin_no_permission.html", wantErr: errNDESNoPermission},
		{file: "ndes_admin_en.html", body: func(b []byte) []byte {
			return bytes.Replace(b, []byte("<B> 7E2A9C41F0B3D865 </B>"), nil, 1)
		}, wantErr: errNDESNoPassword},
		{file: "ndes_admin_en.html", body: func([]byte) []byte { return []byte("Service Unavailable") }, wantErr: errNDESNotAPage},
	}
	for _, tc := range tests {
		t.Run(tc.file+" "+tc.contentType, func(t *testing.T) {
			body := readTestdata(t, tc.file)
			if tc.body != nil {
				body = tc.body(body)
			}
			got, err := parseNDESAdminPage(body, tc.contentType)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Reveal() != tc.want {
				t.Fatalf("challenge %q, want %q", got.Reveal(), tc.want)
			}
		})
	}
}

// ndesAdmin is an httptest NDES admin page behind basic authentication.
type ndesAdmin struct {
	user, password string
	page           func() []byte // the page to serve; nil: 500
	contentType    string
	hits           atomic.Int64
	srv            *httptest.Server
}

func newNDESAdmin(t testing.TB, a *ndesAdmin) *ndesAdmin {
	t.Helper()
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != a.user || p != a.password {
			w.Header().Set("WWW-Authenticate", `Basic realm="ndes"`)
			http.Error(w, "401 - Unauthorized: Access is denied due to invalid credentials.", http.StatusUnauthorized)
			return
		}
		a.hits.Add(1)
		if a.page == nil {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", a.contentType)
		_, _ = w.Write(a.page())
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// ndesPage renders the English admin page with the given password, UTF-16LE with a BOM as NDES
// sends it.
func ndesPage(t testing.TB, password string) func() []byte {
	t.Helper()
	tmpl := string(readTestdata(t, "ndes_admin_en.html"))
	page := strings.Replace(tmpl, "7E2A9C41F0B3D865", password, 1)
	return func() []byte {
		out := []byte{0xff, 0xfe}
		for _, r := range page {
			out = append(out, byte(r), byte(r>>8)) // the page is ASCII
		}
		return out
	}
}

func writePasswordFile(t testing.TB, pw string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ndes-password")
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDynamicChallengeHTTP fetches the challenge from an admin page and classifies its failures.
func TestDynamicChallengeHTTP(t *testing.T) {
	const accountPassword = "Acc0unt-Passw0rd"
	tests := []struct {
		name      string
		page      func(testing.TB) func() []byte
		password  string
		want      string
		wantClass ca.Class
		wantErr   string
	}{
		{"page with password", func(t testing.TB) func() []byte { return ndesPage(t, "5D2C8E4F1A3B6C7D") }, accountPassword, "5D2C8E4F1A3B6C7D", 0, ""},
		{"wrong account password", func(t testing.TB) func() []byte { return ndesPage(t, "5D2C8E4F1A3B6C7D") }, "wrong", "", ca.ClassPermanent, "HTTP 401"},
		{"cache full", func(t testing.TB) func() []byte {
			return func() []byte { return readTestdata(t, "ndes_admin_cache_full.html") }
		}, accountPassword, "", ca.ClassRetryable, "password cache is full"},
		{"no permission", func(t testing.TB) func() []byte {
			return func() []byte { return readTestdata(t, "ndes_admin_no_permission.html") }
		}, accountPassword, "", ca.ClassPermanent, "sufficient permission"},
		{"server error", func(testing.TB) func() []byte { return nil }, accountPassword, "", ca.ClassRetryable, "HTTP 500"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			admin := newNDESAdmin(t, &ndesAdmin{user: `CONTOSO\svc-ndes`, password: accountPassword, page: tc.page(t), contentType: "text/html"})
			c := newTestConnector(t, ca.Settings{
				"url": "https://ndes.invalid/certsrv/mscep/mscep.dll",
				"dynamicChallenge": map[string]any{
					"url":          admin.srv.URL + "/certsrv/mscep_admin/",
					"username":     `CONTOSO\svc-ndes`,
					"passwordFile": writePasswordFile(t, tc.password),
				},
			})
			attrs, err := c.CSRAttributes(ctxT(t), &ca.Request{Key: "p"})
			if tc.wantErr != "" {
				class, hint := ca.Classify(err)
				if err == nil || class != tc.wantClass || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("CSRAttributes: %v (%v), want %v containing %q", err, class, tc.wantClass, tc.wantErr)
				}
				if strings.Contains(tc.wantErr, "cache is full") && hint != ndesCacheFullRetry {
					t.Errorf("cache full: retry hint %v, want %v (NDES passwords expire slowly)", hint, ndesCacheFullRetry)
				}
				if strings.Contains(err.Error(), accountPassword) {
					t.Fatalf("error %q reveals the account password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, err := csr.ChallengePassword(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if len(attrs) != 1 || !attrs[0].Type.Equal(want.Type) || !bytes.Equal(attrs[0].Values[0].FullBytes, want.Values[0].FullBytes) {
				t.Fatalf("attributes %+v, want the challenge password %q", attrs, tc.want)
			}
		})
	}
}
