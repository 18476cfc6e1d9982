package emulator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CustomerTopic gives customer a notification topic of its own, topicID, with a subscription
// subID on it, as Google publishes each customer's notifications to that customer's topic: the
// notifications of the customer's processes (StartProcess, Notify) go there from now on instead of
// to the default topic. A deployment serving several customers (tenants) reads each through its
// own subscription. It returns the subscription's full resource name. The topic is not created
// again by StartPubSub.
func (e *Emulator) CustomerTopic(ctx context.Context, customer, topicID, subID string) (string, error) {
	if customer == "" || topicID == "" || subID == "" {
		return "", errors.New("customer topic: customer, topic and subscription are required")
	}
	topic := "projects/" + e.project + "/topics/" + topicID
	sub := "projects/" + e.project + "/subscriptions/" + subID
	if _, err := e.client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil && status.Code(err) != codes.AlreadyExists {
		return "", fmt.Errorf("customer topic: create topic %s: %w", topic, err)
	}
	if _, err := e.client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name: sub, Topic: topic, AckDeadlineSeconds: int32(e.ack / time.Second),
	}); err != nil && status.Code(err) != codes.AlreadyExists {
		return "", fmt.Errorf("customer topic: create subscription %s: %w", sub, err)
	}
	pub := e.client.Publisher(topic)
	pub.PublishSettings.DelayThreshold = time.Millisecond
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		pub.Stop()
		return "", errors.New("customer topic: emulator closed")
	}
	if e.customerTopics == nil {
		e.customerTopics = map[string]*pubsub.Publisher{}
	}
	if old := e.customerTopics[customer]; old != nil {
		old.Stop()
	}
	e.customerTopics[customer] = pub
	return sub, nil
}

// publisherLocked is the publisher of customer's topic, the default topic's unless
// CustomerTopic gave it one. e.mu is held.
func (e *Emulator) publisherLocked(customer string) *pubsub.Publisher {
	if pub := e.customerTopics[customer]; pub != nil {
		return pub
	}
	return e.publisher
}

// publishFor publishes a notification of customer's process to the customer's topic
// (CustomerTopic), or to the default topic when it has none.
func (e *Emulator) publishFor(ctx context.Context, customer string, data []byte) error {
	e.mu.Lock()
	pub := e.publisherLocked(customer)
	e.mu.Unlock()
	if pub == e.publisher {
		return e.Publish(ctx, data)
	}
	return e.publish(ctx, pub, "the topic of customer "+customer, data)
}

// stopCustomerTopics stops the publishers of the customers' topics (Close).
func (e *Emulator) stopCustomerTopics() {
	e.mu.Lock()
	pubs := e.customerTopics
	e.customerTopics = nil
	e.mu.Unlock()
	for _, p := range pubs {
		p.Stop()
	}
}
