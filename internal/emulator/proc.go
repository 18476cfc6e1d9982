package emulator

import (
	"encoding/base64"
	"fmt"
	"maps"
	"time"

	"go.uber.org/zap"
	cm "google.golang.org/api/chromemanagement/v1"

	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
)

// Process states reported in Snapshot.State.
const (
	StatePending = "pending" // created, not claimed
	StateClaimed = "claimed" // claimed, signData not requested
	StateSigning = "signing" // signData requested, device has not signed
	StateSigned  = "signed"  // device signed, no certificate yet
	StateIssued  = "issued"  // certificate uploaded (final)
	StateFailed  = "failed"  // failure message set (final)
)

// Failure states named in LRO error messages. Only INVALID_SIGNATURE appears in Google's samples;
// the others are the emulator's own names for causes Google does not document.
const (
	failInvalidSignature = "CERTIFICATE_PROVISIONING_RESULT_ERROR_INVALID_SIGNATURE"
	failClient           = "CERTIFICATE_PROVISIONING_RESULT_ERROR_CLIENT"
	failAdapter          = "CERTIFICATE_PROVISIONING_RESULT_ERROR_ADAPTER"
)

// MessageSignDataTwice is the failure message a device sets when signData is requested a second
// time for one process.
const MessageSignDataTwice = "Proof of possession requested >1 times"

// proc is the emulator's record of one process and of the device that started it. Guarded by
// Emulator.mu.
type proc struct {
	name, customer, id string
	spec               ProcessSpec // normalized, identifiers filled in
	key, wrongKey      *devicekey.Key
	profileID          string
	created            time.Time
	notified           time.Time // first notification published; zero before

	claimedBy    string
	signData     []byte
	algorithm    string
	opID         string
	opStart      time.Time
	signature    []byte
	issuedPEM    string
	failure      string
	failureState string
	finishedAt   time.Time

	online        bool
	timer         *time.Timer
	calls         map[string]int
	injected      map[string]int // calls answered by an injected fault, by method
	signDataCount int
}

func (p *proc) finished() bool { return p.failure != "" || p.issuedPEM != "" }

func (p *proc) state() string {
	switch {
	case p.failure != "":
		return StateFailed
	case p.issuedPEM != "":
		return StateIssued
	case p.signature != nil:
		return StateSigned
	case p.signData != nil:
		return StateSigning
	case p.claimedBy != "":
		return StateClaimed
	default:
		return StatePending
	}
}

func (p *proc) stopTimer() {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
}

func (p *proc) snapshot() Snapshot {
	calls := maps.Clone(p.calls)
	injected := maps.Clone(p.injected)
	s := Snapshot{
		Name:           p.name,
		Customer:       p.customer,
		State:          p.state(),
		Scope:          p.spec.Scope,
		KeyType:        p.spec.KeyType,
		ClaimedBy:      p.claimedBy,
		Calls:          calls,
		Injected:       injected,
		SignDataCount:  p.signDataCount,
		CertificatePEM: p.issuedPEM,
		FailureMessage: p.failure,
		PublicKey:      p.key.Signer.Public(),
		SPKI:           append([]byte(nil), p.key.SPKI...),
		Created:        p.created,
		NotifiedAt:     p.notified,
		FinishedAt:     p.finishedAt,
	}
	return s
}

// resource renders the process as the API's CertificateProvisioningProcess, with only the fields
// present so far.
func (p *proc) resource(withSignature bool) *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess {
	spec := p.spec
	r := &cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess{
		Name:                  p.name,
		ProvisioningProfileId: p.profileID,
		SubjectPublicKeyInfo:  base64.StdEncoding.EncodeToString(p.key.SPKI),
		StartTime:             formatTime(p.created),
		IssuedCertificate:     p.issuedPEM,
		FailureMessage:        p.failure,
	}
	device := &cm.GoogleChromeManagementVersionsV1ChromeOsDevice{
		DeviceDirectoryApiId: spec.DeviceDirectoryID,
		SerialNumber:         spec.Serial,
	}
	if spec.Scope == ScopeUser {
		r.ChromeOsUserSession = &cm.GoogleChromeManagementVersionsV1ChromeOsUserSession{
			UserDirectoryApiId: spec.UserDirectoryID,
			UserPrimaryEmail:   spec.UserEmail,
		}
		if spec.AffiliatedUser {
			r.ChromeOsUserSession.ChromeOsDevice = device
		}
	} else {
		r.ChromeOsDevice = device
	}
	if spec.SCEPCAConnection {
		r.ScepCaConnection = &cm.GoogleChromeManagementVersionsV1ScepCaConnection{CaConnectionAdapterConfigReference: spec.CARef}
	} else {
		r.GenericCaConnection = &cm.GoogleChromeManagementVersionsV1GenericCaConnection{CaConnectionAdapterConfigReference: spec.CARef}
	}
	if sp := spec.SCEPProfile; sp != nil {
		prof := &cm.GoogleChromeManagementVersionsV1ScepProfile{
			SubjectCommonName:       sp.CommonName,
			Organization:            sp.Organization,
			OrganizationalUnits:     sp.OrganizationalUnits,
			Locality:                sp.Locality,
			State:                   sp.State,
			Country:                 sp.Country,
			CertificateTemplateName: sp.TemplateName,
			KeyUsages:               sp.KeyUsages,
		}
		for _, san := range sp.SANs {
			prof.SubjectAltNames = append(prof.SubjectAltNames,
				&cm.GoogleChromeManagementVersionsV1SubjectAltName{Type: san.Type, Value: san.Value})
		}
		r.ScepProfile = prof
		// For scepProfile processes Google always reports the algorithm the key requires.
		r.SignatureAlgorithm = algorithmFor(spec.KeyType)
	} else {
		r.GenericProfile = &cm.GoogleChromeManagementVersionsV1GenericProfile{ProfileAdapterConfigReference: spec.ProfileRef}
	}
	if p.signData != nil {
		r.SignData = base64.StdEncoding.EncodeToString(p.signData)
		r.SignatureAlgorithm = p.algorithm
	}
	if withSignature && p.signature != nil {
		r.Signature = base64.StdEncoding.EncodeToString(p.signature)
	}
	return r
}

// failLocked ends the process with a failure message, as the device or Google would.
func (e *Emulator) failLocked(p *proc, state, message string) {
	p.stopTimer()
	p.failure = message
	p.failureState = state
	p.finishedAt = e.clock()
	e.log.Info("process failed", zap.String("process", p.name), zap.String("message", message))
}

// scheduleSignLocked arms the device's signing timer if signData is pending and the device is
// willing and able to sign. A timer per waiting device, never a polling goroutine.
func (e *Emulator) scheduleSignLocked(p *proc) {
	if e.closed || p.timer != nil || p.signData == nil || p.signature != nil || p.finished() {
		return
	}
	switch p.spec.Behaviour {
	case BehaviourNeverSign:
		return
	case BehaviourOffline:
		if !p.online {
			return
		}
	}
	name := p.name
	p.timer = time.AfterFunc(p.spec.SignDelay, func() { e.deviceSign(name) })
}

// deviceSign is the device answering the proof-of-possession request.
func (e *Emulator) deviceSign(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.procs[name]
	if p == nil || e.closed {
		return
	}
	p.timer = nil
	if p.signData == nil || p.signature != nil || p.finished() {
		return
	}
	if want := algorithmFor(p.spec.KeyType); p.algorithm != want {
		e.failLocked(p, failClient, fmt.Sprintf(
			"The client cannot sign with %s: its %s key requires %s.", p.algorithm, p.spec.KeyType, want))
		return
	}
	key := p.key
	if p.wrongKey != nil {
		key = p.wrongKey
	}
	sig, err := key.Sign(p.signData, p.spec.ECDSARawSignature)
	if err != nil {
		e.failLocked(p, failClient, "The client could not sign: "+err.Error())
		return
	}
	p.signature = sig
	e.log.Info("device signed", zap.String("process", p.name), zap.Int("signature_bytes", len(sig)))
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
