// Package verifiedaccess is the adapter's second intake path: certificates for keys that Chrome
// registered through enterprise.platformKeys.challengeKey, proven by Google's Verified Access API.
//
// The flow (docs/verified-access.md): an extension asks the enrollment server for a challenge
// (Server, POST /v1/verifiedaccess/challenge), which the server gets from Google (Client, v1 or v2
// per profile); the extension has Chrome answer it with registerKey; it posts the answer
// (/enroll); the server has Google verify it against the expected identity, checks the SPKAC in
// the result (ParseSPKAC) and that it was not used before, applies the profile's device-trust
// policy (Policy) to the verify result, renders the certificate's names from templates over that
// result (TemplateData), and asks the profile's CA for a certificate for the SPKAC's public key
// (ca.PublicKeyIssuer).
//
// What the adapter trusts: Google's answer to challenge:verify (over TLS, with the adapter's own
// credentials) and the SPKAC's signature. It never trusts what the extension says about the
// device: the identity it sends for a user key is only the identity Google is asked to confirm.
package verifiedaccess
