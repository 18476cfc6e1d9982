package intake

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/certprov/certprov-adapter/internal/emulator"
)

func protoNotification(pid, cid string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, pid)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, cid)
	return b
}

func TestDecode(t *testing.T) {
	const pid, cid = "0123456789ABCDEF0123456789ABCDEF", "C01abcd"
	want := Notification{ProcessID: pid, CustomerID: cid}

	// A proto with an unknown varint and an unknown bytes field before the known ones.
	var withUnknown []byte
	withUnknown = protowire.AppendTag(withUnknown, 7, protowire.VarintType)
	withUnknown = protowire.AppendVarint(withUnknown, 42)
	withUnknown = protowire.AppendTag(withUnknown, 9, protowire.BytesType)
	withUnknown = protowire.AppendString(withUnknown, "future")
	withUnknown = append(withUnknown, protoNotification(pid, cid)...)

	tests := []struct {
		name string
		data []byte
	}{
		{"camelCase JSON", []byte(`{"certificateProvisioningProcessId":"` + pid + `","customerId":"` + cid + `"}`)},
		{"snake_case JSON", []byte(`{"certificate_provisioning_process_id":"` + pid + `","customer_id":"` + cid + `"}`)},
		{"JSON with leading space and unknown field", []byte("\n  {\"customerId\":\"" + cid + "\",\"extra\":1,\"certificateProvisioningProcessId\":\"" + pid + "\"}")},
		{"mixed spellings that agree", []byte(`{"certificateProvisioningProcessId":"` + pid + `","certificate_provisioning_process_id":"` + pid + `","customer_id":"` + cid + `"}`)},
		{"binary protobuf", protoNotification(pid, cid)},
		{"binary protobuf with unknown fields", withUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "missing"},
		{"truncated JSON", []byte(`{"customerId":"C1"`), "json"},
		{"JSON array", []byte(`{"customerId":["C1"]}`), "json"},
		{"missing process id", []byte(`{"customerId":"C1"}`), "certificateProvisioningProcessId is missing"},
		{"missing customer", []byte(`{"certificateProvisioningProcessId":"AB"}`), "customerId is missing"},
		{"conflicting spellings", []byte(`{"certificateProvisioningProcessId":"AB","certificate_provisioning_process_id":"CD","customerId":"C1"}`), "different values"},
		{"path injection", []byte(`{"certificateProvisioningProcessId":"../../other","customerId":"C1"}`), "outside"},
		{"query injection", []byte(`{"certificateProvisioningProcessId":"AB?x=1","customerId":"C1"}`), "outside"},
		{"truncated proto", protoNotification("ABCDEF", "C1")[:5], "protobuf"},
		{"proto bad UTF-8", protoNotification("AB\xff", "C1"), "UTF-8"},
		{"plain text", []byte("hello world"), ""},
		{"overlong id", []byte(`{"certificateProvisioningProcessId":"` + strings.Repeat("A", 300) + `","customerId":"C1"}`), "bytes long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.data)
			if err == nil {
				t.Fatal("Decode accepted malformed input")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"certificateProvisioningProcessId":"0123456789ABCDEF0123456789ABCDEF","customerId":"C01"}`))
	f.Add([]byte(`{"certificate_provisioning_process_id":"AB","customer_id":"C01"}`))
	f.Add(protoNotification("0123456789ABCDEF0123456789ABCDEF", "C01"))
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		// Whatever is accepted must be safe to splice into a resource name and must round-trip
		// through the protobuf encoding.
		if n.validate() != nil {
			t.Fatalf("accepted invalid notification %+v", n)
		}
		again, err := Decode(protoNotification(n.ProcessID, n.CustomerID))
		if err != nil || again != n {
			t.Fatalf("round trip of %+v: %+v, %v", n, again, err)
		}
	})
}

// BenchmarkDecode: one notification in each encoding Google may send.
func BenchmarkDecode(b *testing.B) {
	const pid, customer = "0123456789ABCDEF0123456789ABCDEF", "C01b2c3d4"
	for _, enc := range []string{"camel", "snake", "proto"} {
		data, err := emulator.EncodeNotification(enc, pid, customer)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(enc, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				n, err := Decode(data)
				if err != nil || n.ProcessID != pid {
					b.Fatalf("Decode = %+v, %v", n, err)
				}
			}
		})
	}
}
