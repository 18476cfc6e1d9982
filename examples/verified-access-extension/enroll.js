// The enrollment flow of the sample extension, as a module without Chrome globals so that it runs
// in the extension's service worker (background.js) and under Node (test/enroll.test.mjs) alike.
//
// 1. POST {adapter}/v1/verifiedaccess/challenge {profile}       -> {challenge, apiVersion, expiresInSeconds}
// 2. enterprise.platformKeys.challengeKey({scope, challenge, registerKey: {algorithm}})
//                                                                -> the challenge response (Chrome registers a new key)
// 3. POST {adapter}/v1/verifiedaccess/enroll {profile, scope, challengeResponse, identity?}
//                                                                -> {certificate: PEM leaf, chain: [PEM intermediates]}
// 4. enterprise.platformKeys.importCertificate(token, leaf DER)  (the key's token: system or user)
//
// The error codes the adapter answers with (docs/verified-access-api.md) decide what happens next.

// RETRY_SAME are refusals that consumed nothing: send the same request again after Retry-After.
const RETRY_SAME = new Set(["RATE_LIMITED", "BUSY"]);
// RETRY_ENROLL are failures of Google or the adapter that left the answer unused: send the same
// answer again, while the challenge lives.
const RETRY_ENROLL = new Set(["UNAVAILABLE"]);
// RESTART are refusals of this answer: start over with a new challenge (and so a new key).
const RESTART = new Set(["BAD_CHALLENGE", "CHALLENGE_EXPIRED", "CHALLENGE_REPLAYED"]);
// Everything else (BAD_REQUEST, UNKNOWN_PROFILE, POLICY_DENIED, CA_FAILURE, ADAPTER_MISCONFIGURED)
// needs a person: the device, the extension's settings or the adapter must change.

const API = "/v1/verifiedaccess";

/** An enrollment the adapter refused, with its code, message and failed policy rules. */
export class EnrollError extends Error {
  constructor(code, message, failedRules = [], status = 0) {
    super(`${code}: ${message}${failedRules.length ? " (" + failedRules.join("; ") + ")" : ""}`);
    this.name = "EnrollError";
    this.code = code;
    this.failedRules = failedRules;
    this.status = status;
  }
}

/**
 * Enrolls one certificate.
 * @param {object} settings  adapterUrl, profile, scope ("machine" | "user"), algorithm ("RSA" | "ECDSA"),
 *                           identity (the user's e-mail, user scope only), maxAttempts (default 4)
 * @param {object} platform  challengeKey(options) -> Promise<ArrayBuffer>, importCertificate(tokenId, ArrayBuffer),
 *                           fetch, sleep(ms), log(message) (optional)
 * @returns {Promise<{certificate: Uint8Array, chain: Uint8Array[], tokenId: string, attempts: number, waits: number}>}
 */
export async function enroll(settings, platform) {
  const scope = settings.scope || "machine";
  if (scope !== "machine" && scope !== "user") throw new Error(`scope ${scope}: want machine or user`);
  if (scope === "user" && !settings.identity) throw new Error("the user scope needs the user's e-mail (chrome.identity)");
  const base = String(settings.adapterUrl || "").replace(/\/+$/, "") + API;
  const log = platform.log || (() => {});
  const state = {waits: 0};
  const maxAttempts = settings.maxAttempts || 4;

  for (let attempt = 1; ; attempt++) {
    const {challenge, expiresInSeconds} = await post(platform, state, base + "/challenge", {profile: settings.profile});
    const response = await platform.challengeKey({
      scope: scope === "machine" ? "MACHINE" : "USER",
      challenge: fromBase64(challenge).buffer,
      registerKey: {algorithm: settings.algorithm || "ECDSA"},
    });
    const body = {profile: settings.profile, scope, challengeResponse: toBase64(new Uint8Array(response))};
    if (scope === "user") body.identity = settings.identity;
    const deadline = Date.now() + 1000 * (expiresInSeconds || 60);
    try {
      const {certificate, chain} = await postEnroll(platform, state, base + "/enroll", body, deadline);
      const leaf = fromPEM(certificate)[0];
      const tokenId = scope === "machine" ? "system" : "user";
      await platform.importCertificate(tokenId, leaf.buffer);
      // Intermediates cannot go into a token without their keys: the Admin console distributes
      // them (README.md). They are handed back for the caller to keep or show.
      const intermediates = (chain || []).flatMap(fromPEM);
      log(`enrolled: ${leaf.length}-byte certificate in the ${tokenId} token, ${intermediates.length} intermediate(s)`);
      return {certificate: leaf, chain: intermediates, tokenId, attempts: attempt, waits: state.waits};
    } catch (e) {
      if (e instanceof EnrollError && RESTART.has(e.code) && attempt < maxAttempts) {
        log(`${e.code}: starting over with a new challenge`);
        continue;
      }
      throw e;
    }
  }
}

// postEnroll sends the answer, and sends it again after UNAVAILABLE while the challenge lives.
async function postEnroll(platform, state, url, body, deadline) {
  for (let backoff = 1000; ; backoff *= 2) {
    try {
      return await post(platform, state, url, body);
    } catch (e) {
      if (!(e instanceof EnrollError) || !RETRY_ENROLL.has(e.code) || Date.now() + backoff > deadline) throw e;
      state.waits++;
      await platform.sleep(Math.max(backoff, e.retryAfter || 0));
    }
  }
}

// post sends a JSON request and returns the answer, waiting as told on RATE_LIMITED and BUSY.
async function post(platform, state, url, body) {
  for (let tries = 1; ; tries++) {
    const r = await platform.fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
    });
    let j = {};
    try {
      j = await r.json();
    } catch {
      // not the adapter's JSON: a proxy's error page
    }
    if (r.ok) return j;
    const err = j && j.error ? j.error : {code: "HTTP_" + r.status, message: r.statusText || "no answer from the adapter"};
    const e = new EnrollError(err.code, err.message || "", err.failedRules || [], r.status);
    e.retryAfter = 1000 * (Number(r.headers.get("Retry-After")) || 0);
    if (RETRY_SAME.has(e.code) && tries < 6) {
      state.waits++;
      await platform.sleep(e.retryAfter || 1000);
      continue;
    }
    throw e;
  }
}

export function toBase64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function fromBase64(s) {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

/** The DER of every certificate in a PEM text. */
export function fromPEM(pem) {
  const out = [];
  const re = /-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/g;
  for (let m; (m = re.exec(pem)); ) out.push(fromBase64(m[1].replace(/\s+/g, "")));
  if (out.length === 0) throw new Error("the adapter's answer holds no PEM certificate");
  return out;
}
