package pubsubsetup_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/pubsubsetup"
)

const (
	project     = "setup"
	topic       = "projects/setup/topics/certprov"
	deadLetter  = "projects/setup/topics/certprov-dead"
	subName     = "projects/setup/subscriptions/certprov-adapter"
	deadSubName = "projects/setup/subscriptions/certprov-dead"
)

// changes records the calls that change something on the pstest server, passing each on.
type changes struct {
	mu    sync.Mutex
	calls []string
	name  string
}

func (c *changes) React(any) (bool, any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, c.name)
	return false, nil, nil
}

type server struct {
	client *pubsub.Client
	counts []*changes
}

// changed returns the changing calls the server saw since the last call.
func (s *server) changed() []string {
	var out []string
	for _, c := range s.counts {
		c.mu.Lock()
		out = append(out, c.calls...)
		c.calls = nil
		c.mu.Unlock()
	}
	slices.Sort(out)
	return out
}

// newServer starts pstest, in process, and connects to it over gRPC with the client the adapter
// builds from its configuration (pubsub.endpoint, pubsub.insecure).
func newServer(t *testing.T) (*server, *config.Config) {
	t.Helper()
	s := &server{}
	var opts []pstest.ServerReactorOption
	for _, m := range []string{"CreateTopic", "CreateSubscription", "UpdateSubscription"} {
		c := &changes{name: m}
		s.counts = append(s.counts, c)
		opts = append(opts, pstest.ServerReactorOption{FuncName: m, Reactor: c})
	}
	srv := pstest.NewServer(opts...)
	t.Cleanup(func() { _ = srv.Close() })
	var cfg *config.Config
	s.client, cfg = connect(t, srv)
	return s, cfg
}

// connect is a configuration for srv (the subscription certprov-adapter in project) and the
// client the adapter builds from it.
func connect(t *testing.T, srv *pstest.Server) (*pubsub.Client, *config.Config) {
	t.Helper()
	cfg := config.Defaults()
	cfg.PubSub.Project, cfg.PubSub.Subscription = project, "certprov-adapter"
	cfg.PubSub.Endpoint, cfg.PubSub.Insecure = srv.Addr, true
	client, err := adapter.PubSubClient(context.Background(), &cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client, &cfg
}

func (s *server) createTopic(t *testing.T, name string) {
	t.Helper()
	if _, err := s.client.TopicAdminClient.CreateTopic(context.Background(), &pubsubpb.Topic{Name: name}); err != nil {
		t.Fatal(err)
	}
}

func (s *server) get(t *testing.T, name string) *pubsubpb.Subscription {
	t.Helper()
	sub, err := s.client.SubscriptionAdminClient.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: name})
	if err != nil {
		t.Fatalf("read back %s: %v", name, err)
	}
	return sub
}

func (s *server) run(t *testing.T, cfg *config.Config, mode pubsubsetup.Mode, topic, deadLetter string) (pubsubsetup.Report, error) {
	t.Helper()
	settings, err := pubsubsetup.For(cfg.PubSub, cfg.Google.RequestTimeout, topic, deadLetter)
	if err != nil {
		t.Fatal(err)
	}
	return pubsubsetup.Run(context.Background(), pubsubsetup.Options{
		Subscriptions: s.client.SubscriptionAdminClient, Topics: s.client.TopicAdminClient,
		Settings: settings, Mode: mode, Timeout: 10 * time.Second,
	})
}

func actions(r pubsubsetup.Report) map[string]pubsubsetup.Action {
	out := map[string]pubsubsetup.Action{}
	for _, res := range r.Resources {
		out[res.Kind] = res.Action
	}
	return out
}

// TestCreateFromNothing: on a server with only the notification topic, setup creates the
// dead-letter topic, the subscription and the dead-letter subscription; the settings read back
// from the server are the adapter's, and a second run changes nothing and says so.
func TestCreateFromNothing(t *testing.T) {
	s, cfg := newServer(t)
	s.createTopic(t, topic)
	s.changed()

	r, err := s.run(t, cfg, pubsubsetup.Apply, "certprov", "certprov-dead")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]pubsubsetup.Action{
		pubsubsetup.KindDeadLetterTopic: pubsubsetup.Created, pubsubsetup.KindSubscription: pubsubsetup.Created,
		pubsubsetup.KindDeadLetterSubscription: pubsubsetup.Created,
	}
	if got := actions(r); !equalActions(got, want) || !r.Changed || r.Problems || r.Topic != topic {
		t.Fatalf("report %+v", r)
	}
	sub := s.get(t, subName)
	if sub.GetTopic() != topic || sub.GetAckDeadlineSeconds() != 60 ||
		sub.GetMessageRetentionDuration().AsDuration() != 7*24*time.Hour ||
		sub.GetRetryPolicy().GetMinimumBackoff().AsDuration() != 10*time.Second ||
		sub.GetRetryPolicy().GetMaximumBackoff().AsDuration() != 10*time.Minute ||
		sub.GetDeadLetterPolicy().GetDeadLetterTopic() != deadLetter || sub.GetDeadLetterPolicy().GetMaxDeliveryAttempts() != 20 ||
		sub.GetExpirationPolicy() == nil || sub.GetExpirationPolicy().GetTtl() != nil ||
		sub.GetEnableExactlyOnceDelivery() || sub.GetPushConfig().GetPushEndpoint() != "" {
		t.Errorf("read back: %v", sub)
	}
	if _, err := s.client.TopicAdminClient.GetTopic(context.Background(), &pubsubpb.GetTopicRequest{Topic: deadLetter}); err != nil {
		t.Errorf("dead-letter topic: %v", err)
	}
	if dead := s.get(t, deadSubName); dead.GetTopic() != deadLetter || dead.GetExpirationPolicy() == nil {
		t.Errorf("dead-letter subscription: %v", dead)
	}
	if got := s.changed(); !slices.Equal(got, []string{"CreateSubscription", "CreateSubscription", "CreateTopic"}) {
		t.Errorf("changing calls: %v", got)
	}

	// Idempotent: nothing to do, nothing sent, nothing different on the server.
	r, err = s.run(t, cfg, pubsubsetup.Apply, "certprov", "certprov-dead")
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]pubsubsetup.Action{
		pubsubsetup.KindDeadLetterTopic: pubsubsetup.UpToDate, pubsubsetup.KindSubscription: pubsubsetup.UpToDate,
		pubsubsetup.KindDeadLetterSubscription: pubsubsetup.Kept,
	}
	if got := actions(r); !equalActions(got, want) || r.Changed || r.Problems {
		t.Errorf("second run: %+v", r)
	}
	if got := s.changed(); len(got) != 0 {
		t.Errorf("second run changed: %v", got)
	}
	if again := s.get(t, subName); !proto.Equal(again, sub) {
		t.Errorf("second run: the subscription changed from\n%v\nto\n%v", sub, again)
	}
	// Without --topic, an existing subscription keeps its topic.
	if r, err := s.run(t, cfg, pubsubsetup.Check, "", "certprov-dead"); err != nil || r.Problems || r.Topic != topic {
		t.Errorf("check without a topic: %+v, %v", r, err)
	}
}

func equalActions(a, b map[string]pubsubsetup.Action) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// existing creates the subscription as the emulator and a plain `gcloud pubsub subscriptions
// create` do: ack deadline 10 s, no retry policy, the default expiration; with a label and a
// dead-letter policy of the operator's that setup does not manage.
func existing(t *testing.T, s *server) *pubsubpb.Subscription {
	t.Helper()
	s.createTopic(t, topic)
	s.createTopic(t, "projects/setup/topics/ops-dead")
	sub, err := s.client.SubscriptionAdminClient.CreateSubscription(context.Background(), &pubsubpb.Subscription{
		Name: subName, Topic: topic, AckDeadlineSeconds: 10, Labels: map[string]string{"owner": "ops"},
		DeadLetterPolicy: &pubsubpb.DeadLetterPolicy{DeadLetterTopic: "projects/setup/topics/ops-dead", MaxDeliveryAttempts: 5},
		ExpirationPolicy: &pubsubpb.ExpirationPolicy{Ttl: durationpb.New(31 * 24 * time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.changed()
	return sub
}

func differences(res pubsubsetup.Report) map[string]pubsubsetup.Difference {
	out := map[string]pubsubsetup.Difference{}
	for _, x := range res.Resources {
		if x.Kind == pubsubsetup.KindSubscription {
			for _, d := range x.Differences {
				out[d.Setting] = d
			}
		}
	}
	return out
}

// TestCheckReportsDifferences: --check on a subscription made with other settings reports each
// one that differs, changes nothing, and is a problem (exit 1).
func TestCheckReportsDifferences(t *testing.T) {
	s, cfg := newServer(t)
	before := existing(t, s)
	r, err := s.run(t, cfg, pubsubsetup.Check, "certprov", "")
	if err != nil {
		t.Fatal(err)
	}
	if actions(r)[pubsubsetup.KindSubscription] != pubsubsetup.Differs || !r.Problems || r.Changed {
		t.Fatalf("report %+v", r)
	}
	d := differences(r)
	if ack := d["ackDeadline"]; ack.Have != "10s" || ack.Want != "60s" || ack.Fixed || ack.Fix != "" {
		t.Errorf("ackDeadline: %+v", ack)
	}
	if got := d["retryPolicy"]; got.Have != "none (redelivered at once)" || got.Want != "exponential backoff 10s to 10m" {
		t.Errorf("retryPolicy: %+v", got)
	}
	if got := d["expirationPolicy"]; got.Want != "never" {
		t.Errorf("expirationPolicy: %+v", got)
	}
	// Not asked to manage the dead-letter policy, and the rest is as wanted.
	for _, name := range []string{"deadLetterPolicy", "topic", "messageRetention", "exactlyOnceDelivery", "pushConfig"} {
		if got, ok := d[name]; ok {
			t.Errorf("%s reported: %+v", name, got)
		}
	}
	if got := s.changed(); len(got) != 0 {
		t.Errorf("--check changed: %v", got)
	}
	if after := s.get(t, subName); !proto.Equal(after, before) {
		t.Errorf("--check changed the subscription:\n%v", after)
	}
	// A dry run says the same and changes nothing either.
	r, err = s.run(t, cfg, pubsubsetup.DryRun, "certprov", "certprov-dead")
	if err != nil || actions(r)[pubsubsetup.KindSubscription] != pubsubsetup.WouldUpdate || actions(r)[pubsubsetup.KindDeadLetterTopic] != pubsubsetup.WouldCreate || r.Changed {
		t.Errorf("dry run: %+v, %v", r, err)
	}
	if got := s.changed(); len(got) != 0 {
		t.Errorf("--dry-run changed: %v", got)
	}
}

// TestUpdateFixesDifferences: setup updates exactly the settings that differ (the field mask
// leaves the operator's label and dead-letter policy alone), reads them back, and a second run
// finds nothing to do.
func TestUpdateFixesDifferences(t *testing.T) {
	s, cfg := newServer(t)
	existing(t, s)
	r, err := s.run(t, cfg, pubsubsetup.Apply, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if actions(r)[pubsubsetup.KindSubscription] != pubsubsetup.Updated || !r.Changed || r.Problems {
		t.Fatalf("report %+v", r)
	}
	for name, d := range differences(r) {
		if !d.Fixed {
			t.Errorf("%s not fixed: %+v", name, d)
		}
	}
	sub := s.get(t, subName)
	if sub.GetAckDeadlineSeconds() != 60 || sub.GetRetryPolicy().GetMaximumBackoff().AsDuration() != 10*time.Minute ||
		sub.GetExpirationPolicy().GetTtl() != nil {
		t.Errorf("read back: %v", sub)
	}
	if sub.GetLabels()["owner"] != "ops" || sub.GetDeadLetterPolicy().GetDeadLetterTopic() != "projects/setup/topics/ops-dead" {
		t.Errorf("setup changed what it does not manage: %v", sub)
	}
	if got := s.changed(); !slices.Equal(got, []string{"UpdateSubscription"}) {
		t.Errorf("changing calls: %v", got)
	}
	r, err = s.run(t, cfg, pubsubsetup.Apply, "", "")
	if err != nil || r.Changed || actions(r)[pubsubsetup.KindSubscription] != pubsubsetup.UpToDate {
		t.Errorf("second run: %+v, %v", r, err)
	}

	// Asked for a dead-letter topic, setup replaces the operator's policy with it.
	r, err = s.run(t, cfg, pubsubsetup.Apply, "", "certprov-dead")
	if err != nil || !r.Changed {
		t.Fatalf("dead letters: %+v, %v", r, err)
	}
	if d := differences(r)["deadLetterPolicy"]; !d.Fixed || d.Want != deadLetter+" after 20 delivery attempts" {
		t.Errorf("deadLetterPolicy: %+v", d)
	}
	if got := s.get(t, subName).GetDeadLetterPolicy(); got.GetDeadLetterTopic() != deadLetter || got.GetMaxDeliveryAttempts() != 20 {
		t.Errorf("read back: %v", got)
	}
}

// TestTopicCannotChange: a subscription on another topic than the one named is reported with
// what to do, never deleted or recreated; what can be updated still is.
func TestTopicCannotChange(t *testing.T) {
	s, cfg := newServer(t)
	existing(t, s)
	s.createTopic(t, "projects/setup/topics/other")
	r, err := s.run(t, cfg, pubsubsetup.Apply, "other", "")
	if err != nil {
		t.Fatal(err)
	}
	d := differences(r)
	if got := d["topic"]; got.Have != topic || got.Fixed || !strings.Contains(got.Fix, "cannot be changed") {
		t.Errorf("topic: %+v", got)
	}
	if !d["ackDeadline"].Fixed || !r.Problems {
		t.Errorf("report %+v", r)
	}
	if got := s.get(t, subName); got.GetTopic() != topic {
		t.Errorf("topic changed: %v", got)
	}
}

// TestDeletedTopic: a subscription whose topic was deleted receives nothing; it is reported with
// what to do, also when no topic is named.
func TestDeletedTopic(t *testing.T) {
	s, cfg := newServer(t)
	existing(t, s)
	if err := s.client.TopicAdminClient.DeleteTopic(context.Background(), &pubsubpb.DeleteTopicRequest{Topic: topic}); err != nil {
		t.Fatal(err)
	}
	r, err := s.run(t, cfg, pubsubsetup.Apply, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := differences(r)["state"]; got.Have != "its topic was deleted" || !strings.Contains(got.Fix, "cannot be repaired") || !r.Problems {
		t.Errorf("state: %+v in %+v", got, r)
	}
}

// TestPushBecomesPull: a push subscription is reported by its endpoint's host alone (the path
// and query may carry a token) and switched to pull.
func TestPushBecomesPull(t *testing.T) {
	s, cfg := newServer(t)
	s.createTopic(t, topic)
	if _, err := s.client.SubscriptionAdminClient.CreateSubscription(context.Background(), &pubsubpb.Subscription{
		Name: subName, Topic: topic, AckDeadlineSeconds: 60,
		PushConfig: &pubsubpb.PushConfig{PushEndpoint: "https://hook.example.com/push?token=s3cr3t"},
	}); err != nil {
		t.Fatal(err)
	}
	r, err := s.run(t, cfg, pubsubsetup.Apply, "certprov", "")
	if err != nil {
		t.Fatal(err)
	}
	if d := differences(r)["pushConfig"]; d.Have != "push to hook.example.com" || d.Want != "pull" || !d.Fixed {
		t.Errorf("pushConfig: %+v", d)
	}
	if got := s.get(t, subName).GetPushConfig().GetPushEndpoint(); got != "" {
		t.Errorf("still pushes to %q", got)
	}
	if b, _ := json.Marshal(r); strings.Contains(string(b), "s3cr3t") {
		t.Errorf("the report carries the endpoint's token: %s", b)
	}
}

// TestPermissionDenied: an identity that may not create subscriptions is told what it needs.
func TestPermissionDenied(t *testing.T) {
	srv := pstest.NewServer(pstest.WithErrorInjection("CreateSubscription", codes.PermissionDenied, "User not authorized to perform this action."))
	t.Cleanup(func() { _ = srv.Close() })
	client, cfg := connect(t, srv)
	s := &server{client: client}
	s.createTopic(t, topic)
	_, err := s.run(t, cfg, pubsubsetup.Apply, "certprov", "")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "create subscription "+subName) ||
		!strings.Contains(err.Error(), "roles/pubsub.editor") {
		t.Errorf("error: %v", err)
	}
}

// TestMissingTopic: a topic that does not exist is a clear error, and nothing is created; a
// subscription to create needs a topic at all.
func TestMissingTopic(t *testing.T) {
	s, cfg := newServer(t)
	_, err := s.run(t, cfg, pubsubsetup.Apply, "certprov", "certprov-dead")
	if !errors.Is(err, pubsubsetup.ErrTopicNotFound) || !strings.Contains(err.Error(), "projects/setup/topics/certprov does not exist: create it (gcloud pubsub topics create certprov --project setup)") {
		t.Errorf("missing topic: %v", err)
	}
	if _, err := s.client.SubscriptionAdminClient.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: subName}); status.Code(err) != codes.NotFound {
		t.Errorf("subscription after a failed run: %v", err)
	}
	if got := s.changed(); len(got) != 0 {
		t.Errorf("changing calls: %v", got)
	}
	if _, err := s.run(t, cfg, pubsubsetup.Apply, "", ""); !errors.Is(err, pubsubsetup.ErrTopicRequired) {
		t.Errorf("no topic: %v", err)
	}
}

func TestAckDeadline(t *testing.T) {
	for _, tt := range []struct{ timeout, want time.Duration }{
		{config.DefaultRequestTimeout, 60 * time.Second},
		{time.Second, 10 * time.Second},
		{12500 * time.Millisecond, 25 * time.Second},
		{12400 * time.Millisecond, 25 * time.Second}, // rounded up: never shorter than two calls
		{10 * time.Minute, 600 * time.Second},
	} {
		if got := pubsubsetup.AckDeadline(tt.timeout); got != tt.want {
			t.Errorf("AckDeadline(%s) = %s, want %s", tt.timeout, got, tt.want)
		}
	}
}

func TestForRefusesBadNames(t *testing.T) {
	cfg := config.Defaults()
	cfg.PubSub.Project, cfg.PubSub.Subscription = project, "s"
	for _, tt := range []struct{ topic, dead, want string }{
		{"projects/x/subscriptions/y", "", "not a topic"},
		{"a/b", "", "not a topic"},
		{"t", "t", "is the notification topic itself"},
	} {
		if _, err := pubsubsetup.For(cfg.PubSub, cfg.Google.RequestTimeout, tt.topic, tt.dead); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("For(%q, %q): %v", tt.topic, tt.dead, err)
		}
	}
	s, err := pubsubsetup.For(cfg.PubSub, cfg.Google.RequestTimeout, "projects/other/topics/t", "d")
	if err != nil || s.Topic != "projects/other/topics/t" || s.DeadLetterTopic != "projects/setup/topics/d" || s.Subscription != "projects/setup/subscriptions/s" {
		t.Errorf("For: %+v, %v", s, err)
	}
}

// TestHandSteps: the steps name the service account when its key file says who it is, the
// dead-letter bindings only with a dead-letter topic, and the configured references.
func TestHandSteps(t *testing.T) {
	cfg := config.Defaults()
	cfg.PubSub.Project, cfg.PubSub.Subscription = project, "certprov-adapter"
	text := func(steps []pubsubsetup.Step) string {
		var b strings.Builder
		for _, s := range steps {
			b.WriteString(s.Title + "\n" + strings.Join(s.Commands, "\n") + "\n" + s.Detail + "\n")
		}
		return b.String()
	}
	plain, err := pubsubsetup.For(cfg.PubSub, cfg.Google.RequestTimeout, "certprov", "")
	if err != nil {
		t.Fatal(err)
	}
	got := text(pubsubsetup.HandSteps(pubsubsetup.StepsOptions{Settings: plain, Profiles: []string{"wifi-user", "wifi-device"}, CAConnections: []string{"corp-ca"}, Topic: topic,
		ServiceAccount: "adapter@setup.iam.gserviceaccount.com", ClientID: "1122334455", ConfigPath: "/etc/certprov/adapter.yaml"}))
	for _, want := range []string{
		"gcloud pubsub subscriptions add-iam-policy-binding certprov-adapter --project setup --member serviceAccount:adapter@setup.iam.gserviceaccount.com --role roles/pubsub.subscriber",
		"client ID 1122334455, OAuth scope https://www.googleapis.com/auth/chrome.management.certprov.provisioningprocess",
		"profiles: wifi-device, wifi-user;", "caConnections: corp-ca.",
		"certprov-adapter doctor --config /etc/certprov/adapter.yaml",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "gcp-sa-pubsub") || strings.Contains(got, "SERVICE_ACCOUNT_EMAIL") {
		t.Errorf("steps for a dead-letter topic or an unknown account:\n%s", got)
	}
	withDead, err := pubsubsetup.For(cfg.PubSub, cfg.Google.RequestTimeout, "certprov", "projects/other/topics/dead")
	if err != nil {
		t.Fatal(err)
	}
	got = text(pubsubsetup.HandSteps(pubsubsetup.StepsOptions{Settings: withDead, Topic: topic}))
	for _, want := range []string{
		"--member serviceAccount:SERVICE_ACCOUNT_EMAIL",
		"PROJECT_NUMBER=$(gcloud projects describe setup --format 'value(projectNumber)')",
		"gcloud pubsub topics add-iam-policy-binding dead --project other --member serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com --role roles/pubsub.publisher",
		"gcloud pubsub subscriptions add-iam-policy-binding certprov-adapter --project setup --member serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com --role roles/pubsub.subscriber",
		"projects/other/subscriptions/dead",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in\n%s", want, got)
		}
	}
}
