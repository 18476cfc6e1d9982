package verifiedaccess

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/metrics/metricstest"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
)

// Test keys are expensive to generate (RSA); share them across tests.
var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaSmall *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	ec384Key *ecdsa.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaSmall, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if ec384Key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// spkacSpec describes an SPKAC for tests; zero values take the right ones for the key.
type spkacSpec struct {
	key       crypto.Signer
	challenge string
	alg       asn1.ObjectIdentifier
	params    asn1.RawValue
	hash      crypto.Hash // default SHA-256
	// challengeTag overrides the challenge's ASN.1 tag (default IA5String).
	challengeTag int
	// rawSignature sends an ECDSA signature as the 64-byte r||s a TPM returns instead of DER.
	rawSignature bool
	// trailingSig appends a byte to the signature, so that it is neither DER nor raw r||s.
	trailingSig bool
	tamper      bool
	trailing    bool
}

// chromeOSChallenge is the challenge ChromeOS puts in an SPKAC: the hex of n random bytes, 20 on
// a TPM 1.2 device and 32 on TPM 2.0 (CryptoUtilityImpl::CreateSPKACInternal).
func chromeOSChallenge(t testing.TB, n int) string {
	t.Helper()
	return hex.EncodeToString(randomBytes(t, n))
}

// chromeOSSPKAC is an SPKAC as ChromeOS builds it: a random hex challenge and NULL parameters
// for both algorithms (X509_ALGOR_set0(alg, nid, V_ASN1_NULL, NULL)).
func chromeOSSPKAC(key crypto.Signer, challenge string, rawSignature bool) spkacSpec {
	alg := wire.OIDSHA256WithRSA
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = wire.OIDECDSAWithSHA256
	}
	return spkacSpec{key: key, challenge: challenge, alg: alg, params: asn1.NullRawValue, rawSignature: rawSignature}
}

// makeSPKAC builds a DER SPKAC as Chrome (or a forger) would.
func makeSPKAC(t testing.TB, s spkacSpec) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	tag := s.challengeTag
	if tag == 0 {
		tag = asn1.TagIA5String
	}
	pkac, err := asn1.Marshal(struct {
		SPKI      asn1.RawValue
		Challenge asn1.RawValue
	}{
		SPKI:      asn1.RawValue{FullBytes: spki},
		Challenge: asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: []byte(s.challenge)},
	})
	if err != nil {
		t.Fatal(err)
	}
	hash := s.hash
	if hash == 0 {
		hash = crypto.SHA256
	}
	h := hash.New()
	h.Write(pkac)
	digest := h.Sum(nil)
	alg := pkix.AlgorithmIdentifier{Algorithm: s.alg, Parameters: s.params}
	var sig []byte
	switch k := s.key.(type) {
	case *rsa.PrivateKey:
		if alg.Algorithm == nil {
			alg = pkix.AlgorithmIdentifier{Algorithm: wire.OIDSHA256WithRSA, Parameters: asn1.NullRawValue}
		}
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, hash, digest)
	case *ecdsa.PrivateKey:
		if alg.Algorithm == nil {
			alg = pkix.AlgorithmIdentifier{Algorithm: wire.OIDECDSAWithSHA256}
		}
		sig, err = ecdsa.SignASN1(rand.Reader, k, digest)
		if err == nil && s.rawSignature {
			sig = rawECDSA(t, sig)
		}
	default:
		t.Fatalf("key %T", s.key)
	}
	if err != nil {
		t.Fatal(err)
	}
	if s.tamper {
		sig[len(sig)/2] ^= 0x01
	}
	if s.trailingSig {
		sig = append(sig, 0)
	}
	der, err := asn1.Marshal(struct {
		PKAC      asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: pkac}, alg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	if s.trailing {
		der = append(der, 0)
	}
	return der
}

// rawECDSA re-encodes a DER ECDSA P-256 signature as 32-byte r || 32-byte s.
func rawECDSA(t testing.TB, der []byte) []byte {
	t.Helper()
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 64)
	rs.R.FillBytes(out[:32])
	rs.S.FillBytes(out[32:])
	return out
}

// withCA completes a test enrollment profile with the built-in CA and a client certificate's
// usages and lifetime.
func withCA(p config.VerifiedAccessProfile) config.VerifiedAccessProfile {
	p.CAConnection = "builtin"
	p.KeyUsage = []string{"digitalSignature"}
	p.ExtKeyUsage = []string{"clientAuth"}
	p.Validity = 24 * time.Hour
	return p
}

// count is the value of a counter or gauge, as an integer.
func count(c prometheus.Collector) int { return int(testutil.ToFloat64(c)) }

// series lists the samples of family name gathered from reg (metricstest.Series).
func series(t *testing.T, reg prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	return metricstest.Series(metricstest.Gather(t, reg), name)
}
