// Package intake receives Certificate Provisioning notifications from Pub/Sub, decodes them and
// hands each new process to the engine, acknowledging a message only once its process is
// recorded (or the message is known to need no work).
package intake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Notification is CertificateProvisioningProcessCreatedEventData.
type Notification struct {
	ProcessID  string
	CustomerID string
}

// ErrMalformed wraps every decoding failure: such a message can never be processed.
var ErrMalformed = errors.New("malformed notification")

// maxIDLen bounds ids well above the 32 hex characters devices mint; anything longer is junk.
const maxIDLen = 256

// Decode parses a notification. Google does not document the wire encoding, so it accepts proto3
// JSON (camelCase), snake_case JSON and binary protobuf: a payload whose first non-space byte is
// '{' is JSON, anything else protobuf.
func Decode(data []byte) (Notification, error) {
	var n Notification
	var err error
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		n, err = decodeJSON(trimmed)
	} else {
		n, err = decodeProto(data)
	}
	if err != nil {
		return Notification{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := n.validate(); err != nil {
		return Notification{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return n, nil
}

func decodeJSON(data []byte) (Notification, error) {
	// Both spellings land in one struct; if a sender set both, they must agree.
	var m struct {
		ProcessCamel  *string `json:"certificateProvisioningProcessId"`
		ProcessSnake  *string `json:"certificate_provisioning_process_id"`
		CustomerCamel *string `json:"customerId"`
		CustomerSnake *string `json:"customer_id"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return Notification{}, fmt.Errorf("json: %w", err)
	}
	pid, err := pick("certificateProvisioningProcessId", m.ProcessCamel, m.ProcessSnake)
	if err != nil {
		return Notification{}, err
	}
	cid, err := pick("customerId", m.CustomerCamel, m.CustomerSnake)
	if err != nil {
		return Notification{}, err
	}
	return Notification{ProcessID: pid, CustomerID: cid}, nil
}

func pick(field string, camel, snake *string) (string, error) {
	switch {
	case camel != nil && snake != nil && *camel != *snake:
		return "", fmt.Errorf("json: %s given twice with different values", field)
	case camel != nil:
		return *camel, nil
	case snake != nil:
		return *snake, nil
	}
	return "", nil
}

func decodeProto(data []byte) (Notification, error) {
	var n Notification
	for len(data) > 0 {
		num, typ, l := protowire.ConsumeTag(data)
		if l < 0 {
			return Notification{}, fmt.Errorf("protobuf: %w", protowire.ParseError(l))
		}
		data = data[l:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(data)
			if l < 0 {
				return Notification{}, fmt.Errorf("protobuf field %d: %w", num, protowire.ParseError(l))
			}
			if !utf8.Valid(v) {
				return Notification{}, fmt.Errorf("protobuf field %d: invalid UTF-8", num)
			}
			if num == 1 {
				n.ProcessID = string(v)
			} else {
				n.CustomerID = string(v)
			}
			data = data[l:]
			continue
		}
		// Unknown fields are skipped, as proto3 requires, so a newer schema does not break us.
		l = protowire.ConsumeFieldValue(num, typ, data)
		if l < 0 {
			return Notification{}, fmt.Errorf("protobuf field %d: %w", num, protowire.ParseError(l))
		}
		data = data[l:]
	}
	return n, nil
}

// validate keeps ids to a safe alphabet: they are spliced into resource names and URL paths, so a
// '/' or '?' from a forged message must never reach a request.
func (n Notification) validate() error {
	for _, f := range []struct{ name, v string }{
		{"certificateProvisioningProcessId", n.ProcessID},
		{"customerId", n.CustomerID},
	} {
		if f.v == "" {
			return fmt.Errorf("%s is missing", f.name)
		}
		if len(f.v) > maxIDLen {
			return fmt.Errorf("%s is %d bytes long", f.name, len(f.v))
		}
		for _, r := range f.v {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return fmt.Errorf("%s %q has a character outside [A-Za-z0-9._-]", f.name, f.v)
			}
		}
	}
	return nil
}
