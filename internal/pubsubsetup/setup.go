package pubsubsetup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/certprov/certprov-adapter/internal/config"
)

// SubscriptionAdmin is the part of the Pub/Sub admin API setup uses.
// *pubsub/v2/apiv1.SubscriptionAdminClient implements it; errors carry gRPC status codes
// (NotFound for a subscription or topic that does not exist, AlreadyExists for one created
// meanwhile by someone else).
type SubscriptionAdmin interface {
	GetSubscription(ctx context.Context, req *pubsubpb.GetSubscriptionRequest, opts ...gax.CallOption) (*pubsubpb.Subscription, error)
	CreateSubscription(ctx context.Context, req *pubsubpb.Subscription, opts ...gax.CallOption) (*pubsubpb.Subscription, error)
	// UpdateSubscription changes the fields named by the request's update mask and returns
	// the subscription as it is afterwards.
	UpdateSubscription(ctx context.Context, req *pubsubpb.UpdateSubscriptionRequest, opts ...gax.CallOption) (*pubsubpb.Subscription, error)
}

// TopicAdmin is the part of the Pub/Sub admin API setup uses for topics.
// *pubsub/v2/apiv1.TopicAdminClient implements it, with the same error codes.
type TopicAdmin interface {
	GetTopic(ctx context.Context, req *pubsubpb.GetTopicRequest, opts ...gax.CallOption) (*pubsubpb.Topic, error)
	CreateTopic(ctx context.Context, req *pubsubpb.Topic, opts ...gax.CallOption) (*pubsubpb.Topic, error)
}

// Mode says what Run may change.
type Mode int

const (
	// Apply creates what is missing and updates the settings that differ and can be changed.
	Apply Mode = iota
	// Check changes nothing; what is missing or differs is a problem.
	Check
	// DryRun changes nothing and says what Apply would do.
	DryRun
)

// Options are what Run works with.
type Options struct {
	Subscriptions SubscriptionAdmin
	Topics        TopicAdmin
	Settings      Settings
	Mode          Mode
	// Timeout bounds each call to Pub/Sub; default DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout bounds one call to Pub/Sub when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Action is what happened to a resource, or would happen.
type Action string

// Actions.
const (
	Created     Action = "created"
	Updated     Action = "updated"
	UpToDate    Action = "up to date"
	WouldCreate Action = "would be created"
	WouldUpdate Action = "would be updated"
	Missing     Action = "missing" // Check: it does not exist
	Differs     Action = "differs" // Check: a setting differs; or one that cannot be changed does
	Kept        Action = "exists"  // an existing resource whose settings this run does not manage
)

// Kinds of resource.
const (
	KindSubscription           = "subscription"
	KindDeadLetterTopic        = "dead-letter topic"
	KindDeadLetterSubscription = "dead-letter subscription"
)

// Setting is one setting of a subscription, as Pub/Sub holds it.
type Setting struct {
	Name  string `json:"name"` // as in the Pub/Sub API: ackDeadline, retryPolicy, …
	Value string `json:"value"`
}

// Difference is a setting that is not what the adapter needs.
type Difference struct {
	Setting string `json:"setting"`
	Have    string `json:"have"`
	Want    string `json:"want"`
	// Fixed says it was updated (Apply). Fix, for a setting Pub/Sub cannot change, says what
	// to do instead; it is empty for one that can be changed.
	Fixed bool   `json:"fixed"`
	Fix   string `json:"fix,omitempty"`
}

// Resource is what Run found and did for one Pub/Sub resource.
type Resource struct {
	Kind        string       `json:"kind"`
	Name        string       `json:"name"`
	Action      Action       `json:"action"`
	Differences []Difference `json:"differences,omitempty"`
	// Settings are the subscription's settings as Pub/Sub answered last (read back after a
	// change), or as they would be created (DryRun, Check).
	Settings []Setting `json:"settings,omitempty"`
	Note     string    `json:"note,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	// Topic is the subscription's topic: Settings.Topic, or the existing subscription's.
	Topic     string     `json:"topic"`
	Resources []Resource `json:"resources"`
	// Changed says something was created or updated.
	Changed bool `json:"changed"`
	// Problems says the subscription is not as the adapter needs it after the run: something
	// missing or differing under Check, a setting that cannot be changed under any mode.
	Problems bool `json:"problems"`
}

// ErrTopicRequired is Run's error when the subscription does not exist and Settings.Topic is
// empty: the topic it is to be created on must be named.
var ErrTopicRequired = errors.New("the subscription does not exist; name the topic Google publishes to (the one in the Admin console's certificate provisioning settings) to create it")

// ErrTopicNotFound is wrapped by Run's error when the notification topic does not exist.
var ErrTopicNotFound = errors.New("does not exist")

// Run makes the subscription of o.Settings what the adapter needs, as far as o.Mode allows, and
// reports what it found and did. It returns an error when Pub/Sub cannot be asked or refuses,
// and when the notification topic is missing (ErrTopicNotFound) or needed but not named
// (ErrTopicRequired); the report then holds what was done before. It never deletes anything.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	r := &run{o: o, s: o.Settings}
	err := r.run(ctx)
	return r.report, err
}

type run struct {
	o      Options
	s      Settings
	report Report
}

func (r *run) add(res Resource) {
	switch res.Action {
	case Created, Updated:
		r.report.Changed = true
	case Missing, Differs:
		r.report.Problems = true
	}
	for _, d := range res.Differences {
		if d.Fix != "" {
			r.report.Problems = true
		}
	}
	r.report.Resources = append(r.report.Resources, res)
}

func (r *run) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.o.Timeout)
}

func (r *run) run(ctx context.Context) error {
	have, err := r.getSubscription(ctx, r.s.Subscription)
	if err != nil {
		return err
	}
	if have == nil && r.s.Topic == "" {
		return ErrTopicRequired
	}
	r.report.Topic = cmp.Or(r.s.Topic, have.GetTopic())
	if r.s.Topic != "" {
		exists, err := r.topicExists(ctx, r.s.Topic)
		if err != nil {
			return err
		}
		if !exists {
			project, id := splitName(r.s.Topic)
			return fmt.Errorf("topic %s %w: create it (gcloud pubsub topics create %s --project %s) and name it in the Admin console's certificate provisioning settings, or name the topic that is named there",
				r.s.Topic, ErrTopicNotFound, id, project)
		}
	}
	// The dead-letter topic must exist before a subscription may name it.
	if r.s.DeadLetterTopic != "" {
		if err := r.deadLetterTopic(ctx); err != nil {
			return err
		}
	}
	if err := r.subscription(ctx, have); err != nil {
		return err
	}
	if r.s.DeadLetterTopic != "" {
		return r.deadLetterSubscription(ctx)
	}
	return nil
}

// getSubscription returns the subscription, or nil when it does not exist.
func (r *run) getSubscription(ctx context.Context, name string) (*pubsubpb.Subscription, error) {
	cctx, cancel := r.bound(ctx)
	defer cancel()
	s, err := r.o.Subscriptions.GetSubscription(cctx, &pubsubpb.GetSubscriptionRequest{Subscription: name})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, callError("read subscription", name, err)
	}
	return s, nil
}

func (r *run) topicExists(ctx context.Context, name string) (bool, error) {
	cctx, cancel := r.bound(ctx)
	defer cancel()
	_, err := r.o.Topics.GetTopic(cctx, &pubsubpb.GetTopicRequest{Topic: name})
	switch {
	case err == nil:
		return true, nil
	case status.Code(err) == codes.NotFound:
		return false, nil
	default:
		return false, callError("read topic", name, err)
	}
}

func (r *run) subscription(ctx context.Context, have *pubsubpb.Subscription) error {
	want := r.s.subscription(have)
	res := Resource{Kind: KindSubscription, Name: r.s.Subscription}
	if have == nil {
		switch r.o.Mode {
		case Check:
			res.Action, res.Settings = Missing, describe(want)
		case DryRun:
			res.Action, res.Settings = WouldCreate, describe(want)
		default:
			cctx, cancel := r.bound(ctx)
			got, err := r.o.Subscriptions.CreateSubscription(cctx, want)
			cancel()
			if status.Code(err) == codes.AlreadyExists {
				// Created meanwhile, by another run: check that one instead.
				have, err := r.getSubscription(ctx, r.s.Subscription)
				if err != nil {
					return err
				}
				if have == nil {
					return fmt.Errorf("create subscription %s: created and deleted meanwhile by someone else", r.s.Subscription)
				}
				return r.subscription(ctx, have)
			}
			if err != nil {
				return callError("create subscription", r.s.Subscription, err)
			}
			res.Action, res.Settings = Created, describe(got)
			if left := diff(got, want); len(left) > 0 {
				res.Differences = left
				res.Note = "Pub/Sub created it with other settings than asked for"
				r.report.Problems = true
			}
		}
		if res.Note == "" {
			res.Note = noDeadLetters(want)
		}
		r.add(res)
		return nil
	}

	diffs := diff(have, want)
	res.Settings = describe(have)
	var mask []string
	for _, d := range diffs {
		if f := fieldNamed(d.Setting); f.path != "" {
			mask = append(mask, f.path)
		}
	}
	switch {
	case len(diffs) == 0:
		res.Action = UpToDate
	case r.o.Mode == Check:
		res.Action = Differs
	case len(mask) == 0:
		res.Action = Differs // only what cannot be changed differs
	case r.o.Mode == DryRun:
		res.Action = WouldUpdate
	default:
		cctx, cancel := r.bound(ctx)
		got, err := r.o.Subscriptions.UpdateSubscription(cctx, &pubsubpb.UpdateSubscriptionRequest{
			Subscription: want, UpdateMask: &fieldmaskpb.FieldMask{Paths: mask},
		})
		cancel()
		if err != nil {
			return callError("update subscription", r.s.Subscription, err)
		}
		left := map[string]bool{}
		for _, d := range diff(got, want) {
			left[d.Setting] = true
		}
		for i := range diffs {
			diffs[i].Fixed = !left[diffs[i].Setting]
			if fieldNamed(diffs[i].Setting).path != "" && left[diffs[i].Setting] {
				diffs[i].Fix = "Pub/Sub did not apply the update"
			}
		}
		res.Action, res.Settings = Updated, describe(got)
	}
	res.Differences = diffs
	res.Note = noDeadLetters(want)
	r.add(res)
	return nil
}

// noDeadLetters is the note on a subscription without a dead-letter policy.
func noDeadLetters(s *pubsubpb.Subscription) string {
	if s.GetDeadLetterPolicy().GetDeadLetterTopic() != "" {
		return ""
	}
	return "no dead-letter policy: a notification that cannot be admitted is redelivered for as long as it is retained; --dead-letter-topic adds one"
}

func (r *run) deadLetterTopic(ctx context.Context) error {
	name := r.s.DeadLetterTopic
	exists, err := r.topicExists(ctx, name)
	if err != nil {
		return err
	}
	res := Resource{Kind: KindDeadLetterTopic, Name: name, Action: UpToDate}
	switch {
	case exists:
	case r.o.Mode == Check:
		res.Action = Missing
	case r.o.Mode == DryRun:
		res.Action = WouldCreate
	default:
		cctx, cancel := r.bound(ctx)
		_, err := r.o.Topics.CreateTopic(cctx, &pubsubpb.Topic{Name: name})
		cancel()
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return callError("create dead-letter topic", name, err)
		}
		res.Action = Created
	}
	r.add(res)
	return nil
}

// deadLetterSubscription makes sure something keeps what is dead-lettered. An existing one is
// left as it is, unless it is on another topic, which is reported.
func (r *run) deadLetterSubscription(ctx context.Context) error {
	name := DeadLetterSubscription(r.s.DeadLetterTopic)
	have, err := r.getSubscription(ctx, name)
	if err != nil {
		return err
	}
	want := &pubsubpb.Subscription{
		Name: name, Topic: r.s.DeadLetterTopic,
		MessageRetentionDuration: durationpb.New(r.s.MessageRetention),
		ExpirationPolicy:         &pubsubpb.ExpirationPolicy{},
	}
	res := Resource{Kind: KindDeadLetterSubscription, Name: name, Note: "keeps what is dead-lettered, for you to look at"}
	switch {
	case have != nil && have.GetTopic() != r.s.DeadLetterTopic:
		res.Action = Differs
		res.Differences = []Difference{{Setting: "topic", Have: have.GetTopic(), Want: r.s.DeadLetterTopic,
			Fix: "it is not on the dead-letter topic, so nothing keeps what is dead-lettered: create a subscription on " + r.s.DeadLetterTopic}}
	case have != nil:
		res.Action = Kept
	case r.o.Mode == Check:
		res.Action = Missing
	case r.o.Mode == DryRun:
		res.Action, res.Settings = WouldCreate, describe(want)
	default:
		cctx, cancel := r.bound(ctx)
		got, err := r.o.Subscriptions.CreateSubscription(cctx, want)
		cancel()
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return callError("create dead-letter subscription", name, err)
		}
		res.Action = Created
		if got != nil {
			res.Settings = describe(got)
		}
	}
	r.add(res)
	return nil
}

// subscription is the subscription the adapter wants, on have's topic when Settings name none.
func (s Settings) subscription(have *pubsubpb.Subscription) *pubsubpb.Subscription {
	topic := s.Topic
	if topic == "" {
		topic = have.GetTopic()
	}
	sub := &pubsubpb.Subscription{
		Name:                      s.Subscription,
		Topic:                     topic,
		AckDeadlineSeconds:        int32(s.AckDeadline / time.Second),
		MessageRetentionDuration:  durationpb.New(s.MessageRetention),
		RetryPolicy:               &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(s.MinBackoff), MaximumBackoff: durationpb.New(s.MaxBackoff)},
		ExpirationPolicy:          &pubsubpb.ExpirationPolicy{}, // no ttl: never expires
		EnableExactlyOnceDelivery: s.ExactlyOnce,
		PushConfig:                &pubsubpb.PushConfig{}, // empty: pull
		DeadLetterPolicy:          have.GetDeadLetterPolicy(),
	}
	if s.DeadLetterTopic != "" {
		sub.DeadLetterPolicy = &pubsubpb.DeadLetterPolicy{DeadLetterTopic: s.DeadLetterTopic, MaxDeliveryAttempts: s.MaxDeliveryAttempts}
	}
	return sub
}

// deletedTopic is what Pub/Sub answers as the topic of a subscription whose topic was deleted.
const deletedTopic = "_deleted-topic_"

// field is one setting setup compares.
type field struct {
	name string
	// path is the update mask path; empty for a setting Pub/Sub cannot change, fix then says
	// what to do instead.
	path string
	fix  string
	show func(*pubsubpb.Subscription) string
	// want, when set, is what the adapter wants shown, whatever the wanted subscription holds
	// (which copies what setup does not decide from the existing one).
	want string
}

var fields = []field{
	{name: "topic", fix: "a subscription's topic cannot be changed: set pubsub.subscription to a new subscription and run setup pubsub again to create it on the topic",
		show: func(s *pubsubpb.Subscription) string { return s.GetTopic() }},
	{name: "state", fix: "the subscription receives nothing and cannot be repaired: set pubsub.subscription to a new subscription and run setup pubsub again to create it",
		show: func(s *pubsubpb.Subscription) string {
			switch {
			case s.GetDetached():
				return "detached from its topic"
			case s.GetTopic() == deletedTopic:
				return "its topic was deleted"
			}
			return "attached"
		}, want: "attached"},
	{name: "filter", fix: "a filter drops notifications and cannot be removed: set pubsub.subscription to a new subscription and run setup pubsub again",
		show: func(s *pubsubpb.Subscription) string {
			if s.GetFilter() == "" {
				return "none"
			}
			return fmt.Sprintf("%q", s.GetFilter())
		}},
	{name: "pushConfig", path: "push_config", show: func(s *pubsubpb.Subscription) string {
		ep := s.GetPushConfig().GetPushEndpoint()
		if ep == "" {
			return "pull"
		}
		// Only the host: a push endpoint's path or query may carry a token.
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			return "push to " + u.Host
		}
		return "push"
	}},
	{name: "ackDeadline", path: "ack_deadline_seconds", show: func(s *pubsubpb.Subscription) string {
		return fmt.Sprintf("%ds", s.GetAckDeadlineSeconds())
	}},
	{name: "messageRetention", path: "message_retention_duration", show: func(s *pubsubpb.Subscription) string {
		if s.GetMessageRetentionDuration() == nil {
			return "default (168h)"
		}
		return config.FormatDuration(s.GetMessageRetentionDuration().AsDuration())
	}},
	{name: "retryPolicy", path: "retry_policy", show: func(s *pubsubpb.Subscription) string {
		p := s.GetRetryPolicy()
		if p == nil {
			return "none (redelivered at once)"
		}
		return fmt.Sprintf("exponential backoff %s to %s", config.FormatDuration(p.GetMinimumBackoff().AsDuration()), config.FormatDuration(p.GetMaximumBackoff().AsDuration()))
	}},
	{name: "deadLetterPolicy", path: "dead_letter_policy", show: func(s *pubsubpb.Subscription) string {
		p := s.GetDeadLetterPolicy()
		if p.GetDeadLetterTopic() == "" {
			return "none"
		}
		return fmt.Sprintf("%s after %d delivery attempts", p.GetDeadLetterTopic(), p.GetMaxDeliveryAttempts())
	}},
	{name: "expirationPolicy", path: "expiration_policy", show: func(s *pubsubpb.Subscription) string {
		p := s.GetExpirationPolicy()
		switch {
		case p == nil:
			return "default (deleted after 31 days without a subscriber)"
		case p.GetTtl() == nil || p.GetTtl().AsDuration() == 0:
			return "never"
		default:
			return "deleted after " + config.FormatDuration(p.GetTtl().AsDuration()) + " without a subscriber"
		}
	}},
	{name: "exactlyOnceDelivery", path: "enable_exactly_once_delivery", show: func(s *pubsubpb.Subscription) string {
		if s.GetEnableExactlyOnceDelivery() {
			return "on"
		}
		return "off"
	}},
}

func fieldNamed(name string) field {
	for _, f := range fields {
		if f.name == name {
			return f
		}
	}
	return field{}
}

// describe lists the settings of s that setup manages.
func describe(s *pubsubpb.Subscription) []Setting {
	out := make([]Setting, 0, len(fields))
	for _, f := range fields {
		out = append(out, Setting{Name: f.name, Value: f.show(s)})
	}
	return out
}

// diff lists the settings of have that differ from want's.
func diff(have, want *pubsubpb.Subscription) []Difference {
	var out []Difference
	for _, f := range fields {
		h, w := f.show(have), cmp.Or(f.want, f.show(want))
		if h != w {
			out = append(out, Difference{Setting: f.name, Have: h, Want: w, Fix: f.fix})
		}
	}
	return out
}

// callError wraps a failed call with what it was for and, when the identity may not make it,
// what the identity needs.
func callError(what, name string, err error) error {
	if status.Code(err) == codes.PermissionDenied {
		return fmt.Errorf("%s %s: %w (setup needs an identity that may administer Pub/Sub in the project, e.g. roles/pubsub.editor; the adapter itself needs only roles/pubsub.subscriber)", what, name, err)
	}
	return fmt.Errorf("%s %s: %w", what, name, err)
}
