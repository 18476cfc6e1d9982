package config

import "time"

// Defaults of the adapter-wide settings. They are tuned for one replica serving one customer with
// a few thousand devices; docs/configuration.md explains each.
const (
	// DefaultRateLimit and DefaultRateBurst come from the only quota figure published for a
	// Chrome Management API, about 2,500 requests a minute per project (Google publishes none
	// for these methods): a full bucket and a minute at the rate stay under it (40 × 60 + 20 =
	// 2,420), with room for doctor and inspect. At 5 calls per certificate that drains a burst
	// at 8 processes/s per project (docs/performance.md). Replicas share the project's quota.
	DefaultRateLimit       = 40.0 // requests per second to the Google API, per replica
	DefaultRateBurst       = 20
	DefaultRequestTimeout  = 30 * time.Second
	DefaultWorkers         = 16
	DefaultPollInterval    = 2 * time.Second
	DefaultMaxPollInterval = time.Minute
	// A device polls Google about 30 s, 2 min and 8 min after it was asked to sign, then every
	// 8 h (push when it comes online): one that has not signed within 10 minutes is offline,
	// and polling it every minute until its sign deadline spends the project's quota (10,000
	// such processes would poll 10,000 times a minute, four times the 2,500 requests/min
	// quota). From then on it is polled every 5 minutes: at most 12 polls an hour, and at most
	// 5 minutes late on a wait that was already over 10 (docs/performance.md).
	DefaultLongWaitAfter          = 10 * time.Minute
	DefaultLongWaitPollInterval   = 5 * time.Minute
	DefaultInitialBackoff         = time.Second
	DefaultMaxBackoff             = 5 * time.Minute
	DefaultRetryMaxDuration       = time.Hour
	DefaultJournalType            = JournalSQLite
	DefaultJournalPath            = "/var/lib/certprov/journal.db" // for sqlite when journal.path is unset
	DefaultLeaseDuration          = 2 * time.Minute
	DefaultRetention              = 30 * 24 * time.Hour
	DefaultLogLevel               = "info"
	DefaultLogFormat              = "json"
	DefaultMaxOutstandingMessages = 100
	DefaultStreams                = 1
	DefaultCredentialsType        = CredentialsADC
	// DefaultShutdownGracePeriod leaves a few seconds of Kubernetes' default 30 s
	// terminationGracePeriodSeconds for closing the journal and exiting.
	DefaultShutdownGracePeriod = 25 * time.Second

	// DefaultCATimeout bounds one call to a CA when caConnections.<name>.timeout is omitted.
	DefaultCATimeout = 30 * time.Second
	// DefaultValidity is a profile's certificate lifetime when omitted: one year.
	DefaultValidity = 8760 * time.Hour
	// DefaultSignDeadline is how long a device has to sign when omitted. Devices poll about
	// 30 s, 2 min, 8 min and then every 8 h, so a day lets an offline device come back.
	DefaultSignDeadline = 24 * time.Hour

	// DefaultRevokeGracePeriod is how long a superseded certificate stays valid: a day lets a
	// device that was offline when its new certificate came pick it up and switch to it.
	DefaultRevokeGracePeriod = 24 * time.Hour
	// DefaultRevokeReason is the RFC 5280 reason superseded certificates are revoked with.
	DefaultRevokeReason = "superseded"

	// DefaultVAListen is where the Verified Access enrollment server listens: loopback, so that
	// enabling it exposes nothing until an address is chosen deliberately.
	DefaultVAListen = "127.0.0.1:8443"
	// DefaultVAAPIVersion is v2, the version that reports device signals and key trust levels.
	DefaultVAAPIVersion = VAv2
	// DefaultChallengeLifetime is Google's: a Verified Access challenge is valid about a minute.
	DefaultChallengeLifetime = time.Minute
	// MaxChallengeLifetime bounds verifiedAccess.challengeLifetime: Google refuses older
	// challenges anyway, and a longer lifetime only keeps more replay state.
	MaxChallengeLifetime = 10 * time.Minute

	// Limits of the enrollment API per client address and in all (docs/verified-access.md,
	// "Limits", explains the choice). One address may spend at most a small share of
	// google.rateLimit's default budget, sustained (5 of 40/s) and at once (10 of 20): one
	// enrollment is two requests, so a NAT of thousands of devices still enrolls within the hour.
	DefaultVARateLimit = 5.0
	DefaultVARateBurst = 10
	// DefaultVAMaxConcurrentChallenges: a challenge is one Google call; 16 in flight is more
	// than a normal fleet reaches, so the cap only bites in a flood.
	DefaultVAMaxConcurrentChallenges = 16
	// DefaultVAMaxConcurrentEnrollments: an enrollment is a Google call and a CA call, which
	// may take seconds.
	DefaultVAMaxConcurrentEnrollments = 32
	DefaultVAMaxConcurrentPerClient   = 4
	DefaultVAQueueTimeout             = 5 * time.Second
	// MaxVAConcurrency and MaxVAQueueTimeout bound the keys above.
	MaxVAConcurrency  = 10_000
	MaxVAQueueTimeout = 30 * time.Second
)

// Journal types.
const (
	// JournalSQLite is a single file owned by one replica: durable across restarts.
	JournalSQLite = "sqlite"
	// JournalPostgres is shared by replicas that use one logical instance id.
	JournalPostgres = "postgres"
	// JournalMemory keeps processes in memory, so a restart forgets the claimed ones: tests and
	// demos only.
	JournalMemory = "memory"
)

// Defaults returns the configuration that applies to every key the file and the environment leave
// unset. Profiles and CA connections are empty: their per-entry defaults come from
// DefaultProfile and DefaultCAConnection.
func Defaults() Config {
	return Config{
		ShutdownGracePeriod: DefaultShutdownGracePeriod,
		PubSub:              PubSub{MaxOutstandingMessages: DefaultMaxOutstandingMessages, Streams: DefaultStreams},
		Google: Google{
			Credentials:    Credentials{Type: DefaultCredentialsType},
			RateLimit:      RateLimit{RequestsPerSecond: DefaultRateLimit, Burst: DefaultRateBurst},
			RequestTimeout: DefaultRequestTimeout,
			Directory:      DefaultDirectory(),
		},
		Engine: Engine{
			Workers:         DefaultWorkers,
			PollInterval:    DefaultPollInterval,
			MaxPollInterval: DefaultMaxPollInterval,
			LongWaitAfter:   DefaultLongWaitAfter, LongWaitPollInterval: DefaultLongWaitPollInterval,
			Retry: Retry{
				InitialBackoff: DefaultInitialBackoff,
				MaxBackoff:     DefaultMaxBackoff,
				MaxDuration:    DefaultRetryMaxDuration,
			},
		},
		Journal: Journal{Type: DefaultJournalType, LeaseDuration: DefaultLeaseDuration, Retention: DefaultRetention},
		Log:     Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Ops:     Ops{Listen: DefaultOpsListen, CheckInterval: DefaultOpsCheckInterval, CheckTimeout: DefaultOpsCheckTimeout},
		VerifiedAccess: VerifiedAccess{
			Listen:            DefaultVAListen,
			APIVersion:        DefaultVAAPIVersion,
			ChallengeLifetime: DefaultChallengeLifetime,
			RateLimit:         RateLimit{RequestsPerSecond: DefaultVARateLimit, Burst: DefaultVARateBurst},

			MaxConcurrentChallenges:  DefaultVAMaxConcurrentChallenges,
			MaxConcurrentEnrollments: DefaultVAMaxConcurrentEnrollments,
			MaxConcurrentPerClient:   DefaultVAMaxConcurrentPerClient,
			QueueTimeout:             DefaultVAQueueTimeout,
		},
	}
}

// DefaultProfile holds the values a profile gets for the keys it omits.
func DefaultProfile() Profile {
	return Profile{Validity: DefaultValidity, SignDeadline: DefaultSignDeadline,
		RevokeSuperseded: RevokeSuperseded{GracePeriod: DefaultRevokeGracePeriod, Reason: DefaultRevokeReason}}
}

// DefaultCAConnection holds the values a CA connection gets for the keys it omits.
func DefaultCAConnection() CAConnection {
	return CAConnection{Timeout: DefaultCATimeout}
}

// DefaultVerifiedAccessProfile holds the values an enrollment profile gets for the keys it omits:
// machine keys only (user keys must be allowed deliberately), one year of validity. apiVersion is
// inherited from verifiedAccess.apiVersion when the file leaves it empty.
func DefaultVerifiedAccessProfile() VerifiedAccessProfile {
	return VerifiedAccessProfile{Scopes: []string{VAScopeMachine}, Validity: DefaultValidity}
}
