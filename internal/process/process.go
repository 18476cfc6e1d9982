// Package process is the adapter's own model of a Google CertificateProvisioningProcess.
//
// The generated API types are pointer-heavy unions of optional fields; this package flattens them
// into one value that templates, CA connectors and the journal can use without nil checks.
package process

import (
	"fmt"
	"strings"
	"time"
)

// Signature algorithms, as named by the Certificate Provisioning API.
const (
	AlgorithmRSAPKCS1SHA256 = "SIGNATURE_ALGORITHM_RSA_PKCS1_V1_5_SHA256"
	AlgorithmECDSASHA256    = "SIGNATURE_ALGORITHM_ECDSA_SHA256"
)

// Subject alternative name types used by scepProfile.
const (
	SANEmail = "RFC822_NAME"
	SANDNS   = "DNS_NAME"
	SANUPN   = "OTHER_NAME_USER_PRINCIPAL_NAME"
	SANURI   = "UNIFORM_RESOURCE_IDENTIFIER"
)

// Key usages used by scepProfile.
const (
	KeyUsageSigning         = "KEY_USAGE_SIGNING"
	KeyUsageKeyEncipherment = "KEY_USAGE_KEY_ENCIPHERMENT"
)

// CA connection kinds: which union member of the resource named the CA connection.
const (
	CAConnectionGeneric = "generic"
	CAConnectionSCEP    = "scep"
)

// Device is the ChromeOS device a process was started on (or the user's affiliated device).
type Device struct {
	SerialNumber string
	DirectoryID  string // deviceDirectoryApiId
}

// User is the ChromeOS user session a user-scoped process was started in.
type User struct {
	Email       string // userPrimaryEmail
	DirectoryID string // userDirectoryApiId
}

// SAN is one subject alternative name from a scepProfile.
type SAN struct {
	Type  string
	Value string
}

// SCEPProfile is the subject a scepProfile process carries itself.
type SCEPProfile struct {
	CommonName          string
	Organization        string
	OrganizationalUnits []string
	Locality            string
	State               string
	Country             string
	TemplateName        string
	SANs                []SAN
	KeyUsages           []string
}

// Process is a flattened CertificateProvisioningProcess.
type Process struct {
	Name      string // customers/{customer}/certificateProvisioningProcesses/{id}
	Customer  string
	ID        string
	ProfileID string // provisioningProfileId
	StartTime time.Time

	SPKI []byte // DER SubjectPublicKeyInfo of the device-held key

	// Exactly one of Device (device scope) or User (user scope) describes the subject; a user
	// session on an affiliated device has both.
	Device *Device
	User   *User

	CAConnectionKind string // CAConnectionGeneric or CAConnectionSCEP
	CAConnectionRef  string // caConnectionAdapterConfigReference
	ProfileRef       string // profileAdapterConfigReference; empty for scepProfile processes
	SCEPProfile      *SCEPProfile

	SignData           []byte // present once signData was requested
	SignatureAlgorithm string
	Signature          []byte // present once the device signed
	IssuedCertificate  string // PEM, present once a certificate was uploaded
	FailureMessage     string // present once the process failed
}

// Clone returns a deep copy: journals hand out copies, and a shared byte slice or pointer would
// let one holder's change leak into another's record.
func (p *Process) Clone() *Process {
	if p == nil {
		return nil
	}
	c := *p
	c.SPKI = cloneBytes(p.SPKI)
	c.SignData = cloneBytes(p.SignData)
	c.Signature = cloneBytes(p.Signature)
	if p.Device != nil {
		d := *p.Device
		c.Device = &d
	}
	if p.User != nil {
		u := *p.User
		c.User = &u
	}
	if p.SCEPProfile != nil {
		sp := *p.SCEPProfile
		sp.OrganizationalUnits = append([]string(nil), p.SCEPProfile.OrganizationalUnits...)
		sp.SANs = append([]SAN(nil), p.SCEPProfile.SANs...)
		sp.KeyUsages = append([]string(nil), p.SCEPProfile.KeyUsages...)
		c.SCEPProfile = &sp
	}
	return &c
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// UserScoped reports whether the process was started in a user session.
func (p *Process) UserScoped() bool { return p.User != nil }

// Finished reports whether Google already considers the process ended.
func (p *Process) Finished() bool { return p.FailureMessage != "" || p.IssuedCertificate != "" }

// SignRequested reports whether signData was already called for this process.
func (p *Process) SignRequested() bool { return len(p.SignData) > 0 }

const collection = "certificateProvisioningProcesses"

// Name builds a process resource name.
func Name(customer, id string) string {
	return "customers/" + customer + "/" + collection + "/" + id
}

// ParseName splits a process resource name into its customer and process id.
func ParseName(name string) (customer, id string, err error) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[0] != "customers" || parts[2] != collection || parts[1] == "" || parts[3] == "" {
		return "", "", fmt.Errorf("process name %q: want customers/{customer}/%s/{id}", name, collection)
	}
	return parts[1], parts[3], nil
}
