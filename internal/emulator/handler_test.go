package emulator

import (
	"net/http"
	"testing"

	"github.com/certprov/certprov-adapter/internal/emulator/frontend/frontendtest"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
)

// TestHandlerServesBothAPIs: one listener serves the Certificate Provisioning API, the Verified
// Access API beside it (whose exact paths win over the "/v1/" prefix) and Google's 404 envelope
// for anything else; the two APIs share one front end, so a fault for any method lands on the
// next call of either.
func TestHandlerServesBothAPIs(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	post := func(path, body string) (int, string) {
		t.Helper()
		return rawCall(t, v, http.MethodPost, path, body)
	}

	if code, body := post("/v2/challenge:create", `{}`); code != 404 || frontendtest.Status(body) != "NOT_FOUND" {
		t.Errorf("unknown v2 method: %d %s, want 404 NOT_FOUND", code, body)
	}
	if code, body := post(vagoogle.PathChallengeV1, `{}`); code != 200 {
		t.Errorf("v1 challenge: %d %s", code, body)
	}
	_, err := v.api.Get("customers/my_customer/certificateProvisioningProcesses/NOPE").Do()
	frontendtest.WantError(t, err, 404, "NOT_FOUND")

	v.emu.FailNext("", 1, 503, 0)
	if code, body := post(vagoogle.PathGenerateV2, `{}`); code != 503 || frontendtest.Status(body) != "UNAVAILABLE" {
		t.Errorf("v2 generate after a fault for any method: %d %s, want 503 UNAVAILABLE", code, body)
	}
	if n := v.emu.PendingFaults(); n != 0 {
		t.Errorf("PendingFaults = %d after the Verified Access call took the fault", n)
	}
	if st := v.emu.VerifiedAccess().Stats(); st.Challenges[vagoogle.V1] != 1 || st.Challenges[vagoogle.V2] != 0 {
		t.Errorf("stats = %+v, want one v1 challenge and the v2 one refused", st)
	}
}
