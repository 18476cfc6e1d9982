package journal

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Columns are what a durable store indexes of a record besides the record itself.
type Columns struct {
	State State
	// Final is Record.Done: a record in a final state that still owes its audit event is not
	// final to the stores, so that it is leased again until the event is written.
	Final      bool
	NextDue    int64 // UnixNanos
	FinishedAt int64 // UnixNanos; meaningful only when Final
	// Identity is Record.IssuedIdentity, what IssuedTo looks records up by ("" for none).
	Identity string
	Data     []byte
}

// Encode returns the stored form of rec: its JSON and the values stores index.
func Encode(rec *Record) (Columns, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return Columns{}, fmt.Errorf("encode record: %w", err)
	}
	c := Columns{State: rec.State, Final: rec.Done(), NextDue: UnixNanos(rec.NextDue), Identity: rec.IssuedIdentity(), Data: data}
	if c.Final {
		c.FinishedAt = UnixNanos(rec.FinishedAt)
	}
	return c, nil
}

// Decode parses a stored record.
func Decode(data []byte) (*Record, error) {
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	return &rec, nil
}

// Unix nanoseconds cover 1678 to 2262; times outside (the zero time among them) are clamped,
// which keeps their order relative to every time inside.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// UnixNanos is t in Unix nanoseconds, clamped to the int64 range so that it can be compared in
// a database column.
func UnixNanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}
