// sessiongate's passkey script, served as {prefix}/passkey.js (the pages allow script only
// from their own origin: no inline script). It drives two forms:
// - data-passkey="sign-in" (the sign-in page): "Sign in with a passkey", and the browser's
//   autofill offering saved passkeys in the username field (conditional mediation);
// - data-passkey="add" (the account page): registering a new passkey.
// Each form names in data-options the URL that hands out a challenge. The script posts the
// form's fields there, lets the browser's passkey answer (navigator.credentials), puts the
// answer in the form's "credential" field as JSON and submits the form as an ordinary post:
// the server's answer is a page, as for any form. Without JavaScript, the forms stay hidden
// and the password form works as before.
(() => {
  'use strict';
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  const toB64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const fromB64 = (s) => Uint8Array.from(
    atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));

  // Asks the form's data-options URL for a challenge: { ceremony, publicKey }.
  async function challenge(form) {
    const body = new URLSearchParams(new FormData(form));
    body.delete('credential');
    const res = await fetch(form.dataset.options, { method: 'POST', body, credentials: 'same-origin' });
    const text = await res.text();
    if (!res.ok) throw new Error(text);
    return JSON.parse(text);
  }

  function show(form, message) {
    const p = form.querySelector('.passkey-error');
    p.textContent = message;
    p.hidden = false;
  }

  function send(form, ceremony, credential) {
    form.elements.ceremony.value = ceremony;
    form.elements.credential.value = JSON.stringify(credential);
    if (form.elements.password) form.elements.password.value = '';
    form.submit();
  }

  function assertion(cred) {
    const r = cred.response;
    return {
      id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
      response: {
        authenticatorData: toB64(r.authenticatorData), clientDataJSON: toB64(r.clientDataJSON),
        signature: toB64(r.signature), userHandle: r.userHandle ? toB64(r.userHandle) : null,
      },
      extensions: cred.getClientExtensionResults(),
    };
  }

  function registration(cred) {
    const r = cred.response;
    return {
      id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
      response: {
        attestationObject: toB64(r.attestationObject), clientDataJSON: toB64(r.clientDataJSON),
        transports: r.getTransports ? r.getTransports() : [],
      },
      extensions: cred.getClientExtensionResults(),
    };
  }

  // One sign-in: a fresh challenge, then the browser's passkey (`mediation` 'conditional'
  // waits for the person to pick a passkey in the username field's autofill).
  async function signIn(form, mediation, signal) {
    const { ceremony, publicKey } = await challenge(form);
    publicKey.challenge = fromB64(publicKey.challenge);
    (publicKey.allowCredentials || []).forEach((c) => { c.id = fromB64(c.id); });
    const cred = await navigator.credentials.get({ publicKey, mediation, signal });
    if (cred) send(form, ceremony, assertion(cred));
  }

  async function add(form) {
    const { ceremony, publicKey } = await challenge(form);
    publicKey.challenge = fromB64(publicKey.challenge);
    publicKey.user.id = fromB64(publicKey.user.id);
    (publicKey.excludeCredentials || []).forEach((c) => { c.id = fromB64(c.id); });
    const cred = await navigator.credentials.create({ publicKey });
    send(form, ceremony, registration(cred));
  }

  // The autofill's challenge lasts 2 minutes on the server: it is renewed before then.
  let autofill = null;
  async function offerAutofill(form) {
    if (!PublicKeyCredential.isConditionalMediationAvailable) return;
    if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
    autofill = new AbortController();
    const mine = autofill;
    const renew = setTimeout(() => { mine.abort(); offerAutofill(form); }, 100000);
    try {
      await signIn(form, 'conditional', mine.signal);
    } catch (e) {
      if (!mine.signal.aborted) show(form, e.message);
    } finally {
      clearTimeout(renew);
    }
  }

  for (const form of document.querySelectorAll('form[data-passkey]')) {
    form.hidden = false;
    const kind = form.dataset.passkey;
    form.addEventListener('submit', (event) => {
      if (form.elements.credential.value) return;
      event.preventDefault();
      if (autofill) autofill.abort();
      const done = kind === 'add' ? add(form) : signIn(form, 'optional');
      done.catch((e) => show(form, e.name === 'NotAllowedError'
        ? 'The passkey request was cancelled or timed out.' : e.message));
    });
    if (kind === 'sign-in') offerAutofill(form);
  }
})();
