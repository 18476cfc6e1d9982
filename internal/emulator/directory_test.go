package emulator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admin "google.golang.org/api/admin/directory/v1"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
)

// TestDirectoryEndpoints: chromeosdevices.get and users.get answer the records tests put there,
// and errors in the Directory's envelope (code, message, errors[].reason), as the generated
// client parses it.
func TestDirectoryEndpoints(t *testing.T) {
	e, err := New(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()
	e.SetDirectoryDevice("C0abc", admin.ChromeOsDevice{DeviceId: "d-1", AnnotatedAssetId: "A-1"})
	e.SetDirectoryUser(admin.User{Id: "42", PrimaryEmail: "Alice@Example.com", Aliases: []string{"al@example.com"}, OrgUnitPath: "/Staff"})

	get := func(path string, v any) int {
		t.Helper()
		resp, err := http.Get(srv.URL + path + "?projection=FULL&alt=json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	var d admin.ChromeOsDevice
	for _, c := range []string{"C0abc", "my_customer"} {
		if code := get("/admin/directory/v1/customer/"+c+"/devices/chromeos/d-1", &d); code != 200 || d.AnnotatedAssetId != "A-1" || d.Kind != "admin#directory#chromeosdevice" {
			t.Fatalf("device of %s: %d %+v", c, code, d)
		}
	}
	var u admin.User
	for _, key := range []string{"42", "alice@example.com", "al@example.com"} {
		if code := get("/admin/directory/v1/users/"+key, &u); code != 200 || u.OrgUnitPath != "/Staff" {
			t.Fatalf("user %s: %d %+v", key, code, u)
		}
	}
	var env directoryError
	if code := get("/admin/directory/v1/customer/C0other/devices/chromeos/d-1", &env); code != 404 ||
		env.Error.Code != 404 || len(env.Error.Errors) != 1 || env.Error.Errors[0].Reason != "notFound" {
		t.Fatalf("device of another customer: %d %+v", code, env)
	}
	if err := e.Inject(frontend.Fault{Method: MethodDirectoryUsersGet, Times: 1, Status: 403}); err != nil {
		t.Fatal(err)
	}
	env = directoryError{}
	if code := get("/admin/directory/v1/users/42", &env); code != 403 || env.Error.Errors[0].Reason != "forbidden" {
		t.Fatalf("injected 403: %d %+v", code, env)
	}
	if n := e.DirectoryCalls(MethodDirectoryUsersGet); n != 4 {
		t.Fatalf("users.get calls %d, want 4", n)
	}
	if n := e.DirectoryCalls(MethodDirectoryDevicesGet); n != 3 {
		t.Fatalf("chromeosdevices.get calls %d, want 3", n)
	}

	// The control API puts records too, and refuses one without its key.
	post := func(body string) int {
		t.Helper()
		resp, err := http.Post(srv.URL+DirectoryControlPath, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(`{"devices":[{"customer":"C0abc","device":{"deviceId":"d-2","annotatedLocation":"Lyon"}}],"users":[{"id":"7","orgUnitPath":"/Ops"}]}`); code != 200 {
		t.Fatalf("set directory: %d", code)
	}
	if code := get("/admin/directory/v1/customer/C0abc/devices/chromeos/d-2", &d); code != 200 || d.AnnotatedLocation != "Lyon" {
		t.Fatalf("device set through the control API: %d %+v", code, d)
	}
	if code := post(`{"devices":[{"customer":"C0abc","device":{"annotatedLocation":"x"}}]}`); code != 400 {
		t.Fatalf("a device without an id: %d, want 400", code)
	}
}

// TestDirectoryRecords: with Options.DirectoryRecords every started process's device and user
// have a record, derived from the spec, without replacing one a test put.
func TestDirectoryRecords(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Options{DirectoryRecords: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()
	e.SetDirectoryDevice("C0abc", admin.ChromeOsDevice{DeviceId: "own", AnnotatedAssetId: "MINE"})
	if _, err := e.StartProcess(ctx, ProcessSpec{Customer: "C0abc", Serial: "5CD9", DeviceDirectoryID: "gen", NoPublish: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.StartProcess(ctx, ProcessSpec{Customer: "C0abc", DeviceDirectoryID: "own", Scope: ScopeUser, UserEmail: "bo@example.com", UserDirectoryID: "123456789", NoPublish: true}); err != nil {
		t.Fatal(err)
	}
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var d admin.ChromeOsDevice
	get("/admin/directory/v1/customer/C0abc/devices/chromeos/gen", &d)
	if d.AnnotatedAssetId != "ASSET-5CD9" || d.SerialNumber != "5CD9" || d.OrgUnitPath != "/Emulated/Devices" {
		t.Fatalf("generated device record %+v", d)
	}
	get("/admin/directory/v1/customer/C0abc/devices/chromeos/own", &d)
	if d.AnnotatedAssetId != "MINE" {
		t.Fatalf("the test's record was replaced: %+v", d)
	}
	var u admin.User
	get("/admin/directory/v1/users/bo@example.com", &u)
	raw, _ := json.Marshal(u.ExternalIds)
	if u.Id != "123456789" || u.OrgUnitPath != "/Emulated/Users" || !strings.Contains(string(raw), `"value":"E456789"`) {
		t.Fatalf("generated user record %+v %s", u, raw)
	}
}
