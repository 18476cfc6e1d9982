package est

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// estServer is a running GlobalSign estserver with its mock CA (an issuing CA under a root)
// and the files a connector needs to talk to it.
type estServer struct {
	URL     string // https://127.0.0.1:port
	Root    *x509.Certificate
	Issuing *x509.Certificate

	TLSCAFile   string // trust for the server's TLS certificate
	CACertsFile string // the mock CA's certificates, issuing first
	// A client certificate from the CA the server accepts client certificates from, and one
	// from a CA it does not know.
	ClientCert, ClientKey           string
	OtherClientCert, OtherClientKey string
	// An expired client certificate from the accepted client CA.
	ExpiredClientCert, ExpiredClientKey string
	ClientCA                            *x509.Certificate

	tlsCA *testCA
	log   string
}

// startESTServer runs estserver on a free loopback port until the test ends. It skips (or fails
// in CI) when the binary is not installed.
func startESTServer(t *testing.T) *estServer {
	t.Helper()
	bin := testservers.Binary(t, "estserver")
	dir := t.TempDir()

	root := newRootCA(t, "estserver test root")
	issuing := root.sub(t, "estserver test issuing CA")
	tlsCA := newRootCA(t, "estserver test TLS CA")
	clientCA := newRootCA(t, "adapter client CA")
	otherCA := newRootCA(t, "unknown client CA")

	s := &estServer{Root: root.cert, Issuing: issuing.cert, ClientCA: clientCA.cert, tlsCA: tlsCA, log: filepath.Join(dir, "estserver.log")}
	s.TLSCAFile = writeCerts(t, dir, "tls-ca.crt", tlsCA.cert)
	s.CACertsFile = writeCerts(t, dir, "ca.crt", issuing.cert, root.cert)
	caKey := writeKey(t, dir, "ca.key", issuing.key)
	serverCert, serverKey := tlsCA.tlsPair(t, dir, "server", true)
	clientCAFile := writeCerts(t, dir, "client-ca.crt", clientCA.cert)
	s.ClientCert, s.ClientKey = clientCA.tlsPair(t, dir, "adapter", false)
	s.OtherClientCert, s.OtherClientKey = otherCA.tlsPair(t, dir, "stranger", false)
	s.ExpiredClientCert, s.ExpiredClientKey = clientCA.expiredClientPair(t, dir, "expired")

	addr := testservers.FreeAddr(t)
	s.URL = "https://" + addr
	// The format is cmd/estserver/config.go of github.com/globalsign/est v1.0.6.
	cfg, err := json.Marshal(map[string]any{
		"mock_ca": map[string]any{"certificates": s.CACertsFile, "private_key": caKey},
		"tls": map[string]any{
			"listen_address": addr,
			"certificates":   serverCert,
			"private_key":    serverKey,
			"client_cas":     []string{clientCAFile},
		},
		"healthcheck_password": "unused",
		"timeout":              30,
		"log_file":             s.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := writeFile(t, dir, "estserver.json", cfg)

	cmd := exec.Command(bin, "-config", cfgFile)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start estserver: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			t.Logf("estserver output:\n%s\nestserver log (tail):\n%s", out.String(), tail(b, 4000))
		}
	})
	s.waitReady(t, exited, &out)
	return s
}

// waitReady polls /cacerts until the server answers; the server has no readiness signal.
func (s *estServer) waitReady(t *testing.T, exited <-chan struct{}, out *bytes.Buffer) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(s.tlsCA.cert)}}, Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("estserver exited at startup:\n%s", out.String())
		default:
		}
		resp, err := client.Get(s.URL + "/.well-known/est/cacerts")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("estserver did not answer within 30s (last error %v):\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// roots is the pool certificates from this server chain to.
func (s *estServer) roots() *x509.CertPool { return pool(s.Root) }

// settings returns connector settings for this server; extra entries are added or override.
func (s *estServer) settings(extra ca.Settings) ca.Settings {
	out := ca.Settings{
		"url": s.URL,
		"tls": map[string]any{"caFile": s.TLSCAFile},
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// connector builds a connector for settings and fails the test when it cannot.
func newConnector(t testing.TB, name string, settings ca.Settings) *Connector {
	t.Helper()
	c, err := ca.New(Type, settings, ca.Env{Name: name, Logger: zaptest.NewLogger(t), BaseDir: t.TempDir()})
	if err != nil {
		t.Fatalf("new connector %s: %v", name, err)
	}
	return c.(*Connector)
}

// front is an EST reverse proxy a test puts in front of the real server: it counts enrollment
// requests per device key and can demand basic authentication or a client certificate (estserver
// has no basic authentication for EST and only verifies client certificates if given) or defer
// the first enrollment of each CSR with a 202 (estserver's deferred trigger always defers).
type front struct {
	srv    *httptest.Server
	CAFile string // trust for the front's TLS certificate
	URL    string

	user, password string
	clientCAs      *x509.CertPool // when set, a client certificate from these is required
	deferFirst     bool

	proxy *httputil.ReverseProxy

	mu        sync.Mutex
	holding   bool           // defer every enrollment with a 202 until released (an approval queue)
	refused   int            // requests without the right basic credentials
	requests  map[string]int // simpleenroll requests per device key
	forwarded map[string]int // of which reached the server
	paths     []string
}

// newFront starts a front for target.
func newFront(t *testing.T, target *estServer, configure func(*front)) *front {
	t.Helper()
	u, err := url.Parse(target.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &front{requests: map[string]int{}, forwarded: map[string]int{}}
	if configure != nil {
		configure(f)
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Del("Authorization")
		},
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(target.tlsCA.cert)}},
	}
	f.srv = httptest.NewUnstartedServer(f)
	if f.clientCAs != nil {
		f.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: f.clientCAs}
		// Offer HTTP/2 as estserver and production servers do: a refused client certificate
		// must still be named.
		f.srv.EnableHTTP2 = true
		// Refused handshakes are what the tests provoke; the connector's errors report them.
		f.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.URL = f.srv.URL
	f.CAFile = writeCerts(t, t.TempDir(), "front.crt", f.srv.Certificate())
	return f
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.paths = append(f.paths, r.URL.Path)
	f.mu.Unlock()
	if f.user != "" {
		user, password, ok := r.BasicAuth()
		if !ok || user != f.user || password != f.password {
			f.mu.Lock()
			f.refused++
			f.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Basic realm="est"`)
			http.Error(w, "401 authorization required", http.StatusUnauthorized)
			return
		}
	}
	if strings.HasSuffix(r.URL.Path, "/simpleenroll") {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		key := csrKey(body)
		f.mu.Lock()
		n := f.requests[key]
		f.requests[key]++
		deferred := (f.deferFirst && n == 0) || f.holding
		if !deferred {
			f.forwarded[key]++
		}
		f.mu.Unlock()
		if deferred {
			// Ten minutes, as estserver's own trigger says: the engine caps it at its max backoff.
			w.Header().Set("Retry-After", "600")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	f.proxy.ServeHTTP(w, r)
}

// hold makes the front defer every enrollment until hold(false).
func (f *front) hold(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holding = on
}

// csrKey identifies a base64 CSR body by its public key; "" when it is not one.
func csrKey(body []byte) string {
	der, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(body)))
	if err != nil {
		return ""
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return ""
	}
	return spkiKey(csr.RawSubjectPublicKeyInfo)
}

func spkiKey(spki []byte) string {
	sum := sha256.Sum256(spki)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// counts returns how many enrollments for the device key reached the front and the server.
func (f *front) counts(spki []byte) (requests, forwarded int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := spkiKey(spki)
	return f.requests[k], f.forwarded[k]
}

func (f *front) refusals() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

func (f *front) seenPaths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.paths...)
}
