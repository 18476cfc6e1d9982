package emulator

import (
	"cmp"
	"encoding/json"
	"fmt"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Scopes, key types, device behaviours and notification encodings accepted in a ProcessSpec.
const (
	ScopeDevice = "device"
	ScopeUser   = "user"

	KeyRSA   = devicekey.RSA   // RSA-2048
	KeyECDSA = devicekey.ECDSA // ECDSA P-256

	BehaviourNormal    = ""
	BehaviourNeverSign = "never-sign"
	BehaviourWrongKey  = "wrong-key"
	BehaviourOffline   = "offline"

	EncodingCamel = "camel" // proto3 JSON: certificateProvisioningProcessId, customerId
	EncodingSnake = "snake" // JSON with the proto field names
	EncodingProto = "proto" // binary protobuf
)

// DefaultCustomer is the customer of a process whose spec names none, and of the simulated
// devices of the Verified Access API.
const DefaultCustomer = vagoogle.DefaultCustomer

// ProcessSpec describes one certificate provisioning process that a simulated ChromeOS client
// starts. The zero value is a device-scoped RSA process of DefaultCustomer whose device signs at
// once and whose notification is published once in proto3 JSON.
//
// Empty Serial, DeviceDirectoryID, UserEmail and UserDirectoryID are replaced by generated
// values; every other string is sent to the adapter exactly as given (including hostile values),
// so an empty ProfileRef or CARef yields an empty reference in the resource.
type ProcessSpec struct {
	Customer   string // default DefaultCustomer; letters, digits, '_' and '-' only
	Scope      string // ScopeDevice (default) or ScopeUser
	KeyType    string // KeyRSA (default) or KeyECDSA ("ec" is accepted as an alias)
	ProfileRef string // genericProfile.profileAdapterConfigReference (ignored when SCEPProfile != nil)
	CARef      string // caConnectionAdapterConfigReference

	SCEPCAConnection bool                 // use scepCaConnection instead of genericCaConnection
	SCEPProfile      *process.SCEPProfile // scepProfile instead of genericProfile

	Serial, DeviceDirectoryID, UserEmail, UserDirectoryID string

	AffiliatedUser bool // user session that also carries chromeOsDevice

	SignDelay         time.Duration // device signs this long after signData (after SetOnline when offline)
	Behaviour         string        // BehaviourNormal, BehaviourNeverSign, BehaviourWrongKey or BehaviourOffline
	ECDSARawSignature bool          // device returns raw 64-byte r||s instead of DER

	Encoding   string // notification encoding: EncodingCamel (default), EncodingSnake, EncodingProto
	Duplicates int    // publish the notification this many extra times
	NoPublish  bool   // do not publish any notification
}

// normalize fills defaults and validates the spec. It does not generate identifiers.
func (s ProcessSpec) normalize() (ProcessSpec, error) {
	if s.Customer == "" {
		s.Customer = DefaultCustomer
	}
	if !validCustomer(s.Customer) {
		return s, fmt.Errorf("customer %q: want letters, digits, '_' or '-'", s.Customer)
	}
	switch s.Scope {
	case "":
		s.Scope = ScopeDevice
	case ScopeDevice, ScopeUser:
	default:
		return s, fmt.Errorf("scope %q: want %q or %q", s.Scope, ScopeDevice, ScopeUser)
	}
	keyType, err := devicekey.ParseType(s.KeyType)
	if err != nil {
		return s, err
	}
	s.KeyType = cmp.Or(keyType, KeyRSA)
	switch s.Behaviour {
	case BehaviourNormal, BehaviourNeverSign, BehaviourWrongKey, BehaviourOffline:
	default:
		return s, fmt.Errorf("behaviour %q: want %q, %q, %q or empty", s.Behaviour,
			BehaviourNeverSign, BehaviourWrongKey, BehaviourOffline)
	}
	switch s.Encoding {
	case "":
		s.Encoding = EncodingCamel
	case EncodingCamel, EncodingSnake, EncodingProto:
	default:
		return s, fmt.Errorf("encoding %q: want %q, %q or %q", s.Encoding, EncodingCamel, EncodingSnake, EncodingProto)
	}
	if s.SignDelay < 0 {
		return s, fmt.Errorf("sign delay %s: must not be negative", s.SignDelay)
	}
	if s.Duplicates < 0 {
		return s, fmt.Errorf("duplicates %d: must not be negative", s.Duplicates)
	}
	if s.AffiliatedUser && s.Scope != ScopeUser {
		return s, fmt.Errorf("affiliated user: only for scope %q", ScopeUser)
	}
	return s, nil
}

// specJSON is the wire form of ProcessSpec in the control API: camelCase keys, durations as
// strings such as "2s", and the scepProfile with the API's own field names.
type specJSON struct {
	Customer          string           `json:"customer,omitempty"`
	Scope             string           `json:"scope,omitempty"`
	KeyType           string           `json:"keyType,omitempty"`
	ProfileRef        string           `json:"profileRef,omitempty"`
	CARef             string           `json:"caRef,omitempty"`
	SCEPCAConnection  bool             `json:"scepCaConnection,omitempty"`
	SCEPProfile       *scepProfileJSON `json:"scepProfile,omitempty"`
	Serial            string           `json:"serial,omitempty"`
	DeviceDirectoryID string           `json:"deviceDirectoryId,omitempty"`
	UserEmail         string           `json:"userEmail,omitempty"`
	UserDirectoryID   string           `json:"userDirectoryId,omitempty"`
	AffiliatedUser    bool             `json:"affiliatedUser,omitempty"`
	SignDelay         string           `json:"signDelay,omitempty"`
	Behaviour         string           `json:"behaviour,omitempty"`
	ECDSARawSignature bool             `json:"ecdsaRawSignature,omitempty"`
	Encoding          string           `json:"encoding,omitempty"`
	Duplicates        int              `json:"duplicates,omitempty"`
	NoPublish         bool             `json:"noPublish,omitempty"`
}

type scepProfileJSON struct {
	SubjectCommonName       string    `json:"subjectCommonName,omitempty"`
	Organization            string    `json:"organization,omitempty"`
	OrganizationalUnits     []string  `json:"organizationalUnits,omitempty"`
	Locality                string    `json:"locality,omitempty"`
	State                   string    `json:"state,omitempty"`
	Country                 string    `json:"country,omitempty"`
	CertificateTemplateName string    `json:"certificateTemplateName,omitempty"`
	SubjectAltNames         []sanJSON `json:"subjectAltNames,omitempty"`
	KeyUsages               []string  `json:"keyUsages,omitempty"`
}

type sanJSON struct {
	Type  string `json:"type,omitempty"`
	Value string `json:"value,omitempty"`
}

// MarshalJSON encodes the spec in the control API's wire form.
func (s ProcessSpec) MarshalJSON() ([]byte, error) {
	w := specJSON{
		Customer: s.Customer, Scope: s.Scope, KeyType: s.KeyType, ProfileRef: s.ProfileRef, CARef: s.CARef,
		SCEPCAConnection: s.SCEPCAConnection, Serial: s.Serial, DeviceDirectoryID: s.DeviceDirectoryID,
		UserEmail: s.UserEmail, UserDirectoryID: s.UserDirectoryID, AffiliatedUser: s.AffiliatedUser,
		Behaviour: s.Behaviour, ECDSARawSignature: s.ECDSARawSignature, Encoding: s.Encoding,
		Duplicates: s.Duplicates, NoPublish: s.NoPublish,
	}
	if s.SignDelay != 0 {
		w.SignDelay = s.SignDelay.String()
	}
	if p := s.SCEPProfile; p != nil {
		w.SCEPProfile = &scepProfileJSON{
			SubjectCommonName: p.CommonName, Organization: p.Organization, OrganizationalUnits: p.OrganizationalUnits,
			Locality: p.Locality, State: p.State, Country: p.Country, CertificateTemplateName: p.TemplateName,
			KeyUsages: p.KeyUsages,
		}
		for _, san := range p.SANs {
			w.SCEPProfile.SubjectAltNames = append(w.SCEPProfile.SubjectAltNames, sanJSON(san))
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the control API's wire form; unknown keys and malformed durations are
// errors.
func (s *ProcessSpec) UnmarshalJSON(data []byte) error {
	var w specJSON
	if err := frontend.DecodeStrict(data, &w); err != nil {
		return fmt.Errorf("process spec: %w", err)
	}
	out := ProcessSpec{
		Customer: w.Customer, Scope: w.Scope, KeyType: w.KeyType, ProfileRef: w.ProfileRef, CARef: w.CARef,
		SCEPCAConnection: w.SCEPCAConnection, Serial: w.Serial, DeviceDirectoryID: w.DeviceDirectoryID,
		UserEmail: w.UserEmail, UserDirectoryID: w.UserDirectoryID, AffiliatedUser: w.AffiliatedUser,
		Behaviour: w.Behaviour, ECDSARawSignature: w.ECDSARawSignature, Encoding: w.Encoding,
		Duplicates: w.Duplicates, NoPublish: w.NoPublish,
	}
	if w.SignDelay != "" {
		d, err := time.ParseDuration(w.SignDelay)
		if err != nil {
			return fmt.Errorf("process spec: signDelay: %w", err)
		}
		out.SignDelay = d
	}
	if p := w.SCEPProfile; p != nil {
		out.SCEPProfile = &process.SCEPProfile{
			CommonName: p.SubjectCommonName, Organization: p.Organization, OrganizationalUnits: p.OrganizationalUnits,
			Locality: p.Locality, State: p.State, Country: p.Country, TemplateName: p.CertificateTemplateName,
			KeyUsages: p.KeyUsages,
		}
		for _, san := range p.SubjectAltNames {
			out.SCEPProfile.SANs = append(out.SCEPProfile.SANs, process.SAN(san))
		}
	}
	*s = out
	return nil
}

// validCustomer keeps customer ids usable as one path segment of a resource name.
func validCustomer(c string) bool {
	for _, r := range c {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return c != ""
}
