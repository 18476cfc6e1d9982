package awspca_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// sigv4Error is why a request's AWS Signature Version 4 does not hold, with the error code AWS
// answers it with.
type sigv4Error struct {
	code string
	msg  string
}

func (e *sigv4Error) Error() string { return e.code + ": " + e.msg }

// verifySigV4 checks r's Authorization header the way AWS does: the credential scope (date,
// region, service), the signed headers (host, the date, the operation and a session token among them), the request
// time within 15 minutes, and the signature over the canonical request and body, recomputed with
// the secret of the access key. secrets maps access key IDs to secret keys. It is written from
// the published algorithm, not with the SDK's signer, so that it checks the SDK rather than
// agreeing with it by construction.
func verifySigV4(r *http.Request, body []byte, secrets map[string]string, region, service string, now time.Time) error {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return &sigv4Error{"MissingAuthenticationTokenException", "Missing Authentication Token"}
	}
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return &sigv4Error{"IncompleteSignatureException", "Authorization header requires the AWS4-HMAC-SHA256 algorithm"}
	}
	fields := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(auth, algo), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return &sigv4Error{"IncompleteSignatureException", "malformed Authorization header"}
		}
		fields[k] = v
	}
	cred, signedHeaders, sig := fields["Credential"], fields["SignedHeaders"], fields["Signature"]
	if cred == "" || signedHeaders == "" || sig == "" {
		return &sigv4Error{"IncompleteSignatureException", "Authorization header requires Credential, SignedHeaders and Signature"}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return &sigv4Error{"IncompleteSignatureException", "malformed credential scope"}
	}
	akid, date, scopeRegion, scopeService := scope[0], scope[1], scope[2], scope[3]
	secret, ok := secrets[akid]
	if !ok {
		return &sigv4Error{"UnrecognizedClientException", "The security token included in the request is invalid."}
	}
	if scopeRegion != region || scopeService != service {
		return &sigv4Error{"InvalidSignatureException", fmt.Sprintf("Credential should be scoped to a valid region (%s) and service (%s)", region, service)}
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || !strings.HasPrefix(amzDate, date) {
		return &sigv4Error{"IncompleteSignatureException", "X-Amz-Date is missing or does not match the credential scope"}
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return &sigv4Error{"InvalidSignatureException", "Signature expired: the request time is too far from the server's"}
	}
	signed := strings.Split(signedHeaders, ";")
	if !sort.StringsAreSorted(signed) {
		return &sigv4Error{"InvalidSignatureException", "SignedHeaders must be sorted"}
	}
	has := map[string]bool{}
	for _, h := range signed {
		has[h] = true
	}
	if !has["host"] {
		return &sigv4Error{"InvalidSignatureException", "'Host' must be a signed header"}
	}
	// The date, the operation and a session token are part of what is signed.
	for _, name := range []string{"x-amz-date", "x-amz-target", "x-amz-security-token"} {
		if r.Header.Get(name) != "" && !has[name] {
			return &sigv4Error{"InvalidSignatureException", fmt.Sprintf("'%s' must be a signed header", name)}
		}
	}
	var canonHeaders strings.Builder
	for _, h := range signed {
		var v string
		if h == "host" {
			v = r.Host
		} else {
			vs := r.Header.Values(h)
			if vs == nil {
				return &sigv4Error{"InvalidSignatureException", fmt.Sprintf("signed header %s is not in the request", h)}
			}
			for i := range vs {
				vs[i] = strings.Join(strings.Fields(vs[i]), " ")
			}
			v = strings.Join(vs, ",")
		}
		canonHeaders.WriteString(h + ":" + v + "\n")
	}
	payload := sha256.Sum256(body)
	payloadHex := hex.EncodeToString(payload[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != payloadHex {
		return &sigv4Error{"InvalidSignatureException", "X-Amz-Content-Sha256 does not match the body"}
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canonical := strings.Join([]string{r.Method, path, canonicalQuery(r.URL.Query()), canonHeaders.String(), signedHeaders, payloadHex}, "\n")
	crHash := sha256.Sum256([]byte(canonical))
	stringToSign := strings.Join([]string{"AWS4-HMAC-SHA256", amzDate, strings.Join(scope[1:], "/"), hex.EncodeToString(crHash[:])}, "\n")
	key := []byte("AWS4" + secret)
	for _, s := range []string{date, scopeRegion, scopeService, "aws4_request"} {
		key = hmacSHA256(key, s)
	}
	want := hex.EncodeToString(hmacSHA256(key, stringToSign))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return &sigv4Error{"InvalidSignatureException", "The request signature we calculated does not match the signature you provided."}
	}
	return nil
}

func canonicalQuery(q url.Values) string {
	var parts []string
	for k, vs := range q {
		for _, v := range vs {
			parts = append(parts, url.QueryEscape(k)+"="+url.QueryEscape(v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "&")
}

func hmacSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}
