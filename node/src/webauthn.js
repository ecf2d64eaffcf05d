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
        if (!r.ok) throw new Error(j.error || "refused (" + r.status + ")");
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
        return navigator.credentials.get({ publicKey: pk }).then(function (a) {
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
      .catch(function (e) { say(e.message || String(e), true); });
  }

  function register(kind) {
    var nameInput = document.getElementById("webauthn-name");
    var codeInput = document.getElementById("webauthn-code");
    var name = nameInput ? nameInput.value : "";
    if (kind === "platform" && (!name || name === "Security key")) name = "This device";
    say("Follow your browser's prompt...");
    return post("/.palisade/portal/webauthn/begin", {
      kind: kind,
      name: name,
      enrollment_code: codeInput ? codeInput.value : "",
    })
      .then(function (opts) {
        var pk = opts.publicKey;
        pk.challenge = dec(pk.challenge);
        pk.user.id = dec(pk.user.id);
        (pk.excludeCredentials || []).forEach(function (c) { c.id = dec(c.id); });
        return navigator.credentials.create({ publicKey: pk });
      })
      .then(function (c) {
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
      .catch(function (e) { say(e.message || String(e), true); });
  }

  function on(id, fn) {
    var el = document.getElementById(id);
    if (el) el.addEventListener("click", function () { fn(el); });
  }
  on("webauthn-auth", function (el) { authenticate(el.dataset.rd || "/"); });
  on("add-security-key", function () { register("security_key"); });
  on("add-platform", function () { register("platform"); });
})();
