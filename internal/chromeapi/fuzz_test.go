package chromeapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	cm "google.golang.org/api/chromemanagement/v1"
	"google.golang.org/api/googleapi"

	"github.com/certprov/certprov-adapter/internal/process"
	"github.com/certprov/certprov-adapter/internal/retryafter"
)

// Seeds in the shapes Google documents (docs/google-api.md) and the emulator serves.
const (
	seedDeviceProcess = `{"name":"customers/C01abc2de/certificateProvisioningProcesses/0123456789ABCDEF0123456789ABCDEF",
		"provisioningProfileId":"wifi","subjectPublicKeyInfo":"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
		"startTime":"2025-03-07T13:38:54.930621Z","chromeOsDevice":{"deviceDirectoryApiId":"d-1","serialNumber":"5CD1234"},
		"genericCaConnection":{"caConnectionAdapterConfigReference":"corp-ca"},
		"genericProfile":{"profileAdapterConfigReference":"wifi-device"}}`
	seedSCEPUserProcess = `{"name":"customers/C0test/certificateProvisioningProcesses/AB","signData":"-_8=","signature":"AQID",
		"signatureAlgorithm":"SIGNATURE_ALGORITHM_ECDSA_SHA256","startTime":"2025-03-07T13:38:54+02:00",
		"chromeOsUserSession":{"userPrimaryEmail":"a@example.com","userDirectoryApiId":"u1","chromeOsDevice":{"serialNumber":"SN1"}},
		"scepCaConnection":{"caConnectionAdapterConfigReference":"ndes"},
		"scepProfile":{"subjectCommonName":"cn","organization":"Example","organizationalUnits":["IT",""],"country":"DE",
		"certificateTemplateName":"User","keyUsages":["KEY_USAGE_SIGNING"],
		"subjectAltNames":[{"type":"DNS_NAME","value":"x.example.com"},null,{"type":"RFC822_NAME","value":"a@example.com"}]}}`
	seedFailedProcess = `{"name":"customers/C01/certificateProvisioningProcesses/FF","failureMessage":"CA refused",
		"issuedCertificate":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}`
)

// FuzzProcessJSON decodes arbitrary process resources the way the generated client does and
// flattens them: no panic, an error for what cannot be used, and whatever is accepted is well
// formed and survives a round trip through the API shape unchanged.
func FuzzProcessJSON(f *testing.F) {
	for _, s := range []string{seedDeviceProcess, seedSCEPUserProcess, seedFailedProcess,
		`{"name":"customers/C/certificateProvisioningProcesses/1","subjectPublicKeyInfo":"not base64!"}`,
		`{"name":"customers//certificateProvisioningProcesses/1"}`, `{"name":"x"}`, `{}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess
		if json.Unmarshal(data, &r) != nil {
			return // the client fails the call with a decode error
		}
		p, err := fromAPI(&r)
		if err != nil {
			if p != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		if p.Name != r.Name || p.Customer == "" || p.ID == "" || strings.Contains(p.Customer+p.ID, "/") ||
			process.Name(p.Customer, p.ID) != p.Name {
			t.Fatalf("accepted name %q split into customer %q, id %q", r.Name, p.Customer, p.ID)
		}
		if c := p.Clone(); !reflect.DeepEqual(c, p) {
			t.Fatalf("clone differs:\n%+v\n%+v", c, p)
		}
		again, err := fromAPI(toAPI(p))
		if err != nil {
			t.Fatalf("re-encoded process refused: %v", err)
		}
		if !again.StartTime.Equal(p.StartTime) {
			t.Fatalf("start time %v, then %v", p.StartTime, again.StartTime)
		}
		again.StartTime = p.StartTime
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("round trip changed the process:\n%+v\n%+v", p, again)
		}
	})
}

// toAPI is fromAPI's inverse: the resource Google would send for p, byte fields in the standard
// alphabet.
func toAPI(p *process.Process) *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess {
	b64 := func(b []byte) string {
		if b == nil {
			return ""
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	r := &cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess{
		Name:                  p.Name,
		ProvisioningProfileId: p.ProfileID,
		SignatureAlgorithm:    p.SignatureAlgorithm,
		IssuedCertificate:     p.IssuedCertificate,
		FailureMessage:        p.FailureMessage,
		SubjectPublicKeyInfo:  b64(p.SPKI),
		SignData:              b64(p.SignData),
		Signature:             b64(p.Signature),
	}
	if !p.StartTime.IsZero() {
		r.StartTime = p.StartTime.Format(time.RFC3339Nano)
	}
	var device *cm.GoogleChromeManagementVersionsV1ChromeOsDevice
	if d := p.Device; d != nil {
		device = &cm.GoogleChromeManagementVersionsV1ChromeOsDevice{SerialNumber: d.SerialNumber, DeviceDirectoryApiId: d.DirectoryID}
	}
	if u := p.User; u != nil {
		r.ChromeOsUserSession = &cm.GoogleChromeManagementVersionsV1ChromeOsUserSession{
			UserPrimaryEmail: u.Email, UserDirectoryApiId: u.DirectoryID, ChromeOsDevice: device}
	} else {
		r.ChromeOsDevice = device
	}
	switch p.CAConnectionKind {
	case process.CAConnectionGeneric:
		r.GenericCaConnection = &cm.GoogleChromeManagementVersionsV1GenericCaConnection{CaConnectionAdapterConfigReference: p.CAConnectionRef}
	case process.CAConnectionSCEP:
		r.ScepCaConnection = &cm.GoogleChromeManagementVersionsV1ScepCaConnection{CaConnectionAdapterConfigReference: p.CAConnectionRef}
	}
	if p.ProfileRef != "" {
		r.GenericProfile = &cm.GoogleChromeManagementVersionsV1GenericProfile{ProfileAdapterConfigReference: p.ProfileRef}
	}
	if s := p.SCEPProfile; s != nil {
		sp := &cm.GoogleChromeManagementVersionsV1ScepProfile{
			SubjectCommonName: s.CommonName, Organization: s.Organization, OrganizationalUnits: s.OrganizationalUnits,
			Locality: s.Locality, State: s.State, Country: s.Country, CertificateTemplateName: s.TemplateName, KeyUsages: s.KeyUsages,
		}
		for _, san := range s.SANs {
			sp.SubjectAltNames = append(sp.SubjectAltNames, &cm.GoogleChromeManagementVersionsV1SubjectAltName{Type: san.Type, Value: san.Value})
		}
		r.ScepProfile = sp
	}
	return r
}

// FuzzOperationJSON decodes arbitrary signData operations: no panic; a failed operation is done;
// a process is only taken from a successful one, and is the process the response carries.
func FuzzOperationJSON(f *testing.F) {
	const op = `"name":"customers/C01/certificateProvisioningProcesses/AB/operations/op-1"`
	for _, s := range []string{
		`{` + op + `,"metadata":{"@type":"type.googleapis.com/google.chrome.management.versions.v1.SignDataMetadata","startTime":"2025-03-07T13:38:54Z"}}`,
		`{` + op + `,"done":true,"response":{"@type":"type.googleapis.com/google.chrome.management.versions.v1.SignDataResponse","certificateProvisioningProcess":` + seedSCEPUserProcess + `}}`,
		`{` + op + `,"done":true,"response":{"certificateProvisioningProcess":{"name":"bad"}}}`,
		`{` + op + `,"done":true,"response":{}}`,
		`{` + op + `,"done":true,"error":{"code":3,"message":"The requested SignData LRO failed because the corresponding certificate provisioning process is in failure state CERTIFICATE_PROVISIONING_RESULT_ERROR_INVALID_SIGNATURE"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var o cm.GoogleLongrunningOperation
		if json.Unmarshal(data, &o) != nil {
			return
		}
		got, err := operationFromAPI("op", &o)
		if err != nil {
			if got != nil || len(o.Response) == 0 || o.Error != nil {
				t.Fatalf("error %v (result %+v) for an operation without a response to decode", err, got)
			}
			return
		}
		if got.Error != "" && !got.Done {
			t.Fatal("a failed operation is not done")
		}
		if o.Error != nil && (got.Error == "" || got.Process != nil) {
			t.Fatalf("operation error %+v became %+v", o.Error, got)
		}
		if got.Process != nil {
			var resp struct {
				Process *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess `json:"certificateProvisioningProcess"`
			}
			if err := json.Unmarshal(o.Response, &resp); err != nil || resp.Process == nil {
				t.Fatalf("process %+v from a response without one (%v)", got.Process, err)
			}
			if want, err := fromAPI(resp.Process); err != nil || !reflect.DeepEqual(want, got.Process) {
				t.Fatalf("process %+v, want %+v (%v)", got.Process, want, err)
			}
		}
	})
}

// FuzzErrorResponse runs arbitrary error answers through the generated client's own error
// decoding and classify: every failure becomes a classified *Error that keeps the original, the
// canonical status is the envelope's error.status (as a JSON decoder reads it) and nothing else,
// retry hints stay within bounds, and the rate-limit and server-error codes are retryable.
func FuzzErrorResponse(f *testing.F) {
	for _, s := range []struct {
		code       int
		retryAfter string
		body       string
	}{
		{400, "", `{"error":{"code":400,"message":"Request contains an invalid argument.","status":"FAILED_PRECONDITION"}}`},
		{429, "7", `{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED","metadata":{"quota_limit":"x"}}]}}`},
		{503, "Wed, 21 Oct 2037 07:28:00 GMT", `{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}`},
		{404, "", `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND"}}`},
		{502, "", "<html><body>502 Bad Gateway</body></html>"},
		{409, "-1", `{"error":{"status":"ABORTED"}}`},
		{500, "", ``},
	} {
		f.Add(s.code, s.retryAfter, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, code int, retryAfter string, body []byte) {
		code = 300 + abs(code)%300 // what reaches CheckResponse is never 2xx
		h := http.Header{}
		h.Set("Retry-After", retryAfter)
		res := &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(bytes.NewReader(body))}
		apiErr := googleapi.CheckResponse(res)
		err := classify(context.Background(), "get", "customers/C/certificateProvisioningProcesses/1", apiErr)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, apiErr) {
			t.Fatalf("classify returned %T %v", err, err)
		}
		var gerr *googleapi.Error
		if !errors.As(apiErr, &gerr) || e.Code != gerr.Code {
			t.Fatalf("code %d, googleapi error %+v", e.Code, gerr)
		}
		var env struct {
			Error *struct {
				Status string `json:"status"`
			} `json:"error"`
		}
		want := ""
		if json.Unmarshal(body, &env) == nil && env.Error != nil {
			want = env.Error.Status
		}
		if e.Status != want {
			t.Fatalf("status %q, the envelope says %q: %s", e.Status, want, body)
		}
		if e.RetryAfter < 0 || e.RetryAfter > retryafter.Max {
			t.Fatalf("retry after %v from %q", e.RetryAfter, retryAfter)
		}
		if n, err := strconv.Atoi(strings.TrimSpace(retryAfter)); err == nil && n > 0 && n < 3600 && e.RetryAfter != time.Duration(n)*time.Second {
			t.Fatalf("retry after %v from %q", e.RetryAfter, retryAfter)
		}
		transient := e.Code == http.StatusTooManyRequests || e.Code >= 500
		if transient && !retryable(err) {
			t.Fatalf("HTTP %d not retryable", e.Code)
		}
		if retryable(err) && (failedPrecondition(err) || errors.Is(err, process.ErrNotFound)) {
			t.Fatalf("HTTP %d both retryable and final", e.Code)
		}
		if e.Error() == "" {
			t.Fatal("empty message")
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -(n + 1) // no overflow at math.MinInt
	}
	return n
}
