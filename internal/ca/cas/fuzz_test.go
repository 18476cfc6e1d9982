package cas

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// FuzzClassify feeds arbitrary CAS error answers (status code, message, error reason, retry
// delay) through classify: the error is permanent or retryable, never pending; printable on one
// line, the server's part bounded; a retry hint never negative nor beyond maxRetryAfter; and the
// classes the operator's table in docs/ca-cas.md promises hold.
func FuzzClassify(f *testing.F) {
	f.Add(uint32(codes.PermissionDenied), "Permission 'privateca.certificates.create' denied on resource", "IAM_PERMISSION_DENIED", int64(0))
	f.Add(uint32(codes.ResourceExhausted), "Quota exceeded", "RATE_LIMIT_EXCEEDED", int64(42))
	f.Add(uint32(codes.Unavailable), "", "", int64(-5))
	f.Add(uint32(codes.InvalidArgument), "subject\nnot\x00allowed \xff", "", int64(1<<40))
	f.Fuzz(func(t *testing.T, c uint32, msg, reason string, delaySeconds int64) {
		code := codes.Code(c%16 + 1) // 1..16: every code but OK, which is no error
		st := status.New(code, msg)
		var details []protoadapt.MessageV1
		if reason != "" {
			details = append(details, &errdetails.ErrorInfo{Reason: reason, Domain: "privateca.googleapis.com"})
		}
		if delaySeconds != 0 {
			details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Duration(delaySeconds%(1<<33)) * time.Second)})
		}
		if withDetails, err := st.WithDetails(details...); err == nil {
			st = withDetails
		}
		err := classify(context.Background(), "CAS corp: issue k", st.Err())
		class, hint := ca.Classify(err)
		if class == ca.ClassPending {
			t.Fatalf("classified pending: %v", err)
		}
		if hint < 0 || hint > maxRetryAfter {
			t.Fatalf("retry hint %s", hint)
		}
		text := err.Error()
		if !utf8.ValidString(text) || strings.ContainsFunc(text, unicode.IsControl) {
			t.Fatalf("not printable on one line: %q", text)
		}
		if len(text) > len("CAS corp: issue k: CAS answered : ")+len(code.String())+maxMessage+len("…")+200 {
			t.Fatalf("message of %d bytes", len(text))
		}
		switch code {
		case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
			if class != ca.ClassPermanent {
				t.Fatalf("%s classified %v", code, class)
			}
		case codes.Unavailable, codes.ResourceExhausted, codes.Internal, codes.Aborted:
			if class != ca.ClassRetryable {
				t.Fatalf("%s classified %v", code, class)
			}
		}
	})
}
