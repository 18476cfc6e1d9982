package scep

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/smallstep/pkcs7"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// SCEP message attributes (RFC 8894 §3.2.1), signed attributes of the PKCS#7 SignedData.
var (
	oidMessageType    = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 2}
	oidPKIStatus      = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 3}
	oidFailInfo       = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 4}
	oidSenderNonce    = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 5}
	oidRecipientNonce = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 6}
	oidTransactionID  = asn1.ObjectIdentifier{2, 16, 840, 1, 113733, 1, 9, 7}
	oidFailInfoText   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 24, 1} // id-scep-failInfoText
)

// Message types and statuses, as the PrintableStrings SCEP carries them.
const (
	msgCertRep  = "3"
	msgPKCSReq  = "19"
	msgCertPoll = "20"

	statusSuccess = "0"
	statusFailure = "2"
	statusPending = "3"
)

// failInfoName names RFC 8894 failInfo values for messages.
func failInfoName(v string) string {
	switch v {
	case "0":
		return "badAlg"
	case "1":
		return "badMessageCheck"
	case "2":
		return "badRequest"
	case "3":
		return "badTime"
	case "4":
		return "badCertId"
	default:
		return fmt.Sprintf("unknown failInfo %q", v)
	}
}

// failInfoHint says what a failInfo usually means in practice, so that the failure message
// shown to a user or an operator points somewhere.
func failInfoHint(v string) string {
	switch v {
	case "0":
		return "it does not accept the encryption or digest algorithm"
	case "1":
		return "it could not verify the request's signature or decrypt it"
	case "2":
		return "a wrong, used or expired challenge password, or its policy refused the request"
	case "3":
		return "the clocks of the adapter and the server differ too much"
	case "4":
		return "it does not know the request it was asked about"
	default:
		return "it refused the request"
	}
}

// pkiMessage is a SCEP pkiMessage: a PKIOperation request or a CertRep.
type pkiMessage struct {
	MessageType    string
	TransactionID  string
	SenderNonce    []byte
	RecipientNonce []byte
	PKIStatus      string
	FailInfo       string
	FailInfoText   string
	// Content is the signed content: the DER of an enveloped PKCS#7 (the encrypted pkcsPKIEnvelope),
	// or empty in a FAILURE or PENDING CertRep.
	Content []byte
	// Signer is the certificate whose key signed the message (parsed messages only).
	Signer *x509.Certificate
	// Certificates are those the message carried (parsed messages only).
	Certificates []*x509.Certificate
}

// signPKIMessage encodes m as PKCS#7 SignedData signed by cert/key with the given digest, carrying
// cert and any extra certificates.
func signPKIMessage(m *pkiMessage, cert *x509.Certificate, key crypto.PrivateKey, digest digestAlg, extra ...*x509.Certificate) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(m.Content)
	if err != nil {
		return nil, fmt.Errorf("signed data: %w", err)
	}
	sd.SetDigestAlgorithm(digest.oid())
	attrs := []pkcs7.Attribute{
		{Type: oidTransactionID, Value: m.TransactionID},
		{Type: oidMessageType, Value: m.MessageType},
	}
	if m.PKIStatus != "" {
		attrs = append(attrs, pkcs7.Attribute{Type: oidPKIStatus, Value: m.PKIStatus})
	}
	if m.FailInfo != "" {
		attrs = append(attrs, pkcs7.Attribute{Type: oidFailInfo, Value: m.FailInfo})
	}
	if m.FailInfoText != "" {
		der, err := asn1.MarshalWithParams(m.FailInfoText, "utf8")
		if err != nil {
			return nil, fmt.Errorf("failInfoText: %w", err)
		}
		attrs = append(attrs, pkcs7.Attribute{Type: oidFailInfoText, Value: asn1.RawValue{FullBytes: der}})
	}
	if len(m.SenderNonce) > 0 {
		attrs = append(attrs, pkcs7.Attribute{Type: oidSenderNonce, Value: m.SenderNonce})
	}
	if len(m.RecipientNonce) > 0 {
		attrs = append(attrs, pkcs7.Attribute{Type: oidRecipientNonce, Value: m.RecipientNonce})
	}
	for _, c := range extra {
		sd.AddCertificate(c)
	}
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{ExtraSignedAttributes: attrs}); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	der, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("encode signed data: %w", err)
	}
	return der, nil
}

// errBadSignature marks a message whose signature does not verify.
var errBadSignature = errors.New("the signature does not verify")

// parsePKIMessage decodes and verifies a SCEP pkiMessage. known are certificates to look for the
// signer among besides those the message carries (RFC 8894 allows a server to leave its own
// out, since the client has it from GetCACert). It does not decide whether the signer is
// trusted: that is the caller's business.
func parsePKIMessage(der []byte, known []*x509.Certificate) (m *pkiMessage, err error) {
	// The PKCS#7 parser sees bytes from the network; turn any panic on hostile input into an error
	// rather than taking the adapter down.
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("malformed PKCS#7 message: %v", r)
		}
	}()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#7 message: %w", err)
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("PKCS#7 message has %d signers, want 1", len(p7.Signers))
	}
	m = &pkiMessage{Certificates: p7.Certificates, Content: p7.Content}
	p7.Certificates = append(append([]*x509.Certificate(nil), p7.Certificates...), known...)
	m.Signer = p7.GetOnlySigner()
	if m.Signer == nil {
		return nil, errors.New("the signer's certificate is neither in the message nor known")
	}
	if err := p7.Verify(); err != nil {
		// The library's text runs over several lines (expected and actual digests); the message
		// may end up on a device.
		return nil, fmt.Errorf("%w: %s", errBadSignature, ca.ServerText(err.Error(), 200))
	}
	required := []struct {
		oid asn1.ObjectIdentifier
		dst *string
		nm  string
	}{
		{oidTransactionID, &m.TransactionID, "transactionID"},
		{oidMessageType, &m.MessageType, "messageType"},
	}
	for _, a := range required {
		if err := p7.UnmarshalSignedAttribute(a.oid, a.dst); err != nil {
			return nil, fmt.Errorf("attribute %s: %w", a.nm, err)
		}
	}
	// Optional attributes: absent ones stay empty and the caller decides what it needs.
	_ = p7.UnmarshalSignedAttribute(oidPKIStatus, &m.PKIStatus)
	_ = p7.UnmarshalSignedAttribute(oidFailInfo, &m.FailInfo)
	_ = p7.UnmarshalSignedAttribute(oidFailInfoText, &m.FailInfoText)
	_ = p7.UnmarshalSignedAttribute(oidSenderNonce, &m.SenderNonce)
	_ = p7.UnmarshalSignedAttribute(oidRecipientNonce, &m.RecipientNonce)
	return m, nil
}

// openEnvelope decrypts the enveloped PKCS#7 in a message's content with the recipient's key.
func openEnvelope(content []byte, cert *x509.Certificate, key crypto.PrivateKey) (plain []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			plain, err = nil, fmt.Errorf("malformed envelope: %v", r)
		}
	}()
	if len(content) == 0 {
		return nil, errors.New("the message has no encrypted content")
	}
	p7, err := pkcs7.Parse(content)
	if err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	plain, err = p7.Decrypt(cert, key)
	if err != nil {
		return nil, fmt.Errorf("decrypt envelope: %w", err)
	}
	return plain, nil
}

// certsOnly returns the certificates of a degenerate certs-only PKCS#7 (or a bare certificate,
// which some servers send instead).
func certsOnly(der []byte) (certs []*x509.Certificate, err error) {
	defer func() {
		if r := recover(); r != nil {
			certs, err = nil, fmt.Errorf("malformed certificate bundle: %v", r)
		}
	}()
	if c, err := x509.ParseCertificate(der); err == nil {
		return []*x509.Certificate{c}, nil
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("neither a certificate nor a PKCS#7 bundle: %w", err)
	}
	if len(p7.Certificates) == 0 {
		return nil, errors.New("the PKCS#7 bundle holds no certificates")
	}
	return p7.Certificates, nil
}

// degenerate encodes certificates as a certs-only PKCS#7.
func degenerate(certs []*x509.Certificate) ([]byte, error) {
	var buf bytes.Buffer
	for _, c := range certs {
		buf.Write(c.Raw)
	}
	return pkcs7.DegenerateCertificate(buf.Bytes())
}

// Enveloping is done here rather than by pkcs7.Encrypt, which takes its algorithm from a
// package-wide variable (unsafe with connections that use different ones at once) and offers
// no 3DES.
var (
	oidData           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEnvelopedData  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidRSAEncryption  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidDESEDE3CBC     = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidAES128CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES256CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	errNoRSARecipient = errors.New("SCEP encrypts to an RSA key")
)

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type keyTransRecipientInfo struct {
	Version                int
	IssuerAndSerial        issuerAndSerial
	KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedKey           []byte
}

type encryptedContentInfo struct {
	ContentType      asn1.ObjectIdentifier
	Algorithm        pkix.AlgorithmIdentifier
	EncryptedContent asn1.RawValue // [0] IMPLICIT OCTET STRING
}

type envelopedData struct {
	Version              int
	RecipientInfos       []keyTransRecipientInfo `asn1:"set"`
	EncryptedContentInfo encryptedContentInfo
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue // [0] EXPLICIT
}

// envelope encrypts content for recipient (RSA PKCS#1 v1.5 key transport, which every SCEP
// server decrypts) with the given content cipher, as an enveloped PKCS#7.
func envelope(content []byte, recipient *x509.Certificate, alg cipherAlg) ([]byte, error) {
	pub, ok := recipient.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w, but %s has a %T", errNoRSARecipient, recipient.Subject, recipient.PublicKey)
	}
	var (
		oid     asn1.ObjectIdentifier
		keySize int
		newBC   func([]byte) (cipher.Block, error)
	)
	switch alg {
	case cipherAES256:
		oid, keySize, newBC = oidAES256CBC, 32, aes.NewCipher
	case cipherAES128:
		oid, keySize, newBC = oidAES128CBC, 16, aes.NewCipher
	case cipher3DES:
		oid, keySize, newBC = oidDESEDE3CBC, 24, des.NewTripleDESCipher
	default:
		return nil, fmt.Errorf("no content cipher chosen (%v)", alg)
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := newBC(key)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, block.BlockSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	pad := block.BlockSize() - len(content)%block.BlockSize()
	ciphertext := append(bytes.Clone(content), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ciphertext, ciphertext)

	// RFC 8894 key transport is rsaEncryption (PKCS #1 v1.5): SCEP servers, NDES among them,
	// accept nothing else.
	encryptedKey, err := rsa.EncryptPKCS1v15(rand.Reader, pub, key) //lint:ignore SA1019 the SCEP wire format requires it

	if err != nil {
		return nil, fmt.Errorf("encrypt the content key: %w", err)
	}
	ivDER, err := asn1.Marshal(iv)
	if err != nil {
		return nil, err
	}
	ed := envelopedData{
		Version: 0,
		RecipientInfos: []keyTransRecipientInfo{{
			Version:                0,
			IssuerAndSerial:        issuerAndSerial{Issuer: asn1.RawValue{FullBytes: recipient.RawIssuer}, Serial: recipient.SerialNumber},
			KeyEncryptionAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue},
			EncryptedKey:           encryptedKey,
		}},
		EncryptedContentInfo: encryptedContentInfo{
			ContentType:      oidData,
			Algorithm:        pkix.AlgorithmIdentifier{Algorithm: oid, Parameters: asn1.RawValue{FullBytes: ivDER}},
			EncryptedContent: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: ciphertext},
		},
	}
	edDER, err := asn1.Marshal(ed)
	if err != nil {
		return nil, fmt.Errorf("encode enveloped data: %w", err)
	}
	return asn1.Marshal(contentInfo{
		ContentType: oidEnvelopedData,
		Content:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: edDER},
	})
}

// envelopeCipher reports the content encryption algorithm of an enveloped PKCS#7 (for tests and
// for the test responder, which answers in kind).
func envelopeCipher(der []byte) (cipherAlg, error) {
	var ci contentInfo
	if _, err := asn1.Unmarshal(der, &ci); err != nil {
		return 0, err
	}
	var ed envelopedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
		return 0, err
	}
	switch oid := ed.EncryptedContentInfo.Algorithm.Algorithm; {
	case oid.Equal(oidAES256CBC):
		return cipherAES256, nil
	case oid.Equal(oidAES128CBC):
		return cipherAES128, nil
	case oid.Equal(oidDESEDE3CBC):
		return cipher3DES, nil
	default:
		return 0, fmt.Errorf("content cipher %v", oid)
	}
}

// issuerAndSubject is the content of a CertPoll (GetCertInitial) request (RFC 8894 §3.3.3).
type issuerAndSubject struct {
	Issuer  asn1.RawValue
	Subject asn1.RawValue
}
