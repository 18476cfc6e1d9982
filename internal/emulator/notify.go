package emulator

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of CertificateProvisioningProcessCreatedEventData.
const (
	fieldProcessID  protowire.Number = 1
	fieldCustomerID protowire.Number = 2
)

// EncodeNotification encodes the Pub/Sub message data Google sends when a process is created,
//
//	message CertificateProvisioningProcessCreatedEventData {
//	  string certificate_provisioning_process_id = 1;
//	  string customer_id = 2;
//	}
//
// as proto3 JSON (EncodingCamel, also for ""), JSON with the proto field names (EncodingSnake) or
// binary protobuf (EncodingProto).
func EncodeNotification(encoding, processID, customerID string) ([]byte, error) {
	return encodeNotification(encoding, processID, customerID)
}

func encodeNotification(encoding, processID, customerID string) ([]byte, error) {
	switch encoding {
	case "", EncodingCamel:
		return json.Marshal(struct {
			ProcessID  string `json:"certificateProvisioningProcessId"`
			CustomerID string `json:"customerId"`
		}{processID, customerID})
	case EncodingSnake:
		return json.Marshal(struct {
			ProcessID  string `json:"certificate_provisioning_process_id"`
			CustomerID string `json:"customer_id"`
		}{processID, customerID})
	case EncodingProto:
		var b []byte
		b = protowire.AppendTag(b, fieldProcessID, protowire.BytesType)
		b = protowire.AppendString(b, processID)
		b = protowire.AppendTag(b, fieldCustomerID, protowire.BytesType)
		b = protowire.AppendString(b, customerID)
		return b, nil
	default:
		return nil, fmt.Errorf("encode notification: unknown encoding %q", encoding)
	}
}
