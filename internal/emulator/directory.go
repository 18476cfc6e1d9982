package emulator

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	admin "google.golang.org/api/admin/directory/v1"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
)

// Admin SDK Directory methods, as used for fault injection (Fault.Method) and DirectoryCalls.
const (
	MethodDirectoryDevicesGet = "directory.chromeosdevices.get"
	MethodDirectoryUsersGet   = "directory.users.get"
)

// directoryPrefix is where the Directory API lives under the emulator's base URL, as under
// https://admin.googleapis.com/.
const directoryPrefix = "/admin/directory/v1/"

// directoryState is the emulated Directory: the records tests put there, and the calls made.
type directoryState struct {
	mu      sync.Mutex
	devices map[string]*admin.ChromeOsDevice // by customer + "/" + deviceId
	users   map[string]*admin.User           // by id, primary e-mail and aliases
	calls   map[string]int                   // by method
}

func newDirectoryState() *directoryState {
	return &directoryState{devices: map[string]*admin.ChromeOsDevice{}, users: map[string]*admin.User{}, calls: map[string]int{}}
}

// SetDirectoryDevice puts the Directory record of a ChromeOS device of customer, found by its
// DeviceId (a process's deviceDirectoryApiId) as chromeosdevices.get does; it replaces a record
// with the same id. The record is copied.
func (e *Emulator) SetDirectoryDevice(customer string, d admin.ChromeOsDevice) {
	d.Kind = "admin#directory#chromeosdevice"
	e.dir.mu.Lock()
	defer e.dir.mu.Unlock()
	e.dir.devices[customer+"/"+d.DeviceId] = &d
}

// SetDirectoryUser puts the Directory record of a user, found by its Id (a process's
// userDirectoryApiId), its PrimaryEmail or one of its Aliases as users.get does; it replaces
// the records of those keys. The record is copied.
func (e *Emulator) SetDirectoryUser(u admin.User) {
	u.Kind = "admin#directory#user"
	e.dir.mu.Lock()
	defer e.dir.mu.Unlock()
	for _, k := range append([]string{u.Id, u.PrimaryEmail}, u.Aliases...) {
		if k != "" {
			e.dir.users[strings.ToLower(k)] = &u
		}
	}
}

// putProcessRecords puts the Directory records Options.DirectoryRecords promises for a started
// process's device and user, derived from its spec, unless records of those ids exist.
func (d *directoryState) putProcessRecords(customer string, spec ProcessSpec) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if key := customer + "/" + spec.DeviceDirectoryID; d.devices[key] == nil {
		d.devices[key] = &admin.ChromeOsDevice{Kind: "admin#directory#chromeosdevice", DeviceId: spec.DeviceDirectoryID,
			SerialNumber: spec.Serial, Model: "Emulated Chromebook", AnnotatedAssetId: "ASSET-" + spec.Serial,
			AnnotatedLocation: "Emulator lab", OrgUnitPath: "/Emulated/Devices", OrgUnitId: "id:emulated"}
	}
	if spec.Scope != ScopeUser || d.users[strings.ToLower(spec.UserDirectoryID)] != nil {
		return
	}
	local, _, _ := strings.Cut(spec.UserEmail, "@")
	u := &admin.User{Kind: "admin#directory#user", Id: spec.UserDirectoryID, PrimaryEmail: spec.UserEmail,
		OrgUnitPath: "/Emulated/Users", Name: &admin.UserName{GivenName: local, FamilyName: "Emulated", FullName: local + " Emulated"},
		ExternalIds: []map[string]string{{"type": "organization", "value": "E" + spec.UserDirectoryID[max(0, len(spec.UserDirectoryID)-6):]}}}
	for _, k := range []string{u.Id, u.PrimaryEmail} {
		if k != "" && d.users[strings.ToLower(k)] == nil {
			d.users[strings.ToLower(k)] = u
		}
	}
}

// DirectoryCalls is how many times method (MethodDirectoryDevicesGet, MethodDirectoryUsersGet)
// was called, injected failures included.
func (e *Emulator) DirectoryCalls(method string) int {
	e.dir.mu.Lock()
	defer e.dir.mu.Unlock()
	return e.dir.calls[method]
}

// directoryError is an error as the Directory API answers it: the older envelope with an errors
// list whose reason names the cause (notFound, forbidden, rateLimitExceeded, backendError).
type directoryError struct {
	Error struct {
		Code    int                  `json:"code"`
		Message string               `json:"message"`
		Errors  []directoryErrorItem `json:"errors"`
	} `json:"error"`
}

type directoryErrorItem struct {
	Message string `json:"message"`
	Domain  string `json:"domain"`
	Reason  string `json:"reason"`
}

func writeDirectoryError(w http.ResponseWriter, code int, reason, message string, retryAfter time.Duration) {
	frontend.SetRetryAfter(w, retryAfter)
	var env directoryError
	env.Error.Code, env.Error.Message = code, message
	env.Error.Errors = []directoryErrorItem{{Message: message, Domain: "global", Reason: reason}}
	frontend.WriteJSON(w, code, env)
}

// directoryReason is the reason the Directory gives an injected status.
func directoryReason(code int) (reason, message string) {
	switch code {
	case http.StatusForbidden:
		return "forbidden", "Not Authorized to access this resource/api"
	case http.StatusNotFound:
		return "notFound", "Resource Not Found"
	case http.StatusTooManyRequests:
		return "rateLimitExceeded", "Quota exceeded for quota metric 'Queries' (emulator)"
	case http.StatusUnauthorized:
		return "authError", "Invalid Credentials"
	case http.StatusBadRequest:
		return "invalid", "Invalid Input"
	}
	return "backendError", "Backend Error (emulator)"
}

// serveDirectory answers chromeosdevices.get
// (GET admin/directory/v1/customer/{customer}/devices/chromeos/{deviceId}) and users.get
// (GET admin/directory/v1/users/{userKey}). Query parameters (projection, fields, viewType) are
// accepted and the whole record answered, which a partial response is a subset of.
func (e *Emulator) serveDirectory(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), directoryPrefix)
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		if u, err := url.PathUnescape(p); err == nil {
			parts[i] = u
		}
	}
	var method string
	switch {
	case r.Method == http.MethodGet && len(parts) == 5 && parts[0] == "customer" && parts[2] == "devices" && parts[3] == "chromeos" && parts[4] != "":
		method = MethodDirectoryDevicesGet
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "users" && parts[1] != "":
		method = MethodDirectoryUsersGet
	default:
		writeDirectoryError(w, http.StatusNotFound, "notFound", "no such Directory method: "+r.Method+" "+r.URL.Path, 0)
		return
	}
	if !e.faults.Wait(r.Context()) {
		return
	}
	e.dir.mu.Lock()
	e.dir.calls[method]++
	e.dir.mu.Unlock()
	if refusal := e.faults.Refusal(method, "", nil); refusal != nil {
		reason, message := directoryReason(refusal.Code)
		e.log.Debug("injected directory failure", zap.String("method", method), zap.Int("status", refusal.Code))
		writeDirectoryError(w, refusal.Code, reason, message+" (emulator: injected)", refusal.RetryAfter)
		return
	}
	e.dir.mu.Lock()
	defer e.dir.mu.Unlock()
	switch method {
	case MethodDirectoryDevicesGet:
		customer, id := parts[1], parts[4]
		d := e.dir.devices[customer+"/"+id]
		if d == nil && customer == "my_customer" {
			d = e.dir.anyCustomerDeviceLocked(id)
		}
		if d == nil {
			writeDirectoryError(w, http.StatusNotFound, "notFound", "Resource Not Found: deviceId", 0)
			return
		}
		frontend.WriteJSON(w, http.StatusOK, d)
	case MethodDirectoryUsersGet:
		u := e.dir.users[strings.ToLower(parts[1])]
		if u == nil {
			writeDirectoryError(w, http.StatusNotFound, "notFound", "Resource Not Found: userKey", 0)
			return
		}
		frontend.WriteJSON(w, http.StatusOK, u)
	}
}

// anyCustomerDeviceLocked finds a device by id whatever its customer: my_customer is the
// administrator's own, which the emulator does not model.
func (d *directoryState) anyCustomerDeviceLocked(id string) *admin.ChromeOsDevice {
	for k, dev := range d.devices {
		if strings.HasSuffix(k, "/"+id) {
			return dev
		}
	}
	return nil
}

// DirectoryControlPath is where the control API puts Directory records: POST a
// SetDirectoryRequest.
const DirectoryControlPath = "/emulator/v1/directory"

// SetDirectoryRequest is the body of POST /emulator/v1/directory: device and user records in the
// Directory API's own JSON (admin.ChromeOsDevice, admin.User), as SetDirectoryDevice and
// SetDirectoryUser put them.
type SetDirectoryRequest struct {
	Devices []DirectoryDeviceRecord `json:"devices"`
	Users   []admin.User            `json:"users"`
}

// DirectoryDeviceRecord is a device record of a customer.
type DirectoryDeviceRecord struct {
	Customer string               `json:"customer"`
	Device   admin.ChromeOsDevice `json:"device"`
}

func (e *Emulator) setDirectory(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		frontend.WriteError(w, frontend.MethodNotAllowed("POST", DirectoryControlPath))
		return
	}
	var req SetDirectoryRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, frontend.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		frontend.WriteError(w, frontend.InvalidArgument("set directory: %v", err))
		return
	}
	for i, d := range req.Devices {
		if d.Customer == "" || d.Device.DeviceId == "" {
			frontend.WriteError(w, frontend.InvalidArgument("set directory: devices[%d]: customer and device.deviceId are required", i))
			return
		}
	}
	for i, u := range req.Users {
		if u.Id == "" && u.PrimaryEmail == "" {
			frontend.WriteError(w, frontend.InvalidArgument("set directory: users[%d]: id or primaryEmail is required", i))
			return
		}
	}
	for _, d := range req.Devices {
		e.SetDirectoryDevice(d.Customer, d.Device)
	}
	for _, u := range req.Users {
		e.SetDirectoryUser(u)
	}
	frontend.WriteJSON(w, http.StatusOK, struct{}{})
}
