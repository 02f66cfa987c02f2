// A real OpenID Connect provider for sessiongate's tests and scripts/try-oidc.sh: panva's
// oidc-provider (OpenID-certified) with test accounts, a plain login form, and test-only
// endpoints to register clients, break ID tokens on purpose and simulate an outage.
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// CONFIG.json:
//   {"port": 0,                          // 0: any free port
//    "clients": [{"client_id", "client_secret", "redirect_uris", "post_logout_redirect_uris",
//                 "token_endpoint_auth_method"}],   // optional; client_secret_basic by default
//    "accounts": {"ann": {"sub": "sub-ann", "email": "ann@example.com", "email_verified": true,
//                         "preferred_username": "ann", "name": "Ann", "groups": ["staff"]}},
//    "signing_keys": [private JWKs]}     // optional: keep the keys of an earlier run
//
// When it listens it prints one line to stdout, `listening http://127.0.0.1:PORT`; that URL is
// the issuer. Everything else it says goes to stderr. It serves plain HTTP on 127.0.0.1 only.
//
// oidc-provider comes from target/test-node/node_modules (tests/install-deps.sh puts it
// there), or from the directory in OIDC_PROVIDER_MODULES.
//
// The provider:
// - accounts are the config's (login name -> claims; `sub` defaults to the login name); the
//   scopes give openid: sub, email: email and email_verified, profile: name and
//   preferred_username, groups: groups, all of them in the ID token itself;
// - authorization code flow only, PKCE (S256) required, `iss` on every authorization
//   response (RFC 9207), RP-initiated logout; ID tokens signed RS256 (ES256 on request) with
//   keys made at start;
// - the login page (/interaction/UID): a "Username" field (id "login") with "Sign in"
//   (id "signin") and "Deny" (id "deny"), plain forms that need no JavaScript. Signing in as
//   a known account grants every scope asked for, with no consent screen; "Deny" answers the
//   client with error=access_denied. Signing out (end_session_endpoint) asks "Yes, sign me
//   out" (id "logout-yes") or "No, stay signed in" (id "logout-no").
//
// Test endpoints (never behind the outage switch):
//   POST /_test/clients   {client metadata}        add or replace a client -> 204
//   POST /_test/accounts  {login: claims, ...}      add or replace accounts -> 204
//   POST /_test/tamper    {"mode": M | null, "claims": {...}}   -> 204; see TAMPER_MODES
//   GET  /_test/stats     {"jwks_fetches", "token_requests", "discovery_fetches"}: requests
//                          received, also while down
//   GET  /_test/keys      {"keys": [private JWKs]}: to restart with the same keys
//   POST /_test/down, /_test/up   while down, every other request is answered 503

import { createPublicKey, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// oidc-provider says its notices with console.info, which would mix them into the one line
// of stdout the test harness waits for.
console.info = console.error;
console.log = console.error;

const MODULES = process.env.OIDC_PROVIDER_MODULES
  || join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'target', 'test-node', 'node_modules');

// Imported by absolute path: the modules live under target/, not beside this script.
async function importPackage(name) {
  const dir = join(MODULES, name);
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  } catch (e) {
    console.error(`provider.mjs: ${name} is not installed in ${MODULES} (${e.code || e.message}): run tests/install-deps.sh`);
    process.exit(2);
  }
  const entry = pkg.exports?.['.']?.default || pkg.exports?.['.']?.import || pkg.main || 'index.js';
  return import(pathToFileURL(join(dir, entry)).href);
}

const { default: Provider } = await importPackage('oidc-provider');
// oidc-provider's own dependency (the same copy it uses), for re-signing tampered tokens.
const jose = await importPackage('jose');

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node tests/oidc/provider.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));

// ---------------------------------------------------------------------------------------------
// State the test endpoints change

const accounts = new Map(Object.entries(config.accounts || {}));
const clients = new Map();
const stats = { jwks_fetches: 0, token_requests: 0, discovery_fetches: 0 };
let down = false;
let tamper = { mode: null, claims: null };
// Keys published in /jwks beside the provider's own: those of rotated-key tampering.
const rotatedPublicKeys = [];
let rotatedKey = null;

const TAMPER_MODES = new Set([
  'bad-signature', // one bit of the signature flipped
  'alg-none', // header {"alg": "none"}, empty signature
  'hs256-public-key', // HS256 keyed with the provider's RSA public key (SPKI PEM)
  'hs256-client-secret', // HS256 keyed with the client's secret
  'unknown-kid', // signed by a fresh RSA key whose kid is in no JWKS
  'rotated-key', // signed by a fresh RSA key that /jwks publishes from the tamper request on
  'wrong-iss',
  'wrong-aud',
  'extra-aud-no-azp', // aud [client, "other-client"], no azp
  'wrong-azp', // azp "other-client"
  'expired', // exp 10 minutes ago, iat 20 minutes ago
  'iat-future', // iat 10 minutes ahead
  'wrong-nonce',
  'no-nonce',
  'no-sub',
  'claims', // the request's "claims" merged into the payload
]);

// ---------------------------------------------------------------------------------------------
// Keys

// The keys come from tests/oidc/test-keys.json, made once for the tests (they sign nothing
// else): generating a 2048-bit RSA key at start took over 20 s about once in 50 starts on a
// busy machine (OpenSSL's prime search), which turned into tests timing out. Each use takes
// the next unused key of the file and a fresh kid; the file holds enough for every mode a test
// uses in one run of the provider, and past them a key is generated after all.
const KEY_FILE = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'test-keys.json'), 'utf8'));
let nextRsa = 0;

function newRsaKey() {
  const spare = KEY_FILE.rsa[nextRsa++];
  const jwk = spare || generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

function newEcKey() {
  return { ...KEY_FILE.ec[0], kid: randomUUID(), alg: 'ES256', use: 'sig' };
}

function publicJwk(jwk) {
  const { d, p, q, dp, dq, qi, ...pub } = jwk;
  return pub;
}

const signingKeys = config.signing_keys || [newRsaKey(), newEcKey()];

// ---------------------------------------------------------------------------------------------
// Storage: clients come from `clients` (so they can be added and replaced while running),
// everything else the provider saves lives in one map.

const stored = new Map();
const sessionByUid = new Map();

class TestAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async find(id) {
    if (this.model === 'Client') {
      return clients.get(id);
    }
    const entry = stored.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt && entry.expiresAt <= Date.now()) {
      stored.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = sessionByUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode() {
    return undefined;
  }

  async upsert(id, payload, expiresIn) {
    stored.set(this.key(id), {
      payload,
      expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined,
    });
    if (this.model === 'Session' && payload.uid) {
      sessionByUid.set(payload.uid, id);
    }
  }

  async consume(id) {
    const entry = stored.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    stored.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of stored) {
      if (entry.payload.grantId === grantId) stored.delete(key);
    }
  }
}

function clientMetadata(body) {
  return {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    post_logout_redirect_uris: [],
    ...body,
  };
}

// ---------------------------------------------------------------------------------------------
// Pages: plain, accessible HTML (one h1, labelled fields, a language)

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(title, body) {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:3rem;max-width:30rem;color:#1a1a1a;background:#fff}
label{display:block;margin:.5rem 0 .2rem}input{font-size:1rem;padding:.3rem}button{font-size:1rem;margin:.8rem .5rem 0 0;padding:.3rem .8rem}
.error{color:#a40000}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`;
}

function loginPage(uid, clientId, error) {
  const alert = error ? `<p class="error" role="alert">${escape(error)}</p>\n` : '';
  return page('Sign in to the test provider', `<h1>Sign in to the test provider</h1>
<p>Signing in to ${escape(clientId)}.</p>
${alert}<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">Username</label>
<input id="login" name="login" type="text" autocomplete="username" autofocus required>
<button id="signin" type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${escape(uid)}/deny">
<button id="deny" type="submit">Deny</button>
</form>`);
}

// ---------------------------------------------------------------------------------------------
// The provider

function subOf(login, claims) {
  return claims.sub ?? login;
}

const SCOPE_CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'preferred_username'],
  groups: ['groups'],
};
const OIDC_SCOPES = new Set([...Object.keys(SCOPE_CLAIMS), 'offline_access']);

function providerConfig() {
  return {
    adapter: TestAdapter,
    jwks: { keys: signingKeys },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: SCOPE_CLAIMS,
    // The ID token carries every claim of the granted scopes: sessiongate reads only it.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { required: () => true },
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        // The buttons go inside oidc-provider's form (hidden xsrf field), so a client that
        // submits the form holding a button sends everything.
        logoutSource(ctx, form) {
          const buttons = `<button id="logout-yes" type="submit" name="logout" value="yes">Yes, sign me out</button>
<button id="logout-no" type="submit">No, stay signed in</button>
`;
          ctx.body = page('Sign out of the test provider', `<h1>Sign out of the test provider?</h1>
${form.replace('</form>', `${buttons}</form>`)}`);
        },
        postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<h1>Signed out</h1>\n<p>You are signed out of the test provider.</p>');
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // oidc-provider makes the account id the `sub`, so accounts are found by their sub.
    async findAccount(ctx, sub) {
      for (const [login, claims] of accounts) {
        if (subOf(login, claims) === sub) {
          return { accountId: sub, claims: async () => ({ ...claims, sub }) };
        }
      }
      return undefined;
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Test provider error', `<h1>Test provider error</h1>
${Object.entries(out).map(([k, v]) => `<p><strong>${escape(k)}</strong>: ${escape(v)}</p>`).join('\n')}`);
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 600,
      IdToken: 3600,
      Interaction: 3600,
      Session: 86400,
      Grant: 86400,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Tampering with the ID token of a token response

function b64json(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

async function sign(header, payload, key) {
  return new jose.SignJWT(payload).setProtectedHeader(header).sign(key);
}

async function tamperIdToken(idToken) {
  const [h, p, s] = idToken.split('.');
  const header = b64json(h);
  const payload = b64json(p);
  const realJwk = signingKeys.find((k) => k.kid === header.kid);
  const realKey = await jose.importJWK(realJwk, header.alg);
  const now = Math.floor(Date.now() / 1000);
  const clientId = Array.isArray(payload.aud) ? payload.aud[0] : payload.aud;

  switch (tamper.mode) {
    case 'bad-signature': {
      const sig = Buffer.from(s, 'base64url');
      sig[0] ^= 1;
      return `${h}.${p}.${sig.toString('base64url')}`;
    }
    case 'alg-none':
      return `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${p}.`;
    case 'hs256-public-key': {
      const rsa = signingKeys.find((k) => k.kty === 'RSA');
      const pem = createPublicKey({ key: publicJwk(rsa), format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      return sign({ ...header, alg: 'HS256' }, payload, new TextEncoder().encode(pem));
    }
    case 'hs256-client-secret': {
      const secret = clients.get(clientId)?.client_secret ?? '';
      return sign({ ...header, alg: 'HS256' }, payload, new TextEncoder().encode(secret));
    }
    case 'unknown-kid': {
      const jwk = newRsaKey();
      return sign({ alg: 'RS256', kid: jwk.kid }, payload, await jose.importJWK(jwk, 'RS256'));
    }
    case 'rotated-key':
      return sign({ alg: 'RS256', kid: rotatedKey.kid }, payload, await jose.importJWK(rotatedKey, 'RS256'));
    case 'wrong-iss':
      return sign(header, { ...payload, iss: `${payload.iss}/other-issuer` }, realKey);
    case 'wrong-aud':
      return sign(header, { ...payload, aud: 'other-client' }, realKey);
    case 'extra-aud-no-azp': {
      const { azp, ...rest } = payload;
      return sign(header, { ...rest, aud: [clientId, 'other-client'] }, realKey);
    }
    case 'wrong-azp':
      return sign(header, { ...payload, azp: 'other-client' }, realKey);
    case 'expired':
      return sign(header, { ...payload, iat: now - 1200, exp: now - 600 }, realKey);
    case 'iat-future':
      return sign(header, { ...payload, iat: now + 600, exp: now + 600 + (payload.exp - payload.iat) }, realKey);
    case 'wrong-nonce':
      return sign(header, { ...payload, nonce: 'not-the-nonce-sent' }, realKey);
    case 'no-nonce': {
      const { nonce, ...rest } = payload;
      return sign(header, rest, realKey);
    }
    case 'no-sub': {
      const { sub, ...rest } = payload;
      return sign(header, rest, realKey);
    }
    case 'claims':
      return sign(header, { ...payload, ...tamper.claims }, realKey);
    default:
      throw new Error(`unknown tamper mode ${tamper.mode}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Interactions: the login page

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

// A grant of every OpenID scope the client asked for: signing in is consenting here.
async function grantFor(provider, details) {
  const { params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session?.accountId, clientId: params.client_id });
  const scopes = String(params.scope || '').split(' ').filter((s) => OIDC_SCOPES.has(s));
  grant.addOIDCScope(scopes.join(' '));
  return grant.save();
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, 'text/html; charset=utf-8', page('Test provider error', '<h1>Test provider error</h1>\n<p>This sign-in is not the one in progress.</p>'));
    return;
  }
  const clientId = details.params.client_id;
  if (req.method === 'GET' && !action) {
    if (details.prompt.name === 'consent') {
      // Already signed in here: a client asking again gets its scopes without a question.
      const grantId = await grantFor(provider, details);
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    send(res, 200, 'text/html; charset=utf-8', loginPage(uid, clientId));
    return;
  }
  if (req.method === 'POST' && action === 'deny') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'The user refused',
    }, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const login = new URLSearchParams(await readBody(req)).get('login')?.trim() ?? '';
    if (!accounts.has(login)) {
      send(res, 200, 'text/html; charset=utf-8', loginPage(uid, clientId, `No account named "${login}".`));
      return;
    }
    const accountId = subOf(login, accounts.get(login));
    const grantId = await grantFor(provider, { ...details, session: { accountId } });
    await provider.interactionFinished(req, res, {
      login: { accountId },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    return;
  }
  send(res, 405, 'text/plain', 'method not allowed\n');
}

// ---------------------------------------------------------------------------------------------
// Test endpoints

async function testEndpoint(provider, req, res, path) {
  const json = async () => {
    const text = await readBody(req);
    return text ? JSON.parse(text) : {};
  };
  if (req.method === 'POST' && path === '/_test/clients') {
    const metadata = clientMetadata(await json());
    try {
      await provider.Client.validate(metadata);
    } catch (e) {
      send(res, 400, 'text/plain', `invalid client metadata: ${e.error_description || e.message}\n`);
      return;
    }
    clients.set(metadata.client_id, metadata);
    res.writeHead(204).end();
  } else if (req.method === 'POST' && path === '/_test/accounts') {
    for (const [login, claims] of Object.entries(await json())) accounts.set(login, claims);
    res.writeHead(204).end();
  } else if (req.method === 'POST' && path === '/_test/tamper') {
    const body = await json();
    const mode = body.mode ?? null;
    if (mode !== null && !TAMPER_MODES.has(mode)) {
      send(res, 400, 'text/plain', `unknown tamper mode ${mode}\n`);
      return;
    }
    if (mode === 'rotated-key') {
      rotatedKey = newRsaKey();
      rotatedPublicKeys.push(publicJwk(rotatedKey));
    }
    tamper = { mode, claims: body.claims ?? {} };
    res.writeHead(204).end();
  } else if (req.method === 'GET' && path === '/_test/stats') {
    send(res, 200, 'application/json', JSON.stringify(stats));
  } else if (req.method === 'GET' && path === '/_test/keys') {
    send(res, 200, 'application/json', JSON.stringify({ keys: signingKeys }));
  } else if (req.method === 'POST' && (path === '/_test/down' || path === '/_test/up')) {
    down = path === '/_test/down';
    res.writeHead(204).end();
  } else {
    send(res, 404, 'text/plain', 'no such test endpoint\n');
  }
}

// ---------------------------------------------------------------------------------------------
// The server

let provider;
let providerCallback;

const server = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  try {
    if (!provider) {
      // Listening on a fixed port, but not set up yet.
      send(res, 503, 'text/plain', 'the test provider is starting\n');
      return;
    }
    if (path.startsWith('/_test/')) {
      await testEndpoint(provider, req, res, path);
      return;
    }
    if (path === '/jwks') stats.jwks_fetches += 1;
    if (path === '/token') stats.token_requests += 1;
    if (path === '/.well-known/openid-configuration') stats.discovery_fetches += 1;
    if (down) {
      send(res, 503, 'text/plain', 'the test provider is down\n');
      return;
    }
    const m = path.match(/^\/interaction\/([^/]+)(?:\/(login|deny))?$/);
    if (m) {
      await interaction(provider, req, res, m[1], m[2]);
      return;
    }
    providerCallback(req, res);
  } catch (e) {
    console.error(`provider.mjs: ${req.method} ${path}: ${e.stack || e}`);
    if (!res.headersSent) {
      send(res, e.statusCode || 500, 'text/plain', `${e.error || 'error'}: ${e.error_description || e.message}\n`);
    } else {
      res.end();
    }
  }
});

server.on('error', (e) => {
  console.error(`provider.mjs: ${e.message}`);
  process.exit(1);
});

server.listen(config.port || 0, '127.0.0.1', async () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const ready = new Provider(issuer, providerConfig());
  // The token endpoint's ID token, broken as asked, and the rotated keys in the JWKS.
  ready.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.status === 200 && tamper.mode && ctx.body?.id_token) {
      ctx.body = { ...ctx.body, id_token: await tamperIdToken(ctx.body.id_token) };
    }
    if (ctx.path === '/jwks' && ctx.status === 200 && rotatedPublicKeys.length) {
      ctx.body = { keys: [...ctx.body.keys, ...rotatedPublicKeys] };
    }
  });
  ready.on('server_error', (ctx, e) => console.error(`provider.mjs: server_error: ${e.stack || e}`));
  for (const client of config.clients || []) {
    const metadata = clientMetadata(client);
    await ready.Client.validate(metadata);
    clients.set(metadata.client_id, metadata);
  }
  providerCallback = ready.callback();
  provider = ready;
  process.stdout.write(`listening ${issuer}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
