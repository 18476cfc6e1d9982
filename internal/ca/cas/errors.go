package cas

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// maxRetryAfter bounds the server's retry hint.
const maxRetryAfter = 10 * time.Minute

// classify turns an error of the SDK into a classified one that says what the operator can do.
// what names the call ("CAS corp: issue customers/…"). An error after ctx ended wraps ctx's
// error, so that the engine sees a cancellation as one.
func classify(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return ca.Retryable(fmt.Errorf("%s: %w (%v)", what, cerr, grpcText(err)), 0)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not from the server: the client could not dial, or found no credentials.
		return ca.Retryable(fmt.Errorf("%s: %s", what, ca.ServerText(err.Error(), maxMessage)), 0)
	}
	msg := grpcText(err)
	e := func(hint string) error {
		if hint != "" {
			return fmt.Errorf("%s: CAS answered %s: %s (%s)", what, st.Code(), msg, hint)
		}
		return fmt.Errorf("%s: CAS answered %s: %s", what, st.Code(), msg)
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return ca.Permanent(e("the pool's issuance policy or the template refused the request, or a setting is malformed"))
	case codes.FailedPrecondition:
		return ca.Permanent(e("is the pool's CA enabled, and does the template allow this request?"))
	case codes.PermissionDenied:
		return ca.Permanent(e("grant the adapter's service account the permissions in docs/ca-cas.md on the pool"))
	case codes.Unauthenticated:
		return ca.Permanent(e("the adapter's Google credentials were refused"))
	case codes.NotFound:
		return ca.Permanent(e("check caPool, certificateAuthority and certificateTemplate"))
	case codes.AlreadyExists:
		return ca.Permanent(e(""))
	case codes.Unimplemented:
		return ca.Permanent(e("is endpoint the CAS API?"))
	case codes.ResourceExhausted:
		return ca.Retryable(e("quota"), retryDelay(err))
	default: // Unavailable, Aborted, Internal, Unknown, DeadlineExceeded from the server, …
		return ca.Retryable(e(""), retryDelay(err))
	}
}

// grpcText is the server's message with its error reason, fit for a failure message.
func grpcText(err error) string {
	msg := err.Error()
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
	}
	if ae, ok := apierror.FromError(err); ok && ae.Reason() != "" {
		msg += " [" + ae.Reason() + "]"
	}
	msg = ca.ServerText(msg, maxMessage)
	if msg == "" {
		return "no reason given"
	}
	return msg
}

// retryDelay is the server's RetryInfo hint, when it sent one.
func retryDelay(err error) time.Duration {
	ae, ok := apierror.FromError(err)
	if !ok || ae.Details().RetryInfo == nil {
		return 0
	}
	return min(max(ae.Details().RetryInfo.GetRetryDelay().AsDuration(), 0), maxRetryAfter)
}
