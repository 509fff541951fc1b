// A real OpenID Connect provider for Kirby's tests and development: panva's certified
// oidc-provider on 127.0.0.1, with the users and clients of accounts.json and a minimal login
// page of its own (user name + password, checked). Started by `deploy/services up oidc`.
//
//   node server.js   (KIRBY_OIDC_PORT, default 9400; issuer http://127.0.0.1:PORT)
//
// Every user has a stable subject (`sub`) and a `groups` claim (scope `groups`), put in the ID
// token itself, as Okta, Azure AD and Keycloak do when configured to. Keys, sessions and grants
// live in memory: a restart makes a new signing key (a key rotation) and forgets every session.
// The test client is a loopback client (RFC 8252): its redirect URIs match on any port of
// 127.0.0.1, because the tests run `kirby web` on free ports.
import { readFileSync } from 'node:fs';
import { generateKeyPairSync, randomUUID, timingSafeEqual } from 'node:crypto';
import { Provider } from 'oidc-provider';

const port = Number(process.env.KIRBY_OIDC_PORT || 9400);
const issuer = `http://127.0.0.1:${port}`;
const { users, clients } = JSON.parse(readFileSync(new URL('./accounts.json', import.meta.url)));
const bySubject = new Map(users.map((user) => [user.sub, user]));
const byName = new Map(users.map((user) => [user.username, user]));

// A fresh signing key at each start, so a restart is a key rotation.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>body{font-family:sans-serif;background:#eef1f5;margin:0}main{max-width:22rem;margin:4rem auto;background:#fff;
padding:1.5rem 2rem;border-radius:6px;box-shadow:0 1px 4px #0003}h1{font-size:1.3rem}label{display:block;margin:.8rem 0 .2rem}
input{width:100%;padding:.4rem;box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem;background:#2c5d9c;color:#fff;
border:0;border-radius:4px}.error{color:#a00}</style></head><body><main>${body}</main></body></html>`;

function passwordMatches(user, password) {
  const expected = Buffer.from(user.password);
  const given = Buffer.from(String(password || ''));
  return expected.length === given.length && timingSafeEqual(expected, given);
}

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  async findAccount(ctx, sub) {
    const user = bySubject.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          preferred_username: user.username,
          name: user.name,
          email: user.email,
          email_verified: true,
          groups: user.groups,
        };
      },
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  conformIdTokenClaims: false, // the scopes' claims go into the ID token too
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource(ctx, form) {
        ctx.body = page('Sign out', `<h1>Sign out of the test provider?</h1>${form}
<button id="logout-yes" type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
      },
      postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<h1>You are signed out of the test provider.</h1>');
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    Grant: 600,
    IdToken: 600,
    Interaction: 600,
    Session: 3600,
  },
  cookies: { keys: ['kirby-test-oidc-provider-cookie-key'] },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Sign-in error</h1><p class="error">${escape(out.error)}: ${escape(out.error_description || '')}</p>`);
  },
});
provider.proxy = false;

function loginForm(uid, error, username = '') {
  return page('Sign in', `<h1>Test provider: sign in</h1>${error ? `<p class="error" id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}" autocomplete="off">
<label for="username">User name</label><input id="username" name="username" value="${escape(username)}" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button id="sign-in" type="submit">Sign in</button></form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// The login page: GET shows it, POST checks the password and finishes the interaction.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([A-Za-z0-9_-]+)$/);
  if (!match) return next();
  ctx.set('Cache-Control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== match[1]) ctx.throw(400, 'interaction mismatch');
  if (details.prompt.name === 'consent') {
    // Kirby is a first-party client: consent is given without a page (a loopback client's
    // consent is always asked for, RFC 8252 section 8.6), for what it asked.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(' '));
    if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return undefined;
  }
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = loginForm(details.uid, '');
    return undefined;
  }
  if (ctx.method !== 'POST') ctx.throw(405);
  const form = await readForm(ctx.req);
  const user = byName.get(form.get('username') || '');
  if (!user || !passwordMatches(user, form.get('password'))) {
    ctx.status = 401;
    ctx.type = 'html';
    ctx.body = loginForm(details.uid, 'Wrong user name or password.', form.get('username') || '');
    return undefined;
  }
  await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  return undefined;
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc provider ready: issuer ${issuer}`);
});
