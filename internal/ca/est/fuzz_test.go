package est

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/catest"
)

// estAnswers are seeds in every form EST servers answer /cacerts and /simpleenroll with.
func estAnswers(t testing.TB, der []byte) [][]byte {
	b64 := base64.StdEncoding.EncodeToString(der)
	return [][]byte{
		[]byte(b64),
		[]byte(wrap(b64, 76, "\r\n")),
		der,
		pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: der}),
		[]byte(base64.StdEncoding.EncodeToString(indefinite(t, der, 3))),
	}
}

// FuzzDecodeCerts reads arbitrary /cacerts and /simpleenroll bodies: no panic, and the
// certificates of an accepted answer come back unchanged from the certs-only structure a server
// would make of them.
func FuzzDecodeCerts(f *testing.F) {
	root := newRootCA(f, "EST fuzz root")
	issuer := root.sub(f, "EST fuzz issuing CA")
	for _, a := range estAnswers(f, certsOnly(f, issuer.cert, root.cert)) {
		f.Add(a)
	}
	f.Add([]byte("<html>hello</html>"))
	f.Add([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, 0x80, 0x00, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, body []byte) {
		certs, err := decodeCerts(body)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			return // fetchCACerts refuses it; selectLeaf finds no leaf
		}
		again, err := decodeCerts([]byte(base64.StdEncoding.EncodeToString(certsOnly(t, certs...))))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded answer: %d certificates, %v; want %d", len(again), err, len(certs))
		}
		for i := range certs {
			if !bytes.Equal(again[i].Raw, certs[i].Raw) {
				t.Fatalf("certificate %d changed in the round trip", i)
			}
		}
	})
}

// FuzzEnrollment runs arbitrary /cacerts and /simpleenroll answers through what Issue does with
// them: pick the device's certificate and verify its chain. Whatever is accepted carries the
// device key byte for byte and chains to a certificate from /cacerts through certificates the
// server sent, without the self-signed root.
func FuzzEnrollment(f *testing.F) {
	root := newRootCA(f, "EST fuzz root")
	issuer := root.sub(f, "EST fuzz issuing CA")
	req := requestWithCN(f, catest.DeviceKey(f, catest.P256), "est fuzz device")
	leaf := issuer.issue(f, req.CSR.PublicKey, "est fuzz device")
	cacerts := certsOnly(f, issuer.cert, root.cert)
	for _, answer := range [][]byte{
		certsOnly(f, leaf),
		certsOnly(f, root.cert, issuer.cert, leaf),
		certsOnly(f, issuer.issue(f, newKey(f).Public(), "another key")),
		certsOnly(f, newRootCA(f, "stranger").issue(f, req.CSR.PublicKey, "est fuzz device")),
	} {
		for _, a := range estAnswers(f, answer) {
			f.Add([]byte(base64.StdEncoding.EncodeToString(cacerts)), a)
		}
	}
	f.Add(certsOnly(f, root.cert), certsOnly(f, leaf, issuer.cert))
	f.Add(certsOnly(f, issuer.cert), certsOnly(f, leaf))
	now := time.Now()
	f.Fuzz(func(t *testing.T, cacertsBody, enrollBody []byte) {
		anchors, err := decodeCerts(cacertsBody)
		if err != nil || len(anchors) == 0 {
			return
		}
		certs, err := decodeCerts(enrollBody)
		if err != nil {
			return
		}
		leaf, others, err := selectLeaf(certs, req.CSR.PublicKey, req.CSR.RawSubjectPublicKeyInfo)
		if err != nil {
			return
		}
		if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, req.CSR.RawSubjectPublicKeyInfo) || len(others) != len(certs)-1 {
			t.Fatalf("selected a certificate for another key, or lost %d others", len(certs)-1-len(others))
		}
		chain, roots, err := buildChain(leaf, others, anchors, now)
		if err != nil {
			return
		}
		from := append(append([]*x509.Certificate(nil), anchors...), others...)
		for _, c := range chain {
			if !slices.ContainsFunc(from, c.Equal) {
				t.Fatalf("chain certificate %q came from neither answer", c.Subject)
			}
			if selfSigned(c) {
				t.Fatalf("chain holds the self-signed %q", c.Subject)
			}
		}
		catest.CheckIssued(t, req, &ca.Issued{Leaf: leaf, Chain: chain, Roots: roots}, roots)
	})
}
