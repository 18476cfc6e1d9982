package ejbca

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// FuzzCertificateAnswer: whatever EJBCA (or something in its place) answers to an enrollment,
// a finalize or a search, reading it either fails or yields a leaf whose serial is the one
// stated and a chain without nil entries.
func FuzzCertificateAnswer(f *testing.F) {
	root := catest.NewRoot(f, "fuzz")
	der := base64.StdEncoding.EncodeToString(root.Cert.Raw)
	good, _ := json.Marshal(map[string]any{"certificate": der, "serial_number": strings.ToUpper(root.Cert.SerialNumber.Text(16)),
		"response_format": "DER", "certificate_chain": []string{der}})
	f.Add(good)
	f.Add([]byte(`{"certificate":` + string(mustJSON(string(pemutil.Encode(root.Cert)))) + `,"response_format":"PEM"}`))
	f.Add([]byte(`{"certificate":"` + der + `","serial_number":"00"}`))
	f.Add([]byte(`{"certificate":"` + der + `","certificate_chain":["", null, "AAAA"]}`))
	f.Add([]byte(`{"certificate":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}`))
	f.Add([]byte(`{"certificates":[],"more_results":false}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r certificateResponse
		if json.Unmarshal(b, &r) != nil {
			return
		}
		p, err := r.parse()
		if err != nil {
			if p != nil {
				t.Fatal("an error with a certificate")
			}
			return
		}
		if p.leaf == nil {
			t.Fatal("accepted without a leaf")
		}
		if r.SerialNumber != "" {
			want, _ := parseHex(r.SerialNumber)
			if want != strings.ToUpper(p.leaf.SerialNumber.Text(16)) {
				t.Fatalf("serial %q accepted for %X", r.SerialNumber, p.leaf.SerialNumber)
			}
		}
		for i, c := range p.chain {
			if c == nil {
				t.Fatalf("chain[%d] is nil", i)
			}
		}
	})
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// FuzzErrorAnswer: every error answer is classified permanent or retryable (never pending: an
// approval is read before), its message is one printable line of bounded length, and the
// enrollment code sent with the request never appears in it.
func FuzzErrorAnswer(f *testing.F) {
	f.Add(400, []byte(`{"error_code":400,"error_message":"Password s3cretCode123 is wrong"}`), "s3cretCode123")
	f.Add(422, []byte(`{"error_code":422,"error_message":"Wrong number of OU fields in Subject DN."}`), "code")
	f.Add(503, []byte(`{"error_code":503,"error_message":"Device was unavailable."}`), "code")
	f.Add(500, []byte("<html>General failure.\x00\x1b[31m</html>"), "code")
	f.Add(403, []byte(`{"error_message":"`+strings.Repeat("é", 400)+`"}`), "x")
	f.Add(302, []byte(`null`), "x")
	c := &Connector{name: "corp", eeProfile: "EEP"}
	f.Fuzz(func(t *testing.T, status int, body []byte, secret string) {
		if status < 100 || status > 999 {
			return
		}
		err := c.statusError("EJBCA corp: issue k", &answer{status: status, body: body}, secret)
		class, _ := ca.Classify(err)
		if class != ca.ClassPermanent && class != ca.ClassRetryable {
			t.Fatalf("class %v: %v", class, err)
		}
		if (status == 400 || status == 403 || status == 404 || status == 422) && class != ca.ClassPermanent {
			t.Fatalf("HTTP %d classified %v", status, class)
		}
		if (status == 503 || status == 500) && class != ca.ClassRetryable {
			t.Fatalf("HTTP %d classified %v", status, class)
		}
		msg := errorText(body, secret)
		if !utf8.ValidString(msg) || strings.ContainsFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) {
			t.Fatalf("unprintable: %q", msg)
		}
		if len(msg) > maxMessage+len("…") {
			t.Fatalf("%d bytes", len(msg))
		}
		// A code as the connector makes them (base64url) never survives, unless the redaction
		// mark itself contains it.
		token := len(secret) >= 4 && !strings.ContainsFunc(secret, func(r rune) bool {
			return !(r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_'))
		})
		if token && !strings.Contains("[redacted]", secret) && strings.Contains(err.Error(), secret) {
			t.Fatalf("secret %q in %q", secret, err)
		}
	})
}

// FuzzApprovalAnswer: an approval answer (a 202 body, or the text of a 400) yields a request id
// within the API's int32, or none; a ticket made with it reads back the same.
func FuzzApprovalAnswer(f *testing.F) {
	f.Add([]byte(`{"status_code":202,"info_message":"Request with Id '12' is waiting for approval","link":"https://h/ejbca/ejbca-rest-api/v1/certificate/12/finalize","request_id":12}`))
	f.Add([]byte(`{"status_code":202,"link":"https://h/ejbca/ejbca-rest-api/v1/certificate/99999999999/finalize"}`))
	f.Add([]byte(`{"request_id":"-1","info_message":"id: 7"}`))
	f.Add([]byte(`{"info_message":"Add End Entity Action have been added for approval by authorized administrators."}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(id int64, ok bool) {
			if !ok {
				return
			}
			if id < 0 || id > math.MaxInt32 {
				t.Fatalf("id %d", id)
			}
			tk := ticket{RequestID: id, Code: "c"}
			back, err := decodeTicket(tk.encode())
			if err != nil || back != tk {
				t.Fatalf("ticket %+v read back as %+v, %v", tk, back, err)
			}
		}
		var r approvalResponse
		if json.Unmarshal(b, &r) == nil {
			check(r.approvalID())
		}
		check(idFromText(string(b)))
		if _, err := decodeTicket(string(b)); err == nil && !strings.HasPrefix(string(b), ticketPrefix) {
			t.Fatalf("%q read as a ticket", b)
		}
	})
}
