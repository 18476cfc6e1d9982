package emulator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"go.uber.org/zap"
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

// publishFor publishes a notification of customer's process to the customer's topic
// (CustomerTopic), or to the default topic when it has none.
// publisherLocked is the publisher of customer's topic, the default topic's unless
// CustomerTopic gave it one. e.mu is held.
func (e *Emulator) publisherLocked(customer string) *pubsub.Publisher {
	if pub := e.customerTopics[customer]; pub != nil {
		return pub
	}
	return e.publisher
}

func (e *Emulator) publishFor(ctx context.Context, customer string, data []byte) error {
	e.mu.Lock()
	pub, closed := e.customerTopics[customer], e.closed
	e.mu.Unlock()
	if pub == nil {
		return e.Publish(ctx, data)
	}
	if closed {
		return errors.New("publish: emulator closed")
	}
	id, err := pub.Publish(ctx, &pubsub.Message{Data: data}).Get(ctx)
	if err != nil {
		return fmt.Errorf("publish to the topic of customer %s: %w", customer, err)
	}
	e.log.Debug("notification published", zap.String("customer", customer), zap.String("message_id", id), zap.Int("bytes", len(data)))
	return nil
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
