package metrics

import "github.com/prometheus/client_golang/prometheus"

// APIDirectory is the Admin SDK Directory API, as a value of the api label.
const APIDirectory = "admin_directory"

// Kinds of Directory lookups, as values of the kind label.
const (
	DirectoryDevice = "device" // chromeosdevices.get
	DirectoryUser   = "user"   // users.get
)

// Results of a Directory lookup, as values of the result label.
const (
	DirectoryFound     = "found"     // the record was read
	DirectoryNotFound  = "not_found" // 404: no such device or user (cached briefly)
	DirectoryForbidden = "forbidden" // 403: the service account may not read it (delegation, scopes)
	DirectoryRetryable = "retryable" // 429, 5xx, a timeout: the lookup is tried again later
	DirectoryError     = "error"     // any other refusal, or an answer that could not be read
)

// Directory is the metrics of the Admin SDK Directory lookups templates and routes use.
type Directory struct {
	// Lookups counts lookups by kind and result, answered from the cache or not.
	Lookups *prometheus.CounterVec
	// CacheHits counts lookups answered from the cache, by kind (a cached "not found" included).
	CacheHits *prometheus.CounterVec
	// CacheEntries is the number of records the cache holds now.
	CacheEntries prometheus.Gauge
	// CacheEvictions counts entries dropped before they expired, because the cache was full.
	CacheEvictions prometheus.Counter
}

// NewDirectory returns the Directory lookup metrics, registered on reg.
func NewDirectory(reg prometheus.Registerer) *Directory {
	return &Directory{
		Lookups: counterVec(reg, "directory_lookups_total",
			"Admin SDK Directory lookups, by kind (device, user) and result (found, not_found, forbidden, retryable, error).", "kind", "result"),
		CacheHits: counterVec(reg, "directory_cache_hits_total",
			"Directory lookups answered from the cache, by kind.", "kind"),
		CacheEntries: gauge(reg, "directory_cache_entries",
			"Directory records (and recent not-found answers) the cache holds."),
		CacheEvictions: counter(reg, "directory_cache_evictions_total",
			"Directory cache entries dropped before they expired because the cache was full (google.directory.cacheSize)."),
	}
}
