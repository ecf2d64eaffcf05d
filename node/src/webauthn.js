// Palisade: the browser half of the WebAuthn ceremonies on the MFA prompt and in the portal.
// Served by the edge itself; no external assets. The edge keeps the ceremony state in a sealed
// cookie and checks everything; this script only moves bytes between it and the authenticator.
(function () {
  "use strict";
  var csrf = document.body.dataset.csrf || "";
  var status = document.getElementById("status");

  function say(text, bad) {
    if (!status) return;
    status.textContent = text;
    status.className = bad ? "error" : "muted";
  }
  // What the browser's errors mean to the user, and what to do next. The browser reports a
  // cancelled prompt, a timeout and a key that holds no credential for this account alike
  // (NotAllowedError), so that message names all three.
  function explain(e, registering) {
    switch (e && e.name) {
      case "NotAllowedError":
        return registering
          ? "Nothing was added: the request was cancelled or timed out. Try again, and touch or unlock your authenticator when your browser asks."
          : "Not verified: the request was cancelled or timed out, or this key is not registered to your account. Try again with a key you added in your account settings, or use another method.";
      case "InvalidStateError":
        return registering
          ? "This authenticator is already registered to your account: it is in your list."
          : "This authenticator cannot be used here. Use another one, or another method.";
      case "NotSupportedError":
        return "This browser or device has no authenticator of that kind. Use a security key or an authenticator app instead.";
      case "SecurityError":
        return "Your browser refused to use an authenticator on this address. Open the page through its https:// address and try again.";
      case "AbortError":
        return "Cancelled.";
      default:
        return (e && e.message) || String(e);
    }
  }
  var cancelButton = document.getElementById("cancel-webauthn");
  var pending = null;
  // A way out while the browser waits for an authenticator (there may be none at all).
  function waiting(on) {
    if (pending && !on) pending = null;
    if (on) pending = window.AbortController ? new AbortController() : null;
    if (cancelButton) cancelButton.hidden = !on;
    return pending ? pending.signal : undefined;
  }
  if (cancelButton) {
    cancelButton.addEventListener("click", function () {
      if (pending) pending.abort();
    });
  }
  function dec(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function enc(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-palisade-csrf": csrf },
      body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) {
          var err = new Error(j.error || "refused (" + r.status + ")");
          err.name = "PalisadeError";
          throw err;
        }
        return j;
      });
    });
  }

  function authenticate(rd) {
    say("Waiting for your security key or device...");
    return post("/.palisade/mfa/webauthn/begin", { rd: rd })
      .then(function (opts) {
        if (opts.redirect) return opts;
        var pk = opts.publicKey;
        pk.challenge = dec(pk.challenge);
        (pk.allowCredentials || []).forEach(function (c) { c.id = dec(c.id); });
        return navigator.credentials.get({ publicKey: pk, signal: waiting(true) }).then(function (a) {
          waiting(false);
          return post("/.palisade/mfa/webauthn/finish", {
            credential: {
              id: a.id,
              rawId: enc(a.rawId),
              type: a.type,
              response: {
                authenticatorData: enc(a.response.authenticatorData),
                clientDataJSON: enc(a.response.clientDataJSON),
                signature: enc(a.response.signature),
                userHandle: a.response.userHandle ? enc(a.response.userHandle) : null,
              },
              extensions: a.getClientExtensionResults ? a.getClientExtensionResults() : {},
            },
          });
        });
      })
      .then(function (r) {
        say("Verified.");
        window.location.assign(r.redirect || "/");
      })
      .catch(function (e) { waiting(false); say(explain(e, false), true); });
  }

  function register(kind) {
    var nameInput = document.getElementById(kind === "platform" ? "platform-name" : "key-name");
    var codeInput = document.getElementById("webauthn-code");
    var section = document.querySelector(".webauthn-add");
    var name = nameInput ? nameInput.value : "";
    say("Follow your browser's prompt...");
    return post("/.palisade/portal/webauthn/begin", {
      kind: kind,
      name: name,
      enrollment_code: codeInput ? codeInput.value : "",
      rd: (section && section.dataset.rd) || "",
    })
      .then(function (opts) {
        var pk = opts.publicKey;
        pk.challenge = dec(pk.challenge);
        pk.user.id = dec(pk.user.id);
        (pk.excludeCredentials || []).forEach(function (c) { c.id = dec(c.id); });
        return navigator.credentials.create({ publicKey: pk, signal: waiting(true) });
      })
      .then(function (c) {
        waiting(false);
        return post("/.palisade/portal/webauthn/finish", {
          attachment: c.authenticatorAttachment || "",
          credential: {
            id: c.id,
            rawId: enc(c.rawId),
            type: c.type,
            response: {
              attestationObject: enc(c.response.attestationObject),
              clientDataJSON: enc(c.response.clientDataJSON),
              transports: c.response.getTransports ? c.response.getTransports() : [],
            },
            extensions: c.getClientExtensionResults ? c.getClientExtensionResults() : {},
          },
        });
      })
      .then(function (r) { window.location.assign(r.redirect || "/.palisade/portal"); })
      .catch(function (e) { waiting(false); say(explain(e, true), true); });
  }

  function on(id, fn) {
    var el = document.getElementById(id);
    if (el) el.addEventListener("click", function () { fn(el); });
  }
  on("webauthn-auth", function (el) { authenticate(el.dataset.rd || "/"); });
  on("add-security-key", function () { register("security_key"); });
  on("add-platform", function () { register("platform"); });
})();
