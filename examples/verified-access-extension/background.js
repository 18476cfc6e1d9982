// The extension's service worker: enrolls when installed, at browser start and when the last
// enrollment is older than renewAfterDays, with the settings an administrator pushes as managed
// storage (managed_schema.json).
import {enroll, EnrollError} from "./enroll.js";

const RENEW_ALARM = "certprov-renew";

// promisify calls a callback-style Chrome API and turns chrome.runtime.lastError into a rejection.
function promisify(fn, ...args) {
  return new Promise((resolve, reject) => {
    fn(...args, (result) => {
      const err = chrome.runtime.lastError;
      if (err) reject(new Error(err.message));
      else resolve(result);
    });
  });
}

const platform = {
  challengeKey: (options) => promisify(chrome.enterprise.platformKeys.challengeKey, options),
  importCertificate: (tokenId, der) => promisify(chrome.enterprise.platformKeys.importCertificate, tokenId, der),
  fetch: (...args) => fetch(...args),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  log: (message) => console.log("certprov:", message),
};

async function settings() {
  const s = await chrome.storage.managed.get(null);
  if (!s.adapterUrl || !s.profile) {
    throw new Error("not configured: the administrator must set adapterUrl and profile (managed storage)");
  }
  const out = {adapterUrl: s.adapterUrl, profile: s.profile, scope: s.scope || "machine", algorithm: s.keyAlgorithm || "ECDSA",
    renewAfterDays: s.renewAfterDays || 20};
  if (out.scope === "user") {
    out.identity = (await promisify(chrome.identity.getProfileUserInfo, {accountStatus: "ANY"})).email;
  }
  return out;
}

async function run(force) {
  try {
    const s = await settings();
    const {enrolledAt} = await chrome.storage.local.get("enrolledAt");
    if (!force && enrolledAt && Date.now() - enrolledAt < s.renewAfterDays * 86400e3) return;
    const r = await enroll(s, platform);
    await chrome.storage.local.set({enrolledAt: Date.now(), lastError: null, tokenId: r.tokenId});
  } catch (e) {
    const lastError = e instanceof EnrollError ? {code: e.code, message: e.message, failedRules: e.failedRules} : {message: String(e)};
    console.error("certprov: enrollment failed:", lastError);
    await chrome.storage.local.set({lastError});
  }
}

chrome.runtime.onInstalled.addListener(() => run(true));
chrome.runtime.onStartup.addListener(() => run(false));
chrome.alarms.create(RENEW_ALARM, {periodInMinutes: 12 * 60});
chrome.alarms.onAlarm.addListener((a) => a.name === RENEW_ALARM && run(false));
chrome.storage.onChanged.addListener((_, area) => area === "managed" && run(true));
