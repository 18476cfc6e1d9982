// A stand-in for chrome.enterprise.platformKeys on ChromeOS, for testing the extension under Node:
// challengeKey with registerKey answers as ChromeOS does, with WebCrypto —
//
//   SignedData{ data = ChallengeResponse{ challenge = 1: the SignedData handed in,
//                                        nonce = 2: random bytes,
//                                        encrypted_key_info = 3: EncryptedData(KeyInfo) },
//               signature = 2: by the registered key }
//   KeyInfo{ key_type = 1: EMK or EUK, domain = 2, device_id = 3,
//            signed_public_key_and_challenge = 5: SPKAC }
//
// with the SPKAC as CryptoUtilityImpl::CreateSPKACInternal builds it: the challenge is the hex of
// 32 random bytes (TPM 2.0) or 20 (TPM 1.2), the algorithm has NULL parameters for RSA and ECDSA
// alike, and an ECDSA signature is WebCrypto's raw r||s or, with ecdsaSignature "der", DER. The
// KeyInfo is encrypted, as ChromeOS encrypts it to Google, to the key the emulator publishes at
// /emulator/v1/verifiedaccess/service-key (RSA-OAEP wrapping an AES-256-CBC key, HMAC-SHA512).
//
// importCertificate keeps a certificate only for a key registered in that token, as Chrome does.
import {webcrypto, X509Certificate} from "node:crypto";

const subtle = webcrypto.subtle;

// --- DER ---------------------------------------------------------------------------------------

function derLength(n) {
  if (n < 0x80) return [n];
  const out = [];
  for (; n > 0; n >>= 8) out.unshift(n & 0xff);
  return [0x80 | out.length, ...out];
}

function der(tag, ...parts) {
  const body = concat(...parts);
  return concat(Uint8Array.of(tag, ...derLength(body.length)), body);
}

const SEQUENCE = 0x30, BIT_STRING = 0x03, NULL = 0x05, OID = 0x06, IA5STRING = 0x16, INTEGER = 0x02;
const OID_SHA256_WITH_RSA = Uint8Array.of(0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b); // 1.2.840.113549.1.1.11
const OID_ECDSA_WITH_SHA256 = Uint8Array.of(0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02); // 1.2.840.10045.4.3.2

// rawToDER re-encodes WebCrypto's r||s as SEQUENCE{INTEGER r, INTEGER s}.
function rawToDER(raw) {
  const int = (b) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    b = b.slice(i);
    return der(INTEGER, b[0] & 0x80 ? concat(Uint8Array.of(0), b) : b);
  };
  const half = raw.length / 2;
  return der(SEQUENCE, int(raw.slice(0, half)), int(raw.slice(half)));
}

// --- protobuf ------------------------------------------------------------------------------------

function varint(n) {
  const out = [];
  for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return Uint8Array.from(out);
}

const bytesField = (num, value) => concat(varint((num << 3) | 2), varint(value.length), value);
const varintField = (num, value) => concat(varint(num << 3), varint(value));

// --- the key store -------------------------------------------------------------------------------

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const random = (n) => webcrypto.getRandomValues(new Uint8Array(n));
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

export class PlatformKeys {
  /**
   * @param {object} o  emulatorUrl (for the service key), domain (what the device is enrolled in),
   *                    userEmail (the signed-in user), tpm ("2.0" | "1.2"), ecdsaSignature ("raw" | "der")
   */
  constructor(o) {
    this.o = {tpm: "2.0", ecdsaSignature: "raw", ...o};
    this.tokens = {system: [], user: []}; // registered keys: {spki, privateKey, certificates: []}
    this.challenges = 0;
  }

  async serviceKey() {
    if (!this.service) {
      const r = await fetch(this.o.emulatorUrl.replace(/\/+$/, "") + "/emulator/v1/verifiedaccess/service-key");
      if (!r.ok) throw new Error(`service key: HTTP ${r.status}`);
      const {publicKey, keyId} = await r.json();
      this.service = {
        key: await subtle.importKey("spki", Buffer.from(publicKey, "base64"), {name: "RSA-OAEP", hash: "SHA-1"}, false, ["encrypt"]),
        keyId: new TextEncoder().encode(keyId),
      };
    }
    return this.service;
  }

  async sign(alg, privateKey, data) {
    if (alg === "RSA") return new Uint8Array(await subtle.sign("RSASSA-PKCS1-v1_5", privateKey, data));
    const raw = new Uint8Array(await subtle.sign({name: "ECDSA", hash: "SHA-256"}, privateKey, data));
    return this.o.ecdsaSignature === "der" ? rawToDER(raw) : raw;
  }

  // challengeKey(options, callback): the API's shape; options.registerKey is required here.
  challengeKey(options, callback) {
    this.answer(options).then(callback, (e) => {
      chromeRuntime.lastError = {message: e.message};
      try {
        callback(undefined);
      } finally {
        chromeRuntime.lastError = undefined;
      }
    });
  }

  async answer({scope, challenge, registerKey}) {
    if (scope !== "MACHINE" && scope !== "USER") throw new Error(`invalid scope ${scope}`);
    if (!registerKey || (registerKey.algorithm !== "RSA" && registerKey.algorithm !== "ECDSA")) {
      throw new Error("registerKey.algorithm must be RSA or ECDSA");
    }
    this.challenges++;
    const alg = registerKey.algorithm;
    const params = alg === "RSA"
      ? {name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: Uint8Array.of(1, 0, 1), hash: "SHA-256"}
      : {name: "ECDSA", namedCurve: "P-256"};
    const pair = await subtle.generateKey(params, false, ["sign", "verify"]);
    const spki = new Uint8Array(await subtle.exportKey("spki", pair.publicKey));

    // SPKAC: SEQUENCE{ SEQUENCE{ spki, IA5String challenge }, AlgorithmIdentifier{oid, NULL}, BIT STRING }
    const spkacChallenge = hex(random(this.o.tpm === "1.2" ? 20 : 32));
    const pkac = der(SEQUENCE, spki, der(IA5STRING, new TextEncoder().encode(spkacChallenge)));
    const algId = der(SEQUENCE, der(OID, alg === "RSA" ? OID_SHA256_WITH_RSA : OID_ECDSA_WITH_SHA256), der(NULL));
    const spkac = der(SEQUENCE, pkac, algId, der(BIT_STRING, Uint8Array.of(0), await this.sign(alg, pair.privateKey, pkac)));

    const identity = scope === "MACHINE" ? this.o.domain : this.o.userEmail;
    const keyInfo = concat(varintField(1, scope === "MACHINE" ? 1 : 2), bytesField(2, new TextEncoder().encode(identity)),
      bytesField(3, random(16)), bytesField(5, spkac));

    // EncryptedData{wrapped_key = 2, iv = 3, mac = 4, encrypted_data = 5, wrapping_key_id = 6}
    const service = await this.serviceKey();
    const aesRaw = random(32);
    const iv = random(16);
    const aes = await subtle.importKey("raw", aesRaw, "AES-CBC", false, ["encrypt"]);
    const ciphertext = new Uint8Array(await subtle.encrypt({name: "AES-CBC", iv}, aes, keyInfo));
    const hmac = await subtle.importKey("raw", aesRaw, {name: "HMAC", hash: "SHA-512"}, false, ["sign"]);
    const mac = new Uint8Array(await subtle.sign("HMAC", hmac, concat(iv, ciphertext)));
    const wrapped = new Uint8Array(await subtle.encrypt({name: "RSA-OAEP"}, service.key, aesRaw));
    const encrypted = concat(bytesField(2, wrapped), bytesField(3, iv), bytesField(4, mac), bytesField(5, ciphertext),
      bytesField(6, service.keyId));

    const data = concat(bytesField(1, new Uint8Array(challenge)), bytesField(2, random(32)), bytesField(3, encrypted));
    const signature = await this.sign(alg, pair.privateKey, data);
    this.tokens[scope === "MACHINE" ? "system" : "user"].push({spki, alg, spkacChallenge, certificates: []});
    return concat(bytesField(1, data), bytesField(2, signature)).buffer;
  }

  // importCertificate(tokenId, certificate, callback): refused unless a key of the token matches.
  importCertificate(tokenId, certificate, callback) {
    try {
      const cert = new X509Certificate(Buffer.from(certificate));
      const spki = new Uint8Array(cert.publicKey.export({type: "spki", format: "der"}));
      const key = (this.tokens[tokenId] || []).find((k) => equal(k.spki, spki));
      if (!key) throw new Error(`Certificate is not for a key of the ${tokenId} token.`);
      key.certificates.push(cert);
      callback();
    } catch (e) {
      chromeRuntime.lastError = {message: e.message};
      try {
        callback();
      } finally {
        chromeRuntime.lastError = undefined;
      }
    }
  }
}

// chromeRuntime plays chrome.runtime for lastError, which the callbacks read.
export const chromeRuntime = {lastError: undefined};
