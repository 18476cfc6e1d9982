package emulator

import (
	"context"
	"testing"

	"github.com/certprov/certprov-adapter/internal/process"
)

// TestCustomerTopic: a customer with a topic of its own has its notifications (at start and
// again through Notify) published there, on its own subscription; the other customers' stay on
// the default topic.
func TestCustomerTopic(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	sub, err := v.emu.CustomerTopic(context.Background(), "C0other", "topic-other", "sub-other")
	if err != nil {
		t.Fatal(err)
	}
	if sub != "projects/"+v.emu.Project()+"/subscriptions/sub-other" {
		t.Errorf("subscription %q", sub)
	}
	other := v.start(t, ProcessSpec{Customer: "C0other", Encoding: EncodingProto, Behaviour: BehaviourNeverSign})
	if err := v.emu.Notify(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	def := v.start(t, ProcessSpec{Encoding: EncodingProto, Behaviour: BehaviourNeverSign})

	for _, data := range receiveFrom(t, v.emu, sub, 2) {
		if id, customer := decodeProto(t, data); process.Name(customer, id) != other {
			t.Errorf("customer's subscription got %s, want %s", process.Name(customer, id), other)
		}
	}
	// The default topic's first message is the default customer's: nothing of C0other, which was
	// published before it, reached it.
	if id, customer := decodeProto(t, receive(t, v.emu, 1)[0]); process.Name(customer, id) != def {
		t.Errorf("default subscription got %s, want %s", process.Name(customer, id), def)
	}
	if _, err := v.emu.CustomerTopic(context.Background(), "", "t", "s"); err == nil {
		t.Error("a customer topic without a customer was accepted")
	}
}
