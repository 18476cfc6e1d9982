// The sample extension's flow (enroll.js, unchanged) against a real certprov-adapter and the
// emulator, with PlatformKeys standing in for chrome.enterprise.platformKeys. Started by the Go
// test TestSampleExtension (internal/verifiedaccess), which provides:
//   ADAPTER_URL          the adapter's enrollment API (profiles wifi-v2, wifi-v1, users, locked)
//   ADAPTER_LIMITED_URL  the same, with a rate limit of 1 request a second and a burst of 2
//   EMULATOR_URL         the emulator (Google's Verified Access API and its service key)
//   CA_CERT              the PEM of the CA the certificates must chain to
import {test} from "node:test";
import assert from "node:assert/strict";
import {readFileSync} from "node:fs";
import {X509Certificate} from "node:crypto";

import {enroll, EnrollError} from "../enroll.js";
import {PlatformKeys, chromeRuntime} from "./chromeos-platform-keys.mjs";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through TestSampleExtension (go test ./internal/verifiedaccess -run SampleExtension)`);
  return v;
};
const ca = new X509Certificate(readFileSync(env("CA_CERT")));

// platformOf wires the stand-in as background.js wires chrome.enterprise.platformKeys.
function platformOf(keys) {
  const promisify = (fn, ...args) => new Promise((resolve, reject) => fn.call(keys, ...args, (r) => {
    if (chromeRuntime.lastError) reject(new Error(chromeRuntime.lastError.message));
    else resolve(r);
  }));
  return {
    challengeKey: (o) => promisify(keys.challengeKey, o),
    importCertificate: (token, der) => promisify(keys.importCertificate, token, der),
    fetch,
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  };
}

// imported returns the one certificate of the token, checked: for the registered key (the stand-in
// checks), issued by the CA and signed by it, valid now, a leaf.
function imported(keys, token) {
  const certs = keys.tokens[token].flatMap((k) => k.certificates);
  assert.equal(certs.length, 1, `one certificate in the ${token} token`);
  const cert = certs[0];
  assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), "the certificate chains to the CA");
  assert.ok(new Date(cert.validFrom) <= new Date() && new Date() < new Date(cert.validTo), "valid now");
  assert.equal(cert.ca, false, "a leaf");
  return cert;
}

for (const c of [
  {name: "machine key, RSA, API v2", profile: "wifi-v2", scope: "machine", algorithm: "RSA"},
  {name: "machine key, ECDSA (raw r||s), API v2", profile: "wifi-v2", scope: "machine", algorithm: "ECDSA"},
  {name: "machine key, ECDSA (DER), TPM 1.2, API v1", profile: "wifi-v1", scope: "machine", algorithm: "ECDSA", tpm: "1.2", ecdsaSignature: "der"},
  {name: "user key, ECDSA", profile: "users", scope: "user", algorithm: "ECDSA", identity: "alice@example.com"},
]) {
  test(c.name, async () => {
    const keys = new PlatformKeys({emulatorUrl: env("EMULATOR_URL"), domain: "example.com", userEmail: c.identity,
      tpm: c.tpm, ecdsaSignature: c.ecdsaSignature});
    const r = await enroll({adapterUrl: env("ADAPTER_URL"), ...c}, platformOf(keys));
    const token = c.scope === "machine" ? "system" : "user";
    assert.equal(r.tokenId, token);
    assert.equal(r.attempts, 1);
    const cert = imported(keys, token);
    assert.ok(Buffer.from(r.certificate).equals(Buffer.from(cert.raw)));
    if (c.identity) assert.match(cert.subject, new RegExp(`CN=${c.identity}`));
    const key = keys.tokens[token][0];
    assert.equal(key.spkacChallenge.length, c.tpm === "1.2" ? 40 : 64, "ChromeOS's random SPKAC challenge");
  });
}

test("a device the policy refuses imports nothing and says why", async () => {
  const keys = new PlatformKeys({emulatorUrl: env("EMULATOR_URL"), domain: "example.com"});
  await assert.rejects(enroll({adapterUrl: env("ADAPTER_URL"), profile: "locked", scope: "machine", algorithm: "ECDSA"}, platformOf(keys)),
    (e) => e instanceof EnrollError && e.code === "POLICY_DENIED" && e.failedRules.some((r) => r.startsWith("minOsVersion:")));
  assert.equal(keys.tokens.system.flatMap((k) => k.certificates).length, 0);
});

test("an unknown profile is not retried", async () => {
  const keys = new PlatformKeys({emulatorUrl: env("EMULATOR_URL"), domain: "example.com"});
  await assert.rejects(enroll({adapterUrl: env("ADAPTER_URL"), profile: "nope", scope: "machine"}, platformOf(keys)),
    (e) => e instanceof EnrollError && e.code === "UNKNOWN_PROFILE" && e.status === 404);
  assert.equal(keys.challenges, 0);
});

test("RATE_LIMITED is waited out as Retry-After says, and the same request sent again", async () => {
  // Three enrollments in a row from one address, against a burst of 2: the later requests wait.
  const runs = [];
  for (let i = 0; i < 3; i++) {
    const keys = new PlatformKeys({emulatorUrl: env("EMULATOR_URL"), domain: "example.com"});
    runs.push(await enroll({adapterUrl: env("ADAPTER_LIMITED_URL"), profile: "wifi-v2", scope: "machine", algorithm: "ECDSA"}, platformOf(keys)));
    imported(keys, "system");
  }
  assert.ok(runs.reduce((n, r) => n + r.waits, 0) > 0, "some request waited for the rate limit");
  assert.ok(runs.every((r) => r.attempts === 1), "a rate-limited request is sent again, not started over");
});
