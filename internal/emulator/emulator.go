// Package emulator is a local stand-in for the Google side of the Chrome Management Certificate
// Provisioning API: the REST API (chromemanagement v1, certificateProvisioningProcesses), the
// Pub/Sub notifications (through an in-process pstest server), and the ChromeOS clients that hold
// the private keys and sign proof-of-possession data.
//
// It exists so that the adapter can be tested end to end without Google: simulated devices hold
// real RSA-2048 or P-256 keys, sign after a configurable delay (or never, or wrongly, or only once
// online), and every call is counted per process so tests can assert exactly-once behaviour.
// Faults (errors with Retry-After, lost responses, latency, conflicting claims, LRO shape variants,
// duplicate and differently encoded notifications) are injected through methods that are safe for
// concurrent use.
//
// The Verified Access API is Google's other side, in package vagoogle; Handler serves both on one
// listener, with the front end (package frontend: error envelope, faults, latency) and the
// simulated devices' keys (package devicekey) shared.
//
// The semantics follow docs/google-api.md (sections 1 and 3); where Google's documentation is
// silent the emulator picks one plausible behaviour and docs/emulator.md says which.
package emulator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"go.uber.org/zap"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/certprov/certprov-adapter/internal/emulator/devicekey"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/emulator/vagoogle"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Defaults for Options fields left empty.
const (
	DefaultProject      = "demo"
	DefaultTopic        = "certprov"
	DefaultSubscription = "certprov-adapter"
	DefaultAckDeadline  = 10 * time.Second
)

// Options configure an Emulator. The zero value is usable.
type Options struct {
	// Project, Topic and Subscription name the Pub/Sub topic the emulator publishes to and the
	// subscription it creates on it for the adapter (IDs, not full resource names). Defaults:
	// DefaultProject, DefaultTopic, DefaultSubscription.
	Project, Topic, Subscription string

	// PubSubListen is the host:port the pstest gRPC server listens on; empty means an ephemeral
	// port on localhost.
	PubSubListen string

	// AckDeadline of the created subscription; 0 means DefaultAckDeadline. Pub/Sub accepts 10s to
	// 600s.
	AckDeadline time.Duration

	Logger *zap.Logger // nil => zap.NewNop()
	// Clock stamps resources and snapshots and decides when Verified Access challenges expire;
	// nil => time.Now.
	Clock func() time.Time

	// VAChallengeLifetime is how long a Verified Access challenge stays verifiable; 0 means
	// vagoogle.DefaultChallengeLifetime (60 s, as on Google's side). Tests shorten it, or move
	// Clock.
	VAChallengeLifetime time.Duration

	// KeyPool, when positive, is how many device keys of each type are generated; processes
	// then share them in turn instead of each generating its own (load tests: an RSA-2048 key
	// costs about 0.1 s of CPU). 0 gives every process a fresh key, as real devices have.
	KeyPool int
	// DirectoryRecords puts a Directory record for the device and the user of every process
	// started, unless one is there already (directory.go, ProcessRecords), so that profiles using
	// Directory data work for simulated devices without records of a test's own (the demo).
	DirectoryRecords bool
}

// Emulator is the Google side: processes, devices, REST API and Pub/Sub, and the Verified Access
// API (VerifiedAccess) on the same listener. All methods are safe for
// concurrent use. Create it with New and release it with Close.
type Emulator struct {
	log   *zap.Logger
	clock func() time.Time

	project, topicID, subID string

	ps        *pstest.Server // nil while stopped (StopPubSub); guarded by mu after New
	psAddr    string
	ack       time.Duration
	conn      *grpc.ClientConn
	client    *pubsub.Client
	publisher *pubsub.Publisher
	// customerTopics publish the notifications of the customers that have a topic of their own
	// (CustomerTopic); guarded by mu.
	customerTopics map[string]*pubsub.Publisher

	closeOnce sync.Once
	closeErr  error

	// faults are the front end's, shared with the Verified Access API: a fault for any method
	// lands on whichever call comes next. Taken while mu is held, never the other way round.
	faults frontend.Faults

	mu             sync.Mutex
	closed         bool
	procs          map[string]*proc // by resource name
	conflictStatus int
	lro            LROVariant

	va *vagoogle.Service // Verified Access; has its own lock

	requests   requestLog      // every API call's arrival, for Stats; has its own lock
	keys       *keyPool        // nil: a fresh key per process
	dir        *directoryState // the Admin SDK Directory; has its own lock
	dirRecords bool            // Options.DirectoryRecords
}

// New starts an in-process pstest server, creates the topic and the subscription, and returns an
// emulator with no processes. The caller must Close it. ctx bounds only the setup calls.
func New(ctx context.Context, opts Options) (*Emulator, error) {
	e := &Emulator{
		log:            opts.Logger,
		clock:          opts.Clock,
		project:        orDefault(opts.Project, DefaultProject),
		topicID:        orDefault(opts.Topic, DefaultTopic),
		subID:          orDefault(opts.Subscription, DefaultSubscription),
		procs:          map[string]*proc{},
		conflictStatus: 400,
		keys:           newKeyPool(opts.KeyPool),
		dir:            newDirectoryState(),
		dirRecords:     opts.DirectoryRecords,
	}
	if opts.KeyPool < 0 {
		return nil, fmt.Errorf("new emulator: key pool %d: must not be negative", opts.KeyPool)
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	if e.clock == nil {
		e.clock = time.Now
	}
	ack := opts.AckDeadline
	if ack == 0 {
		ack = DefaultAckDeadline
	}
	if ack < 10*time.Second || ack > 600*time.Second {
		return nil, fmt.Errorf("new emulator: ack deadline %s: want 10s to 600s", ack)
	}

	va, err := vagoogle.New(vagoogle.Options{Logger: e.log, Clock: e.clock, ChallengeLifetime: opts.VAChallengeLifetime, Faults: &e.faults})
	if err != nil {
		return nil, fmt.Errorf("new emulator: %w", err)
	}
	e.va = va

	ps, err := startPubSub(opts.PubSubListen)
	if err != nil {
		return nil, fmt.Errorf("new emulator: %w", err)
	}
	e.ps, e.psAddr, e.ack = ps, ps.Addr, ack
	if err := e.setupPubSub(ctx, ack); err != nil {
		return nil, errors.Join(fmt.Errorf("new emulator: %w", err), e.Close())
	}
	e.log.Info("emulator started",
		zap.String("pubsub", e.ps.Addr), zap.String("topic", e.TopicName()),
		zap.String("subscription", e.SubscriptionName()))
	return e, nil
}

// startPubSub starts pstest, turning its panic on a listen failure into an error.
func startPubSub(addr string) (srv *pstest.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			srv, err = nil, fmt.Errorf("start pubsub server on %q: %v", addr, r)
		}
	}()
	if addr == "" {
		return pstest.NewServer(), nil
	}
	return pstest.NewServerWithAddress(addr), nil
}

func (e *Emulator) setupPubSub(ctx context.Context, ack time.Duration) error {
	conn, err := grpc.NewClient(e.ps.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial pubsub %s: %w", e.ps.Addr, err)
	}
	e.conn = conn
	client, err := pubsub.NewClient(ctx, e.project, option.WithGRPCConn(conn))
	if err != nil {
		return fmt.Errorf("pubsub client: %w", err)
	}
	e.client = client
	if err := e.createTopicAndSubscription(ctx, ack); err != nil {
		return err
	}
	e.publisher = client.Publisher(e.TopicName())
	e.publisher.PublishSettings.DelayThreshold = time.Millisecond
	return nil
}

// createTopicAndSubscription creates the topic and the subscription; either existing already
// (a retry) is fine.
func (e *Emulator) createTopicAndSubscription(ctx context.Context, ack time.Duration) error {
	if _, err := e.client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: e.TopicName()}); err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create topic %s: %w", e.TopicName(), err)
	}
	if _, err := e.client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:               e.SubscriptionName(),
		Topic:              e.TopicName(),
		AckDeadlineSeconds: int32(ack / time.Second),
	}); err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create subscription %s: %w", e.SubscriptionName(), err)
	}
	return nil
}

// VerifiedAccess is the emulator's Verified Access API, which Handler serves beside the
// Certificate Provisioning API, with the same faults and latency.
func (e *Emulator) VerifiedAccess() *vagoogle.Service { return e.va }

// PubSubAddr is the host:port of the pstest gRPC server, i.e. what PUBSUB_EMULATOR_HOST would be.
// It stays the same across StopPubSub and StartPubSub.
func (e *Emulator) PubSubAddr() string { return e.psAddr }

// StopPubSub stops the Pub/Sub server, as an outage would: subscribers' streams break and
// cannot reopen, and publishing fails, until StartPubSub. Messages not yet delivered are lost.
func (e *Emulator) StopPubSub() error {
	e.mu.Lock()
	ps := e.ps
	e.ps = nil
	e.mu.Unlock()
	if ps == nil {
		return errors.New("stop pubsub: not running")
	}
	if err := ps.Close(); err != nil {
		return fmt.Errorf("stop pubsub: %w", err)
	}
	return nil
}

// StartPubSub starts the Pub/Sub server again after StopPubSub, on the same address, with the
// topic and the subscription (empty) created again; subscribers reconnect by themselves.
func (e *Emulator) StartPubSub(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.ps != nil {
		return errors.New("start pubsub: closed or running")
	}
	ps, err := startPubSub(e.psAddr)
	if err != nil {
		return err
	}
	e.ps = ps
	// The emulator's own connection reconnects with backoff: try until it has.
	for {
		err := e.createTopicAndSubscription(ctx, e.ack)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start pubsub: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Project is the Pub/Sub project ID.
func (e *Emulator) Project() string { return e.project }

// TopicName is the full resource name of the notification topic.
func (e *Emulator) TopicName() string { return "projects/" + e.project + "/topics/" + e.topicID }

// SubscriptionName is the full resource name of the subscription created for the adapter.
func (e *Emulator) SubscriptionName() string {
	return "projects/" + e.project + "/subscriptions/" + e.subID
}

// Close stops all device timers, the Pub/Sub client and the pstest server. It is idempotent;
// after Close, REST calls still answer from the recorded state but devices no longer sign and
// nothing is published.
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		for _, p := range e.procs {
			p.stopTimer()
		}
		e.mu.Unlock()

		var errs []error
		if e.publisher != nil {
			e.publisher.Stop()
		}
		e.stopCustomerTopics()
		if e.client != nil {
			if err := e.client.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close pubsub client: %w", err))
			}
		}
		if e.conn != nil {
			// The pubsub client may already have closed the shared connection; that is fine.
			_ = e.conn.Close()
		}
		e.mu.Lock()
		ps := e.ps
		e.ps = nil
		e.mu.Unlock()
		if ps != nil {
			if err := ps.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close pubsub server: %w", err))
			}
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

// StartProcess simulates a ChromeOS client starting a certificate provisioning process: it
// creates the device key, registers the process (state "pending") and publishes its notification
// (1 + spec.Duplicates times, unless spec.NoPublish). It returns the process resource name. An
// invalid spec is an error and creates nothing; when publishing fails the process exists anyway
// and its name is returned together with the error.
func (e *Emulator) StartProcess(ctx context.Context, spec ProcessSpec) (string, error) {
	spec, err := spec.normalize()
	if err != nil {
		return "", fmt.Errorf("start process: %w", err)
	}
	p, err := e.newProc(spec)
	if err != nil {
		return "", fmt.Errorf("start process: %w", err)
	}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return "", errors.New("start process: emulator closed")
	}
	e.procs[p.name] = p
	e.mu.Unlock()
	if e.dirRecords {
		e.dir.putProcessRecords(p.customer, p.spec)
	}
	e.log.Info("process started", zap.String("process", p.name), zap.String("scope", spec.Scope),
		zap.String("key", spec.KeyType), zap.String("behaviour", spec.Behaviour))

	if spec.NoPublish {
		return p.name, nil
	}
	data, err := encodeNotification(spec.Encoding, p.id, p.customer)
	if err != nil {
		return p.name, fmt.Errorf("start process %s: %w", p.name, err)
	}
	e.markNotified(p.name)
	for i := 0; i <= spec.Duplicates; i++ {
		if err := e.publishFor(ctx, p.customer, data); err != nil {
			return p.name, fmt.Errorf("start process %s: %w", p.name, err)
		}
	}
	return p.name, nil
}

// newProc builds a process record with generated identifiers and keys, outside any lock because
// RSA key generation is slow.
func (e *Emulator) newProc(spec ProcessSpec) (*proc, error) {
	id, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	id = strings.ToUpper(id)
	if spec.Serial == "" {
		if spec.Serial, err = randomSerial(); err != nil {
			return nil, err
		}
	}
	if spec.DeviceDirectoryID == "" {
		if spec.DeviceDirectoryID, err = randomUUID(); err != nil {
			return nil, err
		}
	}
	if spec.Scope == ScopeUser {
		if spec.UserEmail == "" {
			h, err := randomHex(4)
			if err != nil {
				return nil, err
			}
			spec.UserEmail = "user-" + h + "@example.com"
		}
		if spec.UserDirectoryID == "" {
			if spec.UserDirectoryID, err = randomDigits(21); err != nil {
				return nil, err
			}
		}
	}
	key, err := e.keys.get(spec.KeyType)
	if err != nil {
		return nil, err
	}
	p := &proc{
		name:      process.Name(spec.Customer, id),
		customer:  spec.Customer,
		id:        id,
		spec:      spec,
		key:       key,
		profileID: profileID(spec),
		created:   e.clock(),
		calls:     map[string]int{},
		injected:  map[string]int{},
	}
	if spec.Behaviour == BehaviourWrongKey {
		if p.wrongKey, err = devicekey.New(spec.KeyType); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Publish publishes raw notification data to the topic and waits until pstest accepted it. It
// is meant for malformed-message tests; StartProcess publishes well-formed notifications itself.
func (e *Emulator) Publish(ctx context.Context, data []byte) error {
	return e.publish(ctx, e.publisher, e.TopicName(), data)
}

// publish sends data through pub, the publisher of the topic where names, and waits until
// pstest accepted it.
func (e *Emulator) publish(ctx context.Context, pub *pubsub.Publisher, where string, data []byte) error {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return errors.New("publish: emulator closed")
	}
	id, err := pub.Publish(ctx, &pubsub.Message{Data: data}).Get(ctx)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", where, err)
	}
	e.log.Debug("notification published", zap.String("topic", where), zap.String("message_id", id), zap.Int("bytes", len(data)))
	return nil
}

// SetOnline brings an offline device online: if signData was already requested, it signs after
// its SignDelay. Unknown names are ignored. It is a no-op for devices that are not offline.
func (e *Emulator) SetOnline(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.procs[name]
	if p == nil {
		return
	}
	p.online = true
	e.scheduleSignLocked(p)
}

// ClaimAs makes another adapter instance claim the process first, as if instanceID had called
// claim. It is not counted as an API call. It fails for unknown or finished processes and for
// processes already claimed by a different instance.
func (e *Emulator) ClaimAs(name, instanceID string) error {
	if instanceID == "" {
		return fmt.Errorf("claim %s: empty instance id", name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.procs[name]
	switch {
	case p == nil:
		return fmt.Errorf("claim %s: no such process", name)
	case p.finished():
		return fmt.Errorf("claim %s: process already %s", name, p.state())
	case p.claimedBy != "" && p.claimedBy != instanceID:
		return fmt.Errorf("claim %s: already claimed by %q", name, p.claimedBy)
	}
	p.claimedBy = instanceID
	return nil
}

// Process returns a snapshot of one process, and false if there is none with that name.
func (e *Emulator) Process(name string) (Snapshot, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.procs[name]
	if p == nil {
		return Snapshot{}, false
	}
	return p.snapshot(), true
}

// Snapshots returns snapshots of all processes, sorted by name.
func (e *Emulator) Snapshots() []Snapshot {
	e.mu.Lock()
	out := make([]Snapshot, 0, len(e.procs))
	for _, p := range e.procs {
		out = append(out, p.snapshot())
	}
	e.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// lookupLocked finds a process by resource name; the literal customer "my_customer" matches any
// customer, as in Google's API.
func (e *Emulator) lookupLocked(customer, id string) *proc {
	if customer != "my_customer" {
		return e.procs[process.Name(customer, id)]
	}
	for _, p := range e.procs {
		if p.id == id {
			return p
		}
	}
	return nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func randomUUID() (string, error) {
	h, err := randomHex(16)
	if err != nil {
		return "", err
	}
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}

// randomSerial looks like a ChromeOS device serial number: 10 upper-case letters and digits.
func randomSerial() (string, error) {
	const alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
	out := make([]byte, 10)
	for i := range out {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", fmt.Errorf("random: %w", err)
		}
		out[i] = alphabet[n.Int64()]
	}
	return string(out), nil
}

// randomDigits looks like a Directory API user id: n decimal digits, the first one non-zero.
func randomDigits(n int) (string, error) {
	out := make([]byte, n)
	for i := range out {
		max := int64(10)
		if i == 0 {
			max = 9
		}
		d, err := rand.Int(rand.Reader, big.NewInt(max))
		if err != nil {
			return "", fmt.Errorf("random: %w", err)
		}
		out[i] = byte('0' + d.Int64())
		if i == 0 {
			out[i]++
		}
	}
	return string(out), nil
}

// profileID is a stable provisioningProfileId per customer and profile, shaped like a UUID.
func profileID(spec ProcessSpec) string {
	key := spec.Customer + "\x00generic\x00" + spec.ProfileRef
	if spec.SCEPProfile != nil {
		key = spec.Customer + "\x00scep\x00" + spec.SCEPProfile.CommonName + "\x00" + spec.SCEPProfile.TemplateName
	}
	sum := sha256.Sum256([]byte(key))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}
