// Package reference is the minimal adapter the load harness measures the real one against: per
// process the five calls Google requires (get, claim, signData, operations.get until the device
// signed, uploadCertificate) through the generated client, the request built and the CSR
// checked with package csr, the certificate signed in process by a CA made at start, and
// nothing else: no journal, no retries, no rate limit, no templates beyond the common name.
//
// What it reaches on a machine is the practical limit of the emulator there, so the harness
// reports the adapter's numbers as a ratio of its numbers in the same run. It keeps a goroutine
// per process in flight, waiting devices included, which is the memory an adapter without a
// journal-driven scheduler would need.
package reference

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"go.uber.org/zap"
	cm "google.golang.org/api/chromemanagement/v1"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/intake"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Options configure a Driver.
type Options struct {
	// APIEndpoint is the Certificate Provisioning API's base URL (the emulator's, with a
	// trailing slash); calls carry no credentials.
	APIEndpoint string
	// PubSubAddr is the Pub/Sub emulator's host:port; Project and Subscription name the
	// subscription (an id).
	PubSubAddr            string
	Project, Subscription string
	// InstanceID is the callerInstanceId of its claims.
	InstanceID string
	// Streams and MaxOutstandingMessages are the subscriber's receive settings, as the
	// adapter's pubsub.streams and pubsub.maxOutstandingMessages.
	Streams, MaxOutstandingMessages int
	// PollInterval is the first wait before polling the signData operation, and the second;
	// then it doubles up to MaxPollInterval, as the adapter's engine.pollInterval and
	// engine.maxPollInterval do.
	PollInterval, MaxPollInterval time.Duration
	// HTTPClient carries the API calls; nil is a client with enough idle connections per host
	// for a burst.
	HTTPClient *http.Client
	Logger     *zap.Logger
}

// Stats is what a Driver did so far.
type Stats struct {
	Admitted int64 `json:"admitted"` // claimed and acked
	Issued   int64 `json:"issued"`   // certificate uploaded
	Failed   int64 `json:"failed"`   // gave up on the process after an error (no retries)
	InFlight int64 `json:"inFlight"` // claimed, not yet ended: one goroutine each
}

// Driver is the reference adapter. Create it with New, then Run it.
type Driver struct {
	o      Options
	log    *zap.Logger
	api    *cm.CustomersCertificateProvisioningProcessesService
	pubsub *pubsub.Client

	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate

	admitted, issued, failed, inFlight atomic.Int64
	wg                                 sync.WaitGroup
	// admittedNames are the processes taken on: Pub/Sub delivers at least once, and working a
	// process twice would ask its device to sign twice. The one piece of state it keeps, in
	// memory (no journal).
	admittedNames sync.Map
}

// New connects the clients and makes the CA (ECDSA P-256, as the adapter's built-in CA by
// default). ctx bounds the setup only.
func New(ctx context.Context, o Options) (*Driver, error) {
	if o.APIEndpoint == "" || o.PubSubAddr == "" || o.Subscription == "" || o.InstanceID == "" {
		return nil, errors.New("reference: the API endpoint, the Pub/Sub address, the subscription and an instance id are required")
	}
	if o.PollInterval <= 0 || o.MaxPollInterval < o.PollInterval {
		return nil, fmt.Errorf("reference: poll interval %s up to %s: want a positive interval and a maximum not below it", o.PollInterval, o.MaxPollInterval)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 256
		o.HTTPClient = &http.Client{Transport: t}
	}
	svc, err := cm.NewService(ctx, option.WithEndpoint(o.APIEndpoint), option.WithHTTPClient(o.HTTPClient))
	if err != nil {
		return nil, fmt.Errorf("reference: chrome management client: %w", err)
	}
	ps, err := pubsub.NewClient(ctx, o.Project, option.WithEndpoint(o.PubSubAddr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		return nil, fmt.Errorf("reference: pubsub client: %w", err)
	}
	d := &Driver{o: o, log: o.Logger, api: cm.NewCustomersCertificateProvisioningProcessesService(svc), pubsub: ps}
	if err := d.makeCA(); err != nil {
		_ = ps.Close()
		return nil, err
	}
	return d, nil
}

func (d *Driver) makeCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("reference: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certprov reference driver CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("reference: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("reference: CA certificate: %w", err)
	}
	d.caKey, d.caCert = key, cert
	return nil
}

// CACertificatePEM is the CA certificate the issued certificates chain to.
func (d *Driver) CACertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.caCert.Raw})
}

// Stats returns the counts so far.
func (d *Driver) Stats() Stats {
	return Stats{Admitted: d.admitted.Load(), Issued: d.issued.Load(), Failed: d.failed.Load(), InFlight: d.inFlight.Load()}
}

// Run receives notifications until ctx ends, then waits for the processes in flight to stop
// (they stop at once: their context is ctx) and closes the Pub/Sub client.
func (d *Driver) Run(ctx context.Context) error {
	sub := d.pubsub.Subscriber(d.o.Subscription)
	if d.o.Streams > 0 {
		sub.ReceiveSettings.NumGoroutines = d.o.Streams
	}
	if d.o.MaxOutstandingMessages > 0 {
		sub.ReceiveSettings.MaxOutstandingMessages = d.o.MaxOutstandingMessages
	}
	err := sub.Receive(ctx, func(mctx context.Context, m *pubsub.Message) {
		if d.admit(mctx, ctx, m.Data) {
			m.Ack()
		} else {
			m.Nack()
		}
	})
	d.wg.Wait()
	if cerr := d.pubsub.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("reference: receive: %w", err)
	}
	return nil
}

// admit reads and claims the process of a notification and starts its goroutine; it reports
// whether to ack. A malformed notification is acked and forgotten; an error is nacked.
func (d *Driver) admit(mctx, run context.Context, data []byte) bool {
	n, err := intake.Decode(data)
	if err != nil {
		d.log.Warn("malformed notification", zap.Error(err))
		return true
	}
	name := process.Name(n.CustomerID, n.ProcessID)
	if _, dup := d.admittedNames.Load(name); dup {
		return true
	}
	p, err := d.api.Get(name).Context(mctx).Do()
	if err != nil {
		d.log.Warn("get", zap.String("process", name), zap.Error(err))
		return false
	}
	if p.IssuedCertificate != "" || p.FailureMessage != "" || p.SignData != "" {
		return true // ended, or taken on by a delivery that is still at work
	}
	req := &cm.GoogleChromeManagementVersionsV1ClaimCertificateProvisioningProcessRequest{CallerInstanceId: d.o.InstanceID}
	if _, err := d.api.Claim(name, req).Context(mctx).Do(); err != nil {
		d.log.Warn("claim", zap.String("process", name), zap.Error(err))
		return false
	}
	if _, dup := d.admittedNames.LoadOrStore(name, struct{}{}); dup {
		return true // a duplicate delivered at the same time got here first
	}
	d.admitted.Add(1)
	d.inFlight.Add(1)
	d.wg.Go(func() {
		defer d.inFlight.Add(-1)
		if err := d.provision(run, p); err != nil {
			d.failed.Add(1)
			d.log.Warn("process abandoned", zap.String("process", name), zap.Error(err))
			return
		}
		d.issued.Add(1)
	})
	return true
}

// provision takes a claimed process to its uploaded certificate.
func (d *Driver) provision(ctx context.Context, p *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess) error {
	spki, err := base64.StdEncoding.DecodeString(p.SubjectPublicKeyInfo)
	if err != nil {
		return fmt.Errorf("subjectPublicKeyInfo: %w", err)
	}
	alg, err := csr.AlgorithmFor(spki)
	if err != nil {
		return err
	}
	cri, err := csr.BuildCRI(&csr.Request{Subject: pkix.Name{CommonName: commonName(p)}}, spki)
	if err != nil {
		return err
	}
	op, err := d.api.SignData(p.Name, &cm.GoogleChromeManagementVersionsV1SignDataRequest{
		SignData: base64.StdEncoding.EncodeToString(cri), SignatureAlgorithm: alg,
	}).Context(ctx).Do()
	if err != nil {
		return fmt.Errorf("signData: %w", err)
	}
	sig, err := d.awaitSignature(ctx, op.Name)
	if err != nil {
		return err
	}
	der, err := csr.Assemble(cri, alg, sig)
	if err != nil {
		return err
	}
	req, err := csr.Verify(der, spki)
	if err != nil {
		return err
	}
	certPEM, err := d.sign(req)
	if err != nil {
		return err
	}
	if _, err := d.api.UploadCertificate(p.Name, &cm.GoogleChromeManagementVersionsV1UploadCertificateRequest{
		CertificatePem: certPEM,
	}).Context(ctx).Do(); err != nil {
		return fmt.Errorf("uploadCertificate: %w", err)
	}
	return nil
}

// awaitSignature polls the operation until the device signed, on the adapter's schedule (its
// engine's pollAgain): the poll interval, the same again, then doubling up to the maximum.
func (d *Driver) awaitSignature(ctx context.Context, opName string) ([]byte, error) {
	interval := d.o.PollInterval
	for attempt := 0; ; attempt++ {
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		op, err := d.api.Operations.Get(opName).Context(ctx).Do()
		if err != nil {
			return nil, fmt.Errorf("operations.get: %w", err)
		}
		if op.Error != nil {
			return nil, fmt.Errorf("signing failed: %s", op.Error.Message)
		}
		if op.Done {
			var resp struct {
				Process struct {
					Signature string `json:"signature"`
				} `json:"certificateProvisioningProcess"`
			}
			if err := json.Unmarshal(op.Response, &resp); err != nil || resp.Process.Signature == "" {
				return nil, fmt.Errorf("operation %s done without a signature", opName)
			}
			return base64.StdEncoding.DecodeString(resp.Process.Signature)
		}
		if attempt > 0 {
			interval = min(2*interval, d.o.MaxPollInterval)
		}
	}
}

// sign issues a one-day certificate for the CSR's key and subject, as PEM.
func (d *Driver) sign(req *x509.CertificateRequest) (string, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return "", fmt.Errorf("serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		RawSubject:   req.RawSubject,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, d.caCert, req.PublicKey, d.caKey)
	if err != nil {
		return "", fmt.Errorf("sign certificate: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// commonName is the device serial, or the user's e-mail for a user session.
func commonName(p *cm.GoogleChromeManagementVersionsV1CertificateProvisioningProcess) string {
	if u := p.ChromeOsUserSession; u != nil && u.UserPrimaryEmail != "" {
		return u.UserPrimaryEmail
	}
	if dev := p.ChromeOsDevice; dev != nil && dev.SerialNumber != "" {
		return dev.SerialNumber
	}
	return p.Name
}
