package stepca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/logging"
)

// FuzzSignAnswer feeds arbitrary answers to POST /1.0/sign through the connector's decoding:
// a non-2xx answer is a classified error whose text is printable, bounded and free of the token;
// a 2xx answer either fails as permanent (nothing usable, and not asked again) or yields a leaf
// and chain that a re-encoded answer gives back unchanged.
func FuzzSignAnswer(f *testing.F) {
	fake := newFakeCA(f, nil, "")
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	issuer, leaf := fake.issuer, fake.issue(leafKey.Public())
	const ott = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ1enoifQ.eyJzdWIiOiJkZXZpY2UifQ.c2lnbmF0dXJl"
	answer := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	for _, s := range []struct {
		code       int
		retryAfter string
		body       []byte
	}{
		{201, "", answer(map[string]any{"crt": pemCert(leaf), "ca": pemCert(issuer), "certChain": []string{pemCert(leaf), pemCert(issuer)}})},
		{201, "", answer(map[string]any{"crt": pemCert(leaf), "ca": pemCert(issuer)})},
		{200, "", answer(map[string]any{"certChain": []string{}})},
		{201, "", answer(map[string]any{"certChain": []string{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}})},
		{201, "", []byte("hello")},
		{401, "", answer(stepError{Status: 401, Message: "token " + ott + " already used"})},
		{403, "", answer(stepError{Status: 403, Message: "dns name \"x.evil\" not allowed.\n"})},
		{429, "42", answer(stepError{Status: 429, Message: "slow down"})},
		{503, "7", []byte("<html>\n<body>" + strings.Repeat("busy ", 200) + "</body></html>")},
		{404, "", []byte("404 page not found\n")},
	} {
		f.Add(s.code, s.retryAfter, s.body)
	}
	f.Fuzz(func(t *testing.T, code int, retryAfter string, body []byte) {
		code = 100 + abs(code)%500
		h := http.Header{}
		h.Set("Retry-After", retryAfter)
		var resp signResponse
		err := decodeAnswer("POST /1.0/sign", &http.Response{StatusCode: code, Header: h}, body, &resp, ott)
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, ott) || !utf8.ValidString(msg) || strings.ContainsFunc(msg, unicode.IsControl) {
				t.Fatalf("message not fit for a device: %q", msg)
			}
			if len(msg) > 500 {
				t.Fatalf("message of %d bytes", len(msg))
			}
			if code/100 == 2 && !ca.IsPermanent(err) {
				t.Fatalf("a 2xx answer that cannot be read is %v, not permanent: step-ca may have signed", err)
			}
			if class, _ := ca.Classify(err); class == ca.ClassPending {
				t.Fatalf("step-ca has no pending answers: %v", err)
			}
			return
		}
		if code/100 != 2 {
			t.Fatalf("HTTP %d accepted", code)
		}
		issued, err := resp.issued()
		if err != nil {
			return // Issue fails the request as permanent
		}
		if issued.Leaf == nil {
			t.Fatal("no leaf")
		}
		chain := []string{pemCert(issued.Leaf)}
		for _, c := range issued.Chain {
			chain = append(chain, pemCert(c))
		}
		again, err := (&signResponse{CertChain: chain}).issued()
		if err != nil || !again.Leaf.Equal(issued.Leaf) || len(again.Chain) != len(issued.Chain) {
			t.Fatalf("re-encoded answer: %v", err)
		}
		for i := range issued.Chain {
			if !again.Chain[i].Equal(issued.Chain[i]) {
				t.Fatalf("chain certificate %d changed", i)
			}
		}
	})
}

// FuzzProvisionerKey decrypts arbitrary encryptedKey values of GET /provisioners with the
// configured password: no panic, refusals are permanent and never show the password, and a key
// that is accepted signs tokens that verify with the provisioner's published public key.
func FuzzProvisionerKey(f *testing.F) {
	fake, other := newFakeCA(f, nil, ""), newFakeCA(f, nil, "")
	provKey, password := fake.provKey, fake.password
	f.Add(encryptJWK(f, other.provKey, password))
	f.Add(encryptJWK(f, provKey, password))
	f.Add(encryptJWK(f, provKey, "another password"))
	pub := provKey.Public()
	f.Add(encryptJWK(f, &pub, password))
	f.Add("eyJhbGciOiJQQkVTMi1IUzI1NitBMTI4S1ciLCJlbmMiOiJBMjU2R0NNIiwicDJjIjoxMDAwLCJwMnMiOiJBQUFBIn0..AAAA.AAAA.AAAA")
	f.Add("")
	c := &Connector{provisioner: fakeProvisioner, password: logging.Secret(password)}
	f.Fuzz(func(t *testing.T, encryptedKey string) {
		priv, err := c.privateKey(&jwkProvisioner{publicKey: pub, encryptedKey: encryptedKey})
		if err != nil {
			if !ca.IsPermanent(err) || strings.Contains(err.Error(), password) {
				t.Fatalf("refusal %v: not permanent, or shows the password", err)
			}
			return
		}
		if priv.IsPublic() || !sameKey(priv, &pub) {
			t.Fatal("accepted a key that is not the provisioner's private key")
		}
		alg, err := signatureAlgorithm(priv)
		if err != nil {
			return // bootstrap refuses it as permanent
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: priv.Key}, nil)
		if err != nil {
			return // an alg the key cannot sign with: bootstrap refuses it as permanent
		}
		jws, err := signer.Sign([]byte("token"))
		if err != nil {
			t.Fatalf("accepted key cannot sign: %v", err)
		}
		if _, err := jws.Verify(pub.Key); err != nil {
			t.Fatalf("token signed with the accepted key does not verify with the provisioner's: %v", err)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -(n + 1)
	}
	return n
}
