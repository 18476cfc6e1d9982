package suggest

import "testing"

func TestDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"", "abc", 3},
		{"kitten", "sitting", 3},
		{"SerialNumbr", "SerialNumber", 1},
		{"scpe", "scep", 1}, // adjacent swap
		{"ca", "abc", 3},    // optimal string alignment: no edit of a swapped pair
		{"flaw", "lawn", 2},
	}
	for _, tt := range tests {
		if got := Distance(tt.a, tt.b); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := Distance(tt.b, tt.a); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d (symmetry)", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestClosest(t *testing.T) {
	fields := []string{"SerialNumber", "DirectoryID"}
	tests := []struct {
		word       string
		candidates []string
		want       string
	}{
		{"SerialNumbr", fields, "SerialNumber"},
		{"serialnumber", fields, "SerialNumber"}, // case only
		{"DirectoryId", fields, "DirectoryID"},
		{"Email", fields, ""}, // nothing close
		{"ip", []string{"id", "up"}, ""},
		{"scpe", []string{"est", "local", "scep", "stepca", "webhook"}, "scep"},
		{"commonNmae", []string{"commonName", "country"}, "commonName"},
		{"abcdef", []string{"abcxyz", "abcdefgh", "abcdefg"}, "abcdefg"}, // the nearest wins
		{"abcd", []string{"abce", "abcf"}, "abce"},                       // a tie goes to the first in order
		{"abcd", []string{"abcf", "abce"}, "abce"},                       // whatever the order given
		{"x", nil, ""},
	}
	for _, tt := range tests {
		if got := Closest(tt.word, tt.candidates); got != tt.want {
			t.Errorf("Closest(%q, %v) = %q, want %q", tt.word, tt.candidates, got, tt.want)
		}
	}
}

// BenchmarkClosest: one lookup among as many names as the largest section of the
// configuration schema has keys.
func BenchmarkClosest(b *testing.B) {
	names := []string{"enabled", "listen", "tls", "insecure", "endpoint", "apiVersion", "challengeLifetime", "rateLimit",
		"maxConcurrentChallenges", "maxConcurrentEnrollments", "maxConcurrentPerClient", "queueTimeout", "trustedProxies", "profiles",
		"instanceId", "customers", "shutdownGracePeriod", "pubsub", "google", "engine", "journal", "log", "caConnections"}
	for b.Loop() {
		if Closest("maxConcurentEnrollments", names) != "maxConcurrentEnrollments" {
			b.Fatal("wrong suggestion")
		}
	}
}
