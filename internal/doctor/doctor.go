// Package doctor checks a configuration against the services it names, the way the running
// adapter would use them, and says for each failure what to fix: that a token can be obtained
// with the provisioning scope, that the Pub/Sub subscription exists and the identity may pull
// from it, that the Certificate Provisioning API answers and authorises the identity for each
// customer, that the Admin SDK Directory lets it read devices and users (google.directory), and
// that each CA connection answers. `certprov-adapter doctor` prints the Report.
//
// Every check asks without changing anything: the API check reads a process that cannot
// exist, the Pub/Sub checks read the subscription and test a permission, the CA checks are the
// connectors' health checks, which issue nothing.
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"
	"golang.org/x/oauth2"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/directory"
	"github.com/certprov/certprov-adapter/internal/process"
	"github.com/certprov/certprov-adapter/internal/suggest"
)

// Status is the outcome of one check.
type Status string

// Outcomes of a check.
const (
	OK   Status = "ok"
	Fail Status = "fail"
	// Skip means the check could not be made here (an emulator without IAM, a connector without
	// a health check) or depends on one that failed; it is not a failure.
	Skip Status = "skip"
)

// Check is the result of one check.
type Check struct {
	// Name is what was checked, named after its configuration key where there is one
	// (google.credentials, pubsub.subscription, caConnections.corp).
	Name string `json:"name"`
	// Tenant is the tenant the check is of (docs/tenants.md); empty for the single-customer form.
	Tenant string `json:"tenant,omitempty"`
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do about a failure: which setting to change, which console to open.
	Fix string `json:"fix,omitempty"`
}

// Report is the result of every check, in the order they ran.
type Report struct {
	OK     bool    `json:"ok"` // no check failed
	Checks []Check `json:"checks"`
}

// ProcessReader reads one certificate provisioning process. *chromeapi.Client implements it; its
// errors are *chromeapi.Error.
type ProcessReader interface {
	Get(ctx context.Context, name string) (*process.Process, error)
}

// DirectoryReader reads Directory records. *directory.Client implements it; its errors are
// *directory.Error.
type DirectoryReader interface {
	Device(ctx context.Context, customer, deviceID string) (*csr.DeviceDirectory, error)
	User(ctx context.Context, customer, userKey string) (*csr.UserDirectory, error)
}

// SubscriptionAdmin is the part of the Pub/Sub admin API the checks use.
// *pubsub/v2/apiv1.SubscriptionAdminClient implements it; errors carry gRPC status codes.
type SubscriptionAdmin interface {
	GetSubscription(ctx context.Context, req *pubsubpb.GetSubscriptionRequest, opts ...gax.CallOption) (*pubsubpb.Subscription, error)
	TestIamPermissions(ctx context.Context, req *iampb.TestIamPermissionsRequest, opts ...gax.CallOption) (*iampb.TestIamPermissionsResponse, error)
	ListSubscriptions(ctx context.Context, req *pubsubpb.ListSubscriptionsRequest, opts ...gax.CallOption) *vkit.SubscriptionIterator
}

// CAConnection is one configured CA connection as the checks see it.
type CAConnection struct {
	Type string
	// Connector is nil when the connection could not be built; BuildErr then says why.
	Connector ca.Connector
	BuildErr  error
	Timeout   time.Duration
	// URL is the connection's url setting, for messages ("" when it has none).
	URL string
}

// Identity is who the adapter is towards Google, for messages; empty fields are unknown.
type Identity struct {
	Email    string // the service account's e-mail (client_email)
	ClientID string // its OAuth client id (client_id), what domain-wide delegation is granted to
}

// Options are the configuration and the clients the checks use; Run never builds a client.
// FromConfig builds them from a configuration.
type Options struct {
	Config *config.Config
	// Token obtains tokens for chromeapi.Scope; nil with credentials type none. TokenErr is why
	// there is none when building it failed.
	Token    oauth2.TokenSource
	TokenErr error
	Identity Identity
	// API reads processes; nil when it could not be built (APIErr says why).
	API    ProcessReader
	APIErr error
	// Subscriptions is the Pub/Sub admin client; nil when it could not be built (PubSubErr).
	Subscriptions SubscriptionAdmin
	PubSubErr     error
	// Directory reads the Admin SDK Directory when google.directory.enabled; nil otherwise, or
	// when it could not be built (DirectoryErr says why).
	Directory    DirectoryReader
	DirectoryErr error
	// CAs are the CA connections by name.
	CAs map[string]CAConnection
	// Timeout bounds each check (default 10s).
	Timeout time.Duration
}

// DefaultTimeout bounds one check when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// probeUser is a user id no account has (Google's are 21 digits): users.get of it answers 404
// when the identity may read the customer's users.
const probeUser = "000000000000000000000"

// probeID is a process id no device mints (they are random): reading it answers 404 when
// the identity may read the customer's processes.
const probeID = "00000000000000000000000000000000"

// consumePermission is what pulling from a subscription takes (roles/pubsub.subscriber has it).
const consumePermission = "pubsub.subscriptions.consume"

// Run makes every check and reports each. It never changes anything anywhere.
func Run(ctx context.Context, o Options) Report {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	d := &doctor{o: o}
	tokenOK := d.checkToken(ctx)
	d.checkPubSub(ctx)
	for _, c := range o.Config.Customers {
		d.checkAPI(ctx, c, tokenOK)
	}
	if o.Config.Google.Directory.Enabled {
		for _, c := range o.Config.Customers {
			d.checkDirectory(ctx, c)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(o.CAs)) {
		d.checkCA(ctx, name, o.CAs[name])
	}
	r := Report{OK: true, Checks: d.checks}
	for _, c := range d.checks {
		if c.Status == Fail {
			r.OK = false
		}
	}
	return r
}

type doctor struct {
	o      Options
	checks []Check
}

func (d *doctor) add(name string, st Status, detail, fix string) {
	d.checks = append(d.checks, Check{Name: name, Status: st, Detail: detail, Fix: fix})
}

// bound is ctx limited to one check's time.
func (d *doctor) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.o.Timeout)
}

// identity names the adapter's identity in a message.
func (d *doctor) identity() string {
	if e := d.o.Identity.Email; e != "" {
		return "service account " + e
	}
	return "the adapter's identity"
}

// clientID names the client id domain-wide delegation must be granted to.
func (d *doctor) clientID() string {
	if id := d.o.Identity.ClientID; id != "" {
		return id
	}
	return "the service account's client id (IAM > Service accounts > the account > Unique ID)"
}

func (d *doctor) delegationFix() string {
	return fmt.Sprintf("in the Admin console, Security > API controls > Domain-wide delegation, add client id %s with the scope %s",
		d.clientID(), chromeapi.Scope)
}

// checkToken obtains a token for the provisioning scope. It returns whether API calls can be
// made (with a token, or without credentials against an emulator).
func (d *doctor) checkToken(ctx context.Context) bool {
	const name = "google.credentials"
	cred := d.o.Config.Google.Credentials
	if cred.Type == config.CredentialsNone {
		d.add(name, Skip, "google.credentials.type is none: no token is used (an emulator)", "")
		return true
	}
	if d.o.TokenErr != nil || d.o.Token == nil {
		detail := "no token source"
		if d.o.TokenErr != nil {
			detail = d.o.TokenErr.Error()
		}
		d.add(name, Fail, detail, credentialsFix(cred))
		return false
	}
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	cctx, cancel := d.bound(ctx)
	defer cancel()
	// oauth2 token sources take no context: the wait is bounded here instead.
	go func() {
		tok, err := d.o.Token.Token()
		done <- result{tok, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-cctx.Done():
		d.add(name, Fail, fmt.Sprintf("no token within %s", d.o.Timeout),
			"check that this host reaches oauth2.googleapis.com (firewall, HTTPS_PROXY), or the metadata server for adc")
		return false
	}
	if res.err != nil {
		detail, fix := tokenFailure(res.err, cred, d)
		d.add(name, Fail, detail, fix)
		return false
	}
	if granted, ok := res.tok.Extra("scope").(string); ok && granted != "" && !strings.Contains(" "+granted+" ", " "+chromeapi.Scope+" ") {
		d.add(name, Fail, fmt.Sprintf("the token is for the scopes %q, not %s", granted, chromeapi.Scope), d.delegationFix())
		return false
	}
	detail := fmt.Sprintf("%s token for %s obtained", cred.Type, chromeapi.Scope)
	if cred.Type == config.CredentialsSelfSignedJWT {
		detail = fmt.Sprintf("self-signed JWT for %s made (Google checks it at the first call)", chromeapi.Scope)
	}
	if d.o.Identity.Email != "" {
		detail += " as " + d.o.Identity.Email
	}
	if cred.Subject != "" {
		detail += ", impersonating " + cred.Subject
	}
	d.add(name, OK, detail, "")
	return true
}

// credentialsFix says how to get working credentials of type cred.Type.
func credentialsFix(cred config.Credentials) string {
	switch cred.Type {
	case config.CredentialsADC:
		return "no Application Default Credentials here: run with an attached service account (workload identity), " +
			"set GOOGLE_APPLICATION_CREDENTIALS to a key file, or set google.credentials.type serviceAccountKey and google.credentials.file"
	default:
		return "google.credentials.file must be a service account's JSON key: create one in the Cloud console, IAM > Service accounts > the account > Keys"
	}
}

// tokenFailure explains a failed token request by the token endpoint's answer (RFC 6749 5.2).
func tokenFailure(err error, cred config.Credentials, d *doctor) (detail, fix string) {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return err.Error(), "check that this host reaches the token endpoint (oauth2.googleapis.com; firewall, HTTPS_PROXY) and that its clock is right"
	}
	code, desc := re.ErrorCode, re.ErrorDescription
	if code == "" {
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &body) == nil {
			code, desc = body.Error, body.Description
		}
	}
	detail = fmt.Sprintf("the token endpoint refused: %s", code)
	if desc != "" {
		detail += ": " + desc
	}
	if code == "" && re.Response != nil {
		detail = fmt.Sprintf("the token endpoint answered HTTP %d", re.Response.StatusCode)
	}
	switch code {
	case "unauthorized_client", "access_denied":
		if cred.Subject != "" {
			return detail, fmt.Sprintf("%s may not impersonate %s for that scope: %s", d.identity(), cred.Subject, d.delegationFix())
		}
		return detail, "the service account may not obtain tokens: check that it is enabled (IAM > Service accounts) and " + d.delegationFix()
	case "invalid_scope":
		return detail, d.delegationFix()
	case "invalid_grant":
		if cred.Subject != "" && strings.Contains(strings.ToLower(desc), "email") {
			return detail, fmt.Sprintf("google.credentials.subject %q is not a user of the domain: name an existing administrator, or remove it", cred.Subject)
		}
		return detail, "the key was deleted or disabled, or this host's clock is off: create a new key (IAM > Service accounts > the account > Keys) and check NTP"
	case "invalid_client":
		return detail, "the key does not belong to an existing service account: create a new key (IAM > Service accounts > the account > Keys)"
	}
	return detail, "check google.credentials: " + credentialsFix(cred)
}

// subscriptionName is the full resource name of the configured subscription.
func subscriptionName(ps config.PubSub) string { return ps.SubscriptionName() }

// pubsubEndpoint names where Pub/Sub is reached.
func pubsubEndpoint(ps config.PubSub) string {
	if ps.Endpoint != "" {
		return ps.Endpoint
	}
	return "pubsub.googleapis.com:443"
}

// noRetry makes one attempt of a call: a check reports what happened, it does not wait for a
// service to come back.
func noRetry() gax.CallOption { return gax.WithRetry(func() gax.Retryer { return nil }) }

// checkPubSub checks that the subscription exists and that the identity may pull from it.
func (d *doctor) checkPubSub(ctx context.Context) {
	ps := d.o.Config.PubSub
	sub := subscriptionName(ps)
	if d.o.Subscriptions == nil {
		detail := "no Pub/Sub client"
		if d.o.PubSubErr != nil {
			detail = d.o.PubSubErr.Error()
		}
		d.add("pubsub.subscription", Fail, detail, "check pubsub.endpoint and google.credentials")
		d.add("pubsub.permissions", Skip, "needs a Pub/Sub client", "")
		return
	}
	cctx, cancel := d.bound(ctx)
	got, err := d.o.Subscriptions.GetSubscription(cctx, &pubsubpb.GetSubscriptionRequest{Subscription: sub}, noRetry())
	cancel()
	exists := false
	switch code := status.Code(err); {
	case err == nil:
		exists = true
		d.subscriptionFound(sub, got)
	case code == codes.NotFound:
		fix := fmt.Sprintf("create it with certprov-adapter setup pubsub --topic TOPIC (or gcloud pubsub subscriptions create %s --project %s --topic TOPIC --ack-deadline 60), TOPIC being the one named in the Admin console's certificate provisioning settings, or set pubsub.subscription and pubsub.project to an existing one",
			lastSegment(sub), projectOf(sub, ps.Project))
		if s := d.closestSubscription(ctx, sub, projectOf(sub, ps.Project)); s != "" {
			fix = fmt.Sprintf("did you mean %q? Set pubsub.subscription to it, or ", s) + fix
		}
		d.add("pubsub.subscription", Fail, sub+" does not exist", fix)
		d.add("pubsub.permissions", Skip, "needs the subscription", "")
		return
	case code == codes.PermissionDenied:
		// Pulling does not need pubsub.subscriptions.get (roles/pubsub.subscriber lacks it):
		// the permission check below is the one that matters.
		d.add("pubsub.subscription", Skip, fmt.Sprintf("%s may not read %s (pubsub.subscriptions.get, e.g. roles/pubsub.viewer), so whether it exists is not checked", d.identity(), sub), "")
	default:
		detail, fix := grpcFailure(err, pubsubEndpoint(ps), d)
		d.add("pubsub.subscription", Fail, detail, fix)
		d.add("pubsub.permissions", Skip, "needs a reachable Pub/Sub", "")
		return
	}

	cctx, cancel = d.bound(ctx)
	perms, err := d.o.Subscriptions.TestIamPermissions(cctx, &iampb.TestIamPermissionsRequest{Resource: sub, Permissions: []string{consumePermission}}, noRetry())
	cancel()
	grant := fmt.Sprintf("grant roles/pubsub.subscriber on the subscription: gcloud pubsub subscriptions add-iam-policy-binding %s --project %s --member serviceAccount:%s --role roles/pubsub.subscriber",
		lastSegment(sub), projectOf(sub, ps.Project), orPlaceholder(d.o.Identity.Email, "SERVICE_ACCOUNT_EMAIL"))
	switch code := status.Code(err); {
	case err == nil:
		for _, p := range perms.GetPermissions() {
			if p == consumePermission {
				d.add("pubsub.permissions", OK, fmt.Sprintf("%s may pull from %s (%s)", d.identity(), sub, consumePermission), "")
				return
			}
		}
		detail := fmt.Sprintf("%s may not pull from %s (no %s)", d.identity(), sub, consumePermission)
		if !exists {
			detail += ", or the subscription does not exist"
		}
		d.add("pubsub.permissions", Fail, detail, grant)
	case code == codes.Unimplemented:
		d.add("pubsub.permissions", Skip, "the Pub/Sub endpoint has no IAM (an emulator): who may pull is not checked", "")
	default:
		detail, fix := grpcFailure(err, pubsubEndpoint(ps), d)
		d.add("pubsub.permissions", Fail, detail, fix)
	}
}

// subscriptionFound reports an existing subscription, failing one that can receive nothing.
func (d *doctor) subscriptionFound(name string, s *pubsubpb.Subscription) {
	switch {
	case s.GetDetached():
		d.add("pubsub.subscription", Fail, name+" is detached from its topic: it receives nothing",
			"create a new subscription on the topic and set pubsub.subscription to it")
	case s.GetTopic() == "_deleted-topic_":
		d.add("pubsub.subscription", Fail, name+"'s topic was deleted: it receives nothing",
			"recreate the topic named in the Admin console's certificate provisioning settings and a subscription on it")
	case s.GetPushConfig().GetPushEndpoint() != "":
		d.add("pubsub.subscription", Fail, name+" is a push subscription; the adapter pulls",
			"create a pull subscription on the topic and set pubsub.subscription to it")
	default:
		d.add("pubsub.subscription", OK, fmt.Sprintf("%s exists (topic %s, ack deadline %ds)", name, s.GetTopic(), s.GetAckDeadlineSeconds()), "")
	}
}

// closestSubscription finds the existing subscription whose id the configured one probably
// misspells, or ""; listing needs pubsub.subscriptions.list, so failures are quiet.
func (d *doctor) closestSubscription(ctx context.Context, sub, project string) string {
	cctx, cancel := d.bound(ctx)
	defer cancel()
	it := d.o.Subscriptions.ListSubscriptions(cctx, &pubsubpb.ListSubscriptionsRequest{Project: "projects/" + project}, noRetry())
	var ids []string
	for len(ids) < 1000 {
		s, err := it.Next()
		if err != nil {
			if !errors.Is(err, iterator.Done) {
				return ""
			}
			break
		}
		ids = append(ids, lastSegment(s.GetName()))
	}
	return suggest.Closest(lastSegment(sub), ids)
}

// grpcFailure explains a failed Pub/Sub call.
func grpcFailure(err error, endpoint string, d *doctor) (detail, fix string) {
	st, _ := status.FromError(err)
	msg := st.Message()
	if msg == "" {
		msg = err.Error()
	}
	detail = fmt.Sprintf("Pub/Sub at %s: %s: %s", endpoint, st.Code(), msg)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Sprintf("cannot reach Pub/Sub at %s: %s", endpoint, msg),
			fmt.Sprintf("check that %s is reachable from this host (DNS, firewall, HTTPS_PROXY); with an emulator, that it runs and pubsub.endpoint or PUBSUB_EMULATOR_HOST names it", endpoint)
	case codes.Unauthenticated:
		return detail, "Pub/Sub refused the credentials: check google.credentials (see the google.credentials check)"
	case codes.PermissionDenied:
		return detail, fmt.Sprintf("grant %s roles/pubsub.subscriber on the subscription", d.identity())
	case codes.InvalidArgument:
		return detail, "check pubsub.project and pubsub.subscription: a project id and a subscription id, or projects/PROJECT/subscriptions/ID"
	}
	return detail, "check pubsub.endpoint, pubsub.project and google.credentials"
}

// checkAPI reads a process that cannot exist under customer: 404 proves that the API answers
// and authorises the identity for the customer's processes.
func (d *doctor) checkAPI(ctx context.Context, customer string, tokenOK bool) {
	name := "provisioning API customers/" + customer
	endpoint := d.o.Config.Google.Endpoint
	if endpoint == "" {
		endpoint = "https://chromemanagement.googleapis.com/"
	}
	switch {
	case !tokenOK:
		d.add(name, Skip, "needs a token (see google.credentials)", "")
		return
	case d.o.API == nil:
		detail := "no API client"
		if d.o.APIErr != nil {
			detail = d.o.APIErr.Error()
		}
		d.add(name, Fail, detail, "check google.endpoint and google.credentials")
		return
	}
	cctx, cancel := d.bound(ctx)
	_, err := d.o.API.Get(cctx, process.Name(customer, probeID))
	cancel()
	if err == nil || errors.Is(err, process.ErrNotFound) {
		d.add(name, OK, fmt.Sprintf("%s answers and lets %s read customer %s's processes", endpoint, d.identity(), customer), "")
		return
	}
	var ae *chromeapi.Error
	if !errors.As(err, &ae) || ae.Code == 0 {
		d.add(name, Fail, fmt.Sprintf("cannot reach %s: %v", endpoint, err),
			"check that this host reaches it (DNS, firewall, HTTPS_PROXY), and google.endpoint if set")
		return
	}
	detail := fmt.Sprintf("HTTP %d %s: %s", ae.Code, ae.Status, ae.Message)
	switch {
	case ae.Code == 401:
		d.add(name, Fail, "the API refused the token: "+detail,
			fmt.Sprintf("the token must be for the scope %s: check google.credentials; %s", chromeapi.Scope, d.delegationFix()))
	case ae.Code == 403 && (strings.Contains(ae.Message, "has not been used") || strings.Contains(ae.Message, "is disabled") || strings.Contains(ae.Status, "SERVICE_DISABLED")):
		d.add(name, Fail, "the Chrome Management API is not enabled: "+detail,
			"enable it in the service account's Cloud project: gcloud services enable chromemanagement.googleapis.com --project PROJECT")
	case ae.Code == 403:
		d.add(name, Fail, "the API refused the identity: "+detail,
			fmt.Sprintf("the service account is not authorised for the scope %s: in the Admin console, Security > API controls > Domain-wide delegation, add client id %s with that scope; and customers must hold the Admin console's customer id (Account > Account settings) or my_customer",
				chromeapi.Scope, d.clientID()))
	case ae.Code == 400:
		d.add(name, Fail, fmt.Sprintf("the API does not accept customer %s: %s", customer, detail),
			"set customers to the id in Admin console > Account > Account settings (C followed by letters and digits), or my_customer")
	case ae.Code == 429:
		d.add(name, Fail, "the API quota is exhausted: "+detail,
			"wait, lower google.rateLimit if the adapter runs beside other clients of the project, or ask for more quota in the Cloud console")
	default:
		d.add(name, Fail, detail, "Google's side failed: try again later; if it persists, check https://www.google.com/appsstatus")
	}
}

// checkDirectory reads a device and a user that cannot exist under customer, through the
// Directory client the adapter uses (its own token: google.credentials with
// google.directory.subject): two 404s prove the Admin SDK answers and lets the identity read the
// customer's devices and users, which profiles using Directory data need.
func (d *doctor) checkDirectory(ctx context.Context, customer string) {
	name := "google.directory customers/" + customer
	if d.o.Directory == nil {
		detail := "no Directory client"
		if d.o.DirectoryErr != nil {
			detail = d.o.DirectoryErr.Error()
		}
		d.add(name, Fail, detail, "check google.directory and google.credentials")
		return
	}
	for _, probe := range []struct {
		what string
		read func(context.Context) error
	}{
		{"devices", func(ctx context.Context) error { _, err := d.o.Directory.Device(ctx, customer, probeID); return err }},
		{"users", func(ctx context.Context) error { _, err := d.o.Directory.User(ctx, customer, probeUser); return err }},
	} {
		cctx, cancel := d.bound(ctx)
		err := probe.read(cctx)
		cancel()
		var de *directory.Error
		if err == nil || errors.As(err, &de) && de.NotFound() {
			continue
		}
		switch {
		case de == nil || de.Code == 0:
			d.add(name, Fail, fmt.Sprintf("cannot read the Directory's %s: %v", probe.what, err), d.directoryFix())
		case de.Forbidden() || de.Code == 401:
			d.add(name, Fail, fmt.Sprintf("the Directory refused to let %s read customer %s's %s: %v", d.identity(), customer, probe.what, err), d.directoryFix())
		case de.Code == 400:
			d.add(name, Fail, fmt.Sprintf("the Directory does not accept customer %s: %v", customer, err),
				"set customers to the id in Admin console > Account > Account settings, or my_customer")
		default:
			d.add(name, Fail, err.Error(), "Google's side failed or throttled: try again later; google.directory.rateLimit bounds the adapter's own calls")
		}
		return
	}
	d.add(name, OK, fmt.Sprintf("the Directory lets %s read customer %s's devices and users", d.identity(), customer), "")
}

// directoryFix says how to grant the Directory's access.
func (d *doctor) directoryFix() string {
	return fmt.Sprintf("in the Admin console, Security > API controls > Domain-wide delegation, add client id %s with the scopes %s and %s, "+
		"and set google.directory.subject to an administrator who may read ChromeOS devices and users (docs/directory.md)",
		d.clientID(), directory.ScopeDevices, directory.ScopeUsers)
}

// checkCA runs a connection's health check.
func (d *doctor) checkCA(ctx context.Context, name string, c CAConnection) {
	key := "caConnections." + name
	if c.Connector == nil {
		detail := "cannot be built"
		if c.BuildErr != nil {
			detail = c.BuildErr.Error()
		}
		d.add(key, Fail, detail, "fix its settings: certprov-adapter validate --config FILE prints each problem at its path")
		return
	}
	pinger, ok := c.Connector.(ca.Pinger)
	if !ok {
		d.add(key, Skip, fmt.Sprintf("the %s connector has no health check", c.Type), "")
		return
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = d.o.Timeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := pinger.Ping(cctx)
	cancel()
	if err == nil {
		where := ""
		if c.URL != "" {
			where = " at " + displayURL(c.URL)
		}
		d.add(key, OK, fmt.Sprintf("the %s CA%s passed its health check", c.Type, where), "")
		return
	}
	d.add(key, Fail, err.Error(), caFix(key, c, err, timeout))
}

// displayURL is u without credentials and query, which may carry keys.
func displayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the configured url"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

func lastSegment(name string) string { return name[strings.LastIndex(name, "/")+1:] }

// projectOf is the project of a full subscription name, or def.
func projectOf(sub, def string) string {
	if rest, ok := strings.CutPrefix(sub, "projects/"); ok {
		if p, _, ok := strings.Cut(rest, "/"); ok {
			return p
		}
	}
	return def
}

func orPlaceholder(s, placeholder string) string {
	if s == "" {
		return placeholder
	}
	return s
}
