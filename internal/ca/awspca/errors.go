package awspca

import (
	"context"
	"errors"
	"fmt"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// refused reports whether err is PCA's answer refusing the request (a client fault), after which
// nothing was issued; a server fault or no answer leaves that in doubt.
func refused(err error) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	var re *awshttp.ResponseError
	return api.ErrorFault() == smithy.FaultClient || (errors.As(err, &re) && re.HTTPStatusCode() >= 400 && re.HTTPStatusCode() < 500)
}

// classify turns an SDK error into a classified one that says what the operator can do. An
// error after ctx ended wraps ctx's error, so that the engine sees a cancellation as one.
func classify(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return ca.Retryable(fmt.Errorf("%s: %w", what, cerr), 0)
	}
	var api smithy.APIError
	if !errors.As(err, &api) {
		// No answer from PCA: the network, or no credentials in the default chain.
		return ca.Retryable(fmt.Errorf("%s: %s", what, ca.ServerText(err.Error(), maxMessage)), 0)
	}
	// The code is the server's text too (a proxy's, for one).
	code := ca.ServerText(api.ErrorCode(), 100)
	msg := ca.ServerText(api.ErrorMessage(), maxMessage)
	if msg == "" {
		msg = "no reason given"
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	e := func(hint string) error {
		if hint != "" {
			return fmt.Errorf("%s: PCA answered %s: %s (%s)", what, code, msg, hint)
		}
		return fmt.Errorf("%s: PCA answered %s: %s", what, code, msg)
	}
	switch code {
	case "MalformedCSRException":
		return ca.Permanent(e("PCA refused the CSR"))
	case "InvalidArgsException", "InvalidRequestException", "ValidationException", "InvalidParameterException":
		return ca.Permanent(e("check templateArn, signingAlgorithm and the profile's validity against the CA"))
	case "InvalidArnException", "ResourceNotFoundException":
		return ca.Permanent(e("check certificateAuthorityArn and region"))
	case "InvalidStateException":
		return ca.Permanent(e("the CA is not ACTIVE"))
	case "LimitExceededException":
		return ca.Permanent(e("an AWS Private CA quota is used up; ask AWS for an increase"))
	case "AccessDeniedException", "AccessDenied":
		return ca.Permanent(e("grant the adapter's IAM role the actions in docs/ca-awspca.md on the CA"))
	case "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignatureException",
		"MissingAuthenticationTokenException", "InvalidClientTokenId", "SignatureDoesNotMatch":
		return ca.Permanent(e("AWS refused the adapter's credentials (from the SDK's default chain)"))
	case "ExpiredTokenException", "RequestExpired":
		return ca.Retryable(e("the credentials expired; the SDK fetches new ones"), 0)
	case "RequestFailedException", "ConcurrentModificationException":
		return ca.Retryable(e(""), 0)
	case "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded":
		return ca.Retryable(e("rate limited"), 0)
	}
	if api.ErrorFault() == smithy.FaultClient || (status >= 400 && status < 500) {
		return ca.Permanent(e(""))
	}
	return ca.Retryable(e(""), 0)
}
