package scep

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/csr"
)

// CSRAttributes returns the challenge password attribute, fetched anew for every request (a
// dynamic NDES password is good for one enrolment only). It is called before the device signs,
// since the password must be inside the signed request.
func (c *Connector) CSRAttributes(ctx context.Context, _ *ca.Request) ([]csr.Attribute, error) {
	if c.challenge == nil {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("challenge password: %w", err), 0)
	}
	pw, err := c.challenge.challenge(ctx)
	if err != nil {
		return nil, err
	}
	attr, err := csr.ChallengePassword(pw.Reveal())
	if err != nil {
		// csr's messages never quote the password.
		return nil, ca.Permanent(err)
	}
	return []csr.Attribute{attr}, nil
}

// Ping asks the server for its capabilities and certificates, and checks the fingerprint pin and
// the RA/CA bundle, without issuing anything.
func (c *Connector) Ping(ctx context.Context) error {
	info, err := c.serverInfo(ctx, true)
	if err != nil {
		return err
	}
	// Debug: the readiness check pings every ops.checkInterval.
	c.log.Debug("SCEP server reachable", zap.String("url", c.where()), zap.Stringer("caps", info.caps),
		zap.Bool("renewal", info.caps.renewal()), zap.String("issuer", info.issuer.Subject.String()),
		zap.String("recipient", info.recipient.Subject.String()), zap.String("issuer_sha256", fingerprint(info.issuer)))
	return nil
}

// serverInfo returns the server's capabilities and certificates, from the cache unless it is
// stale or fresh is set.
func (c *Connector) serverInfo(ctx context.Context, fresh bool) (*serverInfo, error) {
	c.mu.Lock()
	info := c.info
	c.mu.Unlock()
	if info != nil && !fresh && c.now().Sub(info.at) < serverInfoTTL {
		return info, nil
	}
	capsBody, _, err := c.getOperation(ctx, "GetCACaps", c.caIdentifier)
	var cp caps
	switch {
	case err == nil:
		cp = parseCaps(capsBody)
	case ca.IsPermanent(err):
		// A server from before GetCACaps answers 4xx: assume the RFC's minimum (GET, no AES).
		c.log.Warn("SCEP server answered no GetCACaps; using GET, 3DES and SHA-1", zap.String("url", c.where()), zap.Error(err))
		cp = parseCaps(nil)
	default:
		return nil, err
	}
	certBody, _, err := c.getOperation(ctx, "GetCACert", c.caIdentifier)
	if err != nil {
		return nil, err
	}
	certs, err := parseCACerts(certBody)
	if err != nil {
		return nil, ca.Permanentf("GetCACert at %s: %v", c.where(), err)
	}
	if info, err = newServerInfo(cp, certs, c.now()); err != nil {
		return nil, ca.Permanentf("GetCACert at %s: %v", c.where(), err)
	}
	if err := checkPin(c.pin, certs); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.info = info
	c.mu.Unlock()
	return info, nil
}

// ticket is what a PENDING answer leaves the engine to resume with: CertPoll needs the
// transaction, the issuer the server was asked for and the subject of the request.
type ticket struct {
	TransactionID string `json:"transactionID"`
	Issuer        []byte `json:"issuer"`  // DER Name
	Subject       []byte `json:"subject"` // DER Name
}

func (t ticket) encode() string {
	b, _ := json.Marshal(t) // cannot fail: strings and byte slices
	return "scep1:" + string(b)
}

func decodeTicket(s string) (ticket, error) {
	var t ticket
	body, ok := strings.CutPrefix(s, "scep1:")
	if !ok {
		return t, errors.New("not a SCEP ticket")
	}
	if err := json.Unmarshal([]byte(body), &t); err != nil {
		return t, err
	}
	if t.TransactionID == "" || len(t.Issuer) == 0 {
		return t, errors.New("incomplete SCEP ticket")
	}
	return t, nil
}

// transactionID is the hex SHA-256 of the device's public key, as RFC 8894 §3.2.1.1 suggests:
// stable across retries of one request, distinct between devices.
func transactionID(spki []byte) string {
	sum := sha256.Sum256(spki)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// Issue sends the device-signed CSR in a PKCSReq, or polls with CertPoll when req.Ticket says the
// server left the request PENDING.
//
// An error promises that nothing was issued, which a PKCSReq whose answer was lost cannot keep
// by itself: the server may have issued. So the connector remembers such requests, and the next
// Issue for the same key first asks with CertPoll for the certificate of that transaction; only
// when the server has none (or cannot poll, like micromdm's scepserver) is the PKCSReq sent again.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("SCEP request: %w", err), 0)
	}
	if req == nil || req.CSR == nil || len(req.CSRDER) == 0 {
		return nil, ca.Permanentf("SCEP request without a certificate request")
	}
	// SCEP servers tend to take the CSR on trust; a bad signature must not get as far.
	if err := req.CSR.CheckSignature(); err != nil {
		return nil, ca.Permanentf("the certificate request's signature does not verify: %v", err)
	}
	info, err := c.serverInfo(ctx, false)
	if err != nil {
		return nil, err
	}
	t := ticket{TransactionID: transactionID(req.CSR.RawSubjectPublicKeyInfo), Issuer: info.issuer.RawSubject, Subject: req.CSR.RawSubject}
	if req.Ticket != "" {
		if t, err = decodeTicket(req.Ticket); err != nil {
			return nil, ca.Permanentf("resume the pending SCEP request: ticket %q: %v", req.Ticket, err)
		}
		return c.poll(ctx, req, info, t)
	}
	if c.inDoubt(req.Key) {
		issued, err := c.poll(ctx, req, info, t)
		var pending *ca.PendingError
		switch {
		case err == nil || errors.As(err, &pending):
			c.setDoubt(req.Key, false)
			return issued, err
		case ctx.Err() != nil:
			return nil, err
		}
		c.log.Info("the SCEP server has no certificate for the earlier request; sending it again",
			zap.String("process", req.Key), zap.String("transaction", t.TransactionID), zap.Error(err))
	}
	rep, err := c.exchange(ctx, req.Key, info, msgPKCSReq, t.TransactionID, req.CSRDER)
	if err != nil {
		if mayHaveArrived(err) {
			c.setDoubt(req.Key, true)
		}
		return nil, err
	}
	c.setDoubt(req.Key, false)
	return c.outcome(rep, req, info, t, "PKCSReq")
}

// poll asks with CertPoll (GetCertInitial) about the transaction in t.
func (c *Connector) poll(ctx context.Context, req *ca.Request, info *serverInfo, t ticket) (*ca.Issued, error) {
	content, err := asn1.Marshal(issuerAndSubject{Issuer: asn1.RawValue{FullBytes: t.Issuer}, Subject: asn1.RawValue{FullBytes: t.Subject}})
	if err != nil {
		return nil, ca.Permanentf("encode CertPoll: %v", err)
	}
	rep, err := c.exchange(ctx, req.Key, info, msgCertPoll, t.TransactionID, content)
	if err != nil {
		return nil, err
	}
	return c.outcome(rep, req, info, t, "CertPoll")
}

// exchange encrypts content to the server, signs it as a pkiMessage of the given type, sends it
// and returns the checked CertRep.
func (c *Connector) exchange(ctx context.Context, key string, info *serverInfo, msgType, tid string, content []byte) (*pkiMessage, error) {
	msg := &pkiMessage{TransactionID: tid, MessageType: msgType, SenderNonce: make([]byte, 16)}
	if _, err := rand.Read(msg.SenderNonce); err != nil {
		return nil, ca.Retryable(fmt.Errorf("sender nonce: %w", err), 0)
	}
	alg := info.caps.cipher(c.encryption)
	var err error
	if msg.Content, err = envelope(content, info.recipient, alg); err != nil {
		return nil, ca.Permanentf("encrypt the request to %q: %v", info.recipient.Subject, err)
	}
	der, err := signPKIMessage(msg, c.signerCert, c.signerKey, info.caps.digest())
	if err != nil {
		return nil, ca.Permanentf("sign the SCEP request: %v", err)
	}
	c.log.Debug("SCEP request", zap.String("process", key), zap.String("message_type", msgType),
		zap.String("transaction", tid), zap.Stringer("cipher", alg), zap.Stringer("digest", info.caps.digest()),
		zap.Bool("post", info.caps.post()))
	body, err := c.pkiOperation(ctx, info.caps.post(), der)
	if err != nil {
		return nil, err
	}
	return c.certRep(ctx, body, msg, info)
}

// outcome turns a CertRep into a certificate, a pending error with the ticket to resume with, or
// a permanent refusal naming the server's failInfo.
func (c *Connector) outcome(rep *pkiMessage, req *ca.Request, info *serverInfo, t ticket, op string) (*ca.Issued, error) {
	switch rep.PKIStatus {
	case statusSuccess:
		return c.issued(rep, req, info)
	case statusPending:
		c.log.Info("SCEP server left the request pending", zap.String("process", req.Key), zap.String("transaction", t.TransactionID))
		return nil, &ca.PendingError{
			Ticket:     t.encode(),
			RetryAfter: c.pollInterval,
			Reason:     fmt.Sprintf("the SCEP server at %s holds the request for approval (transaction %s)", c.url.Host, t.TransactionID),
		}
	case statusFailure:
		text := ""
		if rep.FailInfoText != "" {
			text = fmt.Sprintf(" %q", ca.ServerText(rep.FailInfoText, 200))
		}
		return nil, ca.Permanentf("the SCEP server refused the %s with failInfo %s%s (%s)", op, failInfoName(rep.FailInfo), text, failInfoHint(rep.FailInfo))
	default:
		return nil, ca.Permanentf("the SCEP server answered the %s with unknown pkiStatus %q", op, rep.PKIStatus)
	}
}

// maxInDoubt bounds the memory of unanswered requests; beyond it a lost answer may, at worst,
// lead to a second certificate for the same device key.
const maxInDoubt = 10000

// mayHaveArrived reports whether a failed PKCSReq may have reached the server: anything but a
// refusal in so many words (permanent) or a connection that was never made.
func mayHaveArrived(err error) bool {
	if ca.IsPermanent(err) {
		return false
	}
	var op *net.OpError
	return !errors.As(err, &op) || op.Op != "dial"
}

func (c *Connector) inDoubt(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.doubt[key]
}

func (c *Connector) setDoubt(key string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !on:
		delete(c.doubt, key)
	case len(c.doubt) < maxInDoubt:
		if c.doubt == nil {
			c.doubt = map[string]bool{}
		}
		c.doubt[key] = true
	}
}

// certRep parses and checks the server's answer to msg: signed by the server, about our
// transaction and echoing our nonce (so that an old answer cannot be replayed).
func (c *Connector) certRep(ctx context.Context, body []byte, msg *pkiMessage, info *serverInfo) (*pkiMessage, error) {
	rep, err := parsePKIMessage(body, info.certs)
	if errors.Is(err, errBadSignature) {
		return nil, ca.Permanentf("the SCEP server's answer: %v", err)
	}
	if err != nil {
		// Garbage from a proxy or a server having a bad moment: worth another try.
		return nil, ca.Retryable(fmt.Errorf("the SCEP server's answer: %w", err), 0)
	}
	if !info.trusts(rep.Signer, c.now()) {
		// The server may have renewed its RA or CA certificate since it was cached.
		fresh, err := c.serverInfo(ctx, true)
		if err != nil {
			return nil, err
		}
		if !fresh.trusts(rep.Signer, c.now()) {
			return nil, ca.Permanentf("the SCEP answer is signed by %q, which is not a certificate of the CA the server's GetCACert names", rep.Signer.Subject)
		}
	}
	switch {
	case rep.MessageType != msgCertRep:
		return nil, ca.Permanentf("the SCEP server answered with messageType %q, want CertRep (3)", rep.MessageType)
	case rep.TransactionID != msg.TransactionID:
		return nil, ca.Permanentf("the SCEP server answered about transaction %q, not %q", ca.ServerText(rep.TransactionID, 80), msg.TransactionID)
	case !bytes.Equal(rep.RecipientNonce, msg.SenderNonce):
		return nil, ca.Permanentf("the SCEP server's recipientNonce does not echo the request's senderNonce")
	}
	return rep, nil
}

// issued decrypts a SUCCESS answer and returns the certificate for the device key, with the CA
// certificates of GetCACert as roots: the engine's leaf check verifies the chain to them.
func (c *Connector) issued(rep *pkiMessage, req *ca.Request, info *serverInfo) (*ca.Issued, error) {
	plain, err := openEnvelope(rep.Content, c.signerCert, c.signerKey)
	if err != nil {
		return nil, ca.Permanentf("the SCEP server's SUCCESS answer cannot be decrypted with the signer key: %v", err)
	}
	certs, err := certsOnly(plain)
	if err != nil {
		return nil, ca.Permanentf("the SCEP server's SUCCESS answer: %v", err)
	}
	var leaf *x509.Certificate
	chain := slices.Clone(info.chain)
	for _, cert := range certs {
		switch {
		case bytes.Equal(cert.RawSubjectPublicKeyInfo, req.CSR.RawSubjectPublicKeyInfo) && leaf == nil:
			leaf = cert
		case isCA(cert) && !slices.ContainsFunc(chain, cert.Equal):
			// An intermediate the answer carries but GetCACert does not list.
			chain = append(chain, cert)
		}
	}
	if leaf == nil {
		return nil, ca.Permanentf("the SCEP server's SUCCESS answer holds %d certificates, none for the device key", len(certs))
	}
	c.log.Debug("SCEP certificate issued", zap.String("process", req.Key), zap.String("serial", leaf.SerialNumber.Text(16)))
	return &ca.Issued{Leaf: leaf, Chain: chain, Roots: info.caPool}, nil
}
