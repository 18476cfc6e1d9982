// Package pubsubsetup creates, checks and updates the Pub/Sub subscription the adapter receives
// its notifications from, with the settings the intake needs: `certprov-adapter setup pubsub`.
// It also creates the dead-letter topic, and a subscription that keeps what lands there, when
// asked. It never deletes anything and never changes a setting it does not manage.
package pubsubsetup

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/config"
)

// Settings are what the adapter wants of its subscription. For builds them from a configuration;
// the doc comment of each default says why.
type Settings struct {
	// Subscription is the full name, projects/P/subscriptions/S.
	Subscription string
	// Topic is the full name of the topic Google publishes to. Empty keeps an existing
	// subscription's topic; creating one needs it.
	Topic string
	// AckDeadline is the subscription's ack deadline (AckDeadline explains the value).
	AckDeadline time.Duration
	// MessageRetention is how long an unacknowledged notification is kept.
	MessageRetention time.Duration
	// MinBackoff and MaxBackoff are the retry policy: how long Pub/Sub waits before it
	// redelivers a nacked message, growing exponentially between the two.
	MinBackoff, MaxBackoff time.Duration
	// DeadLetterTopic is the full name of the topic a notification goes to after
	// MaxDeliveryAttempts failed deliveries; empty leaves the dead-letter policy as it is.
	DeadLetterTopic     string
	MaxDeliveryAttempts int32
	// ExactlyOnce is Pub/Sub's exactly-once delivery (DefaultExactlyOnce explains the value).
	ExactlyOnce bool
	// Why says, by setting name (Setting.Name), why it has its value.
	Why map[string]string
}

// Defaults of the settings that do not depend on the configuration.
const (
	// DefaultMessageRetention is the longest Pub/Sub keeps a subscription's messages. A device
	// whose process was never claimed keeps waiting for it (it polls every 8 h and never gives
	// up), so an adapter that was down for days still serves it when it comes back.
	DefaultMessageRetention = 7 * 24 * time.Hour
	// DefaultMinBackoff and DefaultMaxBackoff space out redeliveries of a notification whose
	// admission failed (Google or the journal unavailable). The intake already holds such a
	// message for the engine's backoff before it nacks it; Pub/Sub's backoff adds to that, up to
	// its maximum of 10 minutes, so that an outage does not burn the delivery attempts.
	DefaultMinBackoff = 10 * time.Second
	DefaultMaxBackoff = 10 * time.Minute
	// DefaultMaxDeliveryAttempts: 20 deliveries, the later ones 10 minutes apart, ride out an
	// outage of Google or the journal of more than an hour before a notification is
	// dead-lettered (its device then starts a new process after about a day). Malformed
	// notifications and foreign customers are acked, never dead-lettered.
	DefaultMaxDeliveryAttempts = 20
	// DefaultExactlyOnce is off: the adapter makes a second delivery harmless by itself (the
	// journal knows the process, and Google's claim is idempotent for the same instance id), and
	// exactly-once delivery would not spare it that check: a crash between the claim and the ack
	// redelivers the message anyway. It would only add the latency of confirmed acks.
	DefaultExactlyOnce = false
)

// Pub/Sub's bounds of the ack deadline.
const (
	minAckDeadline = 10 * time.Second
	maxAckDeadline = 600 * time.Second
)

// AckDeadline is the ack deadline for an adapter whose Google calls are bounded by
// requestTimeout (google.requestTimeout). The intake acks a notification once its process is
// read and claimed and the claim journaled: two Google calls, each bounded by requestTimeout,
// and a journal write. The Pub/Sub client extends the lease while that runs, so the deadline is
// the time Pub/Sub gives before the first extension, and what a pull outside the client's stream
// gets (gcloud, another client): two request timeouts, so that a notification is not handed to
// a second replica while the first is still admitting it. Bounded by Pub/Sub's 10 s to 600 s;
// with the default requestTimeout, 60 s.
func AckDeadline(requestTimeout time.Duration) time.Duration {
	d := (2*requestTimeout + time.Second - 1).Truncate(time.Second)
	return min(max(d, minAckDeadline), maxAckDeadline)
}

var (
	topicName        = regexp.MustCompile(`^projects/[^/]+/topics/[^/]+$`)
	subscriptionName = regexp.MustCompile(`^projects/[^/]+/subscriptions/[^/]+$`)
)

// TopicName is the full name of topic: as given when it is one, else topic as an id in
// project. An invalid name is an error that says what is expected.
func TopicName(topic, project string) (string, error) {
	switch {
	case topicName.MatchString(topic):
		return topic, nil
	case topic != "" && !strings.Contains(topic, "/"):
		return "projects/" + project + "/topics/" + topic, nil
	default:
		return "", fmt.Errorf("%q is not a topic: want an id or projects/PROJECT/topics/ID", topic)
	}
}

// For returns the settings for an adapter that receives from ps and bounds its Google calls by
// requestTimeout (google.requestTimeout), on topic and with deadLetterTopic (each an id in
// ps.Project or a full name; either may be empty).
func For(ps config.PubSub, requestTimeout time.Duration, topic, deadLetterTopic string) (Settings, error) {
	s := Settings{
		Subscription:     ps.SubscriptionName(),
		AckDeadline:      AckDeadline(requestTimeout),
		MessageRetention: DefaultMessageRetention,
		MinBackoff:       DefaultMinBackoff, MaxBackoff: DefaultMaxBackoff,
		ExactlyOnce: DefaultExactlyOnce,
		Why: map[string]string{
			"ackDeadline": fmt.Sprintf("2 × google.requestTimeout (%s): a notification is acked once its process is read and claimed and the claim journaled",
				config.FormatDuration(requestTimeout)),
			"messageRetention":    "the most Pub/Sub keeps: a device waits for its process for days, so an adapter down that long still serves it",
			"retryPolicy":         "a notification is redelivered only when Google or the journal was unavailable: space the attempts out",
			"expirationPolicy":    "a subscription without a subscriber for 31 days (an adapter stopped for a month) would be deleted otherwise",
			"exactlyOnceDelivery": "the journal and Google's claim make a second delivery harmless; exactly-once delivery would only add latency",
			"pushConfig":          "the adapter pulls",
		},
	}
	if !subscriptionName.MatchString(s.Subscription) {
		return Settings{}, fmt.Errorf("pubsub.subscription: %q is not a subscription", s.Subscription)
	}
	var err error
	if topic != "" {
		if s.Topic, err = TopicName(topic, ps.Project); err != nil {
			return Settings{}, fmt.Errorf("topic: %w", err)
		}
	}
	if deadLetterTopic != "" {
		if s.DeadLetterTopic, err = TopicName(deadLetterTopic, ps.Project); err != nil {
			return Settings{}, fmt.Errorf("dead-letter topic: %w", err)
		}
		if s.DeadLetterTopic == s.Topic {
			return Settings{}, fmt.Errorf("dead-letter topic: %s is the notification topic itself", s.DeadLetterTopic)
		}
		s.MaxDeliveryAttempts = DefaultMaxDeliveryAttempts
		s.Why["deadLetterPolicy"] = "20 deliveries, up to 10 minutes apart, ride out an outage of more than an hour; malformed and foreign notifications are acked, never dead-lettered"
	}
	return s, nil
}

// DeadLetterSubscription is the subscription that keeps what is dead-lettered to topic: a
// topic without a subscription drops what is published to it. It is named after the topic, in
// the topic's project.
func DeadLetterSubscription(topic string) string {
	project, id := splitName(topic)
	return "projects/" + project + "/subscriptions/" + id
}

// splitName returns the project and the id of a full resource name projects/P/KIND/ID.
func splitName(name string) (project, id string) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 {
		return "", name
	}
	return parts[1], parts[3]
}
