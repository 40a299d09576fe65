// apex-hub local OpenID Connect provider: a real OIDC provider (the certified npm package
// `oidc-provider`, 8.x) on a loopback address, for tests and for `apex-hub local`.
//
//   node provider.mjs <config.json>
//
// The config file is written by apex_hub/localidp/launcher.py (LocalIdP); its keys:
//   host, port (0 = any free port), issuer_host (host part of the issuer URL, default host),
//   users [{username, password, claims{}}], clients [client metadata],
//   ttl {AccessToken, IdToken, RefreshToken, Interaction, Session, Grant, ClientCredentials},
//   rotate_refresh_tokens, jwks (private JWKS), cookie_keys [..], ready_file,
//   oidc_provider_dir (optional: the directory of the installed oidc-provider package; by default the
//   package is resolved the usual way, walking up from this file to a node_modules directory).
// The environment variable APEX_HUB_NODE_MODULES (a node_modules directory) is honoured too.
//
// Once listening it writes {"port", "pid", "issuer"} to ready_file. One log line per token-endpoint
// grant goes to stdout (grant type, client, subject, ok/error) - never a token value.
// SIGTERM/SIGINT close the server and exit 0.

import { readFileSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const TITLE = 'APEx local identity provider';
const BAD_LOGIN = 'Invalid user name or password.';

function log(...parts) {
  process.stdout.write(`${new Date().toISOString()} ${parts.join(' ')}\n`);
}

async function loadProvider(config) {
  let dir = config.oidc_provider_dir;
  if (!dir && process.env.APEX_HUB_NODE_MODULES) {
    dir = join(process.env.APEX_HUB_NODE_MODULES, 'oidc-provider');
  }
  if (!dir) {
    return (await import('oidc-provider')).default;
  }
  const pkgFile = join(dir, 'package.json');
  if (!existsSync(pkgFile)) {
    throw new Error(`oidc-provider not found: ${pkgFile} does not exist`);
  }
  const pkg = JSON.parse(readFileSync(pkgFile, 'utf8'));
  let entry = pkg.main || 'index.js';
  const dot = pkg.exports && (typeof pkg.exports === 'string' ? pkg.exports : pkg.exports['.']);
  if (typeof dot === 'string') entry = dot;
  else if (dot && typeof dot === 'object') entry = dot.import || dot.default || entry;
  return (await import(pathToFileURL(join(dir, entry)).href)).default;
}

function escapeHtml(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

const STYLE = `body{font-family:sans-serif;max-width:26em;margin:3em auto;padding:0 1em;color:#222}
h1{font-size:1.3em}label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em;box-sizing:border-box}
button{margin-top:1em;padding:.5em 1.2em}.error{color:#a00;font-weight:bold}.note{color:#666;font-size:.9em}`;

function page(heading, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${TITLE}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(heading)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(uid, clientId, login, error) {
  return page(TITLE, `${clientId ? `<p class="note">Sign in to continue to <b>${escapeHtml(clientId)}</b>.</p>` : ''}
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${encodeURIComponent(uid)}/login" autocomplete="off">
<label for="login">User name</label>
<input id="login" name="login" type="text" value="${escapeHtml(login)}" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" required>
<button type="submit">Sign in</button>
</form>`);
}

async function readForm(ctx) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > 65536) ctx.throw(413, 'request body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function main() {
  const configPath = process.argv[2];
  if (!configPath) {
    process.stderr.write('usage: node provider.mjs <config.json>\n');
    process.exit(2);
  }
  const config = JSON.parse(readFileSync(configPath, 'utf8'));
  const Provider = await loadProvider(config);

  const users = new Map(config.users.map((u) => [u.username, u]));
  const claimNames = new Set(['sub']);
  for (const u of config.users) Object.keys(u.claims || {}).forEach((k) => claimNames.add(k));
  claimNames.delete('sub');
  const allClaims = ['sub', ...claimNames];
  const stdProfile = ['name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username',
    'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at'];

  // Listen first, so that port 0 gives the real port before the issuer is fixed.
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port || 0, config.host, resolve);
  });
  const { port } = server.address();
  const issuer = `http://${config.issuer_host || config.host}:${port}`;
  const ttl = config.ttl;

  const provider = new Provider(issuer, {
    clients: config.clients,
    jwks: config.jwks,
    cookies: {
      keys: config.cookie_keys,
      // plain http on loopback: no `secure` flag (koa/cookies would refuse it on http), and `lax`
      // because browsers drop SameSite=None cookies that are not secure.
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    // Every claim of a user comes with scope `openid` (and thus in the ID token: conformIdTokenClaims
    // is false); `profile` and `email` name the standard subsets.
    claims: {
      openid: allClaims,
      profile: stdProfile.filter((c) => claimNames.has(c)),
      email: ['email', 'email_verified'].filter((c) => claimNames.has(c)),
    },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    conformIdTokenClaims: false,
    async findAccount(ctx, sub) {
      const user = users.get(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { ...(user.claims || {}), sub };
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // Auto-submitting form (no user interaction; the button is for browsers without JavaScript).
        // An HTTP client: the page's one form, POST its hidden inputs (xsrf, logout=yes) to its action.
        // (Without a provider session oidc-provider answers with its own auto-submitting form of the
        // same two fields.)
        async logoutSource(ctx, form) {
          const withLogout = form.replace('</form>',
            '<input type="hidden" name="logout" value="yes"/><button type="submit">Sign out</button></form>');
          ctx.body = page('Signing out', `${withLogout}
<script>document.getElementById('op.logoutForm').submit()</script>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<p>You have been signed out.</p>');
        },
      },
    },
    pkce: { methods: ['S256'], required: () => true },
    // offline_access + the refresh_token grant is enough for a refresh token (no prompt=consent needed;
    // consent is given automatically after login).
    async issueRefreshToken(ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
    },
    rotateRefreshToken: Boolean(config.rotate_refresh_tokens),
    ttl: {
      AccessToken: ttl.AccessToken,
      IdToken: ttl.IdToken,
      RefreshToken: ttl.RefreshToken,
      Interaction: ttl.Interaction,
      Session: ttl.Session,
      Grant: ttl.Grant,
      ClientCredentials: ttl.ClientCredentials,
      AuthorizationCode: 60,
    },
    interactions: {
      url(ctx, interaction) {
        return `/interaction/${interaction.uid}`;
      },
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', Object.entries(out)
        .map(([k, v]) => `<p><b>${escapeHtml(k)}</b>: ${escapeHtml(v)}</p>`).join('\n'));
    },
  });
  provider.proxy = false;

  const describe = (ctx) => {
    const grantType = ctx.oidc?.params?.grant_type || '-';
    const client = ctx.oidc?.client?.clientId || '-';
    const e = ctx.oidc?.entities || {};
    const sub = e.Account?.accountId || e.AuthorizationCode?.accountId || e.RefreshToken?.accountId || '-';
    return `grant_type=${grantType} client=${client} sub=${sub}`;
  };
  provider.on('grant.success', (ctx) => log('token', describe(ctx), 'ok'));
  provider.on('grant.error', (ctx, err) => log('token', describe(ctx), `error=${err.error || err.name}`,
    `(${err.error_description || err.message})`));
  provider.on('revocation.error', (ctx, err) => log('revocation error', err.error || err.message));
  provider.on('end_session.success', (ctx) => log('end_session', `client=${ctx.oidc?.client?.clientId || '-'}`, 'ok'));
  provider.on('server_error', (ctx, err) => log('server_error', err.stack || err));

  // oidc-provider (per OIDC Core 11) drops `offline_access` unless the request has prompt=consent. Our
  // consent is automatic anyway, so a GET authorization request asking for offline_access gets
  // `consent` added to its prompt (not with prompt=none, which cannot be combined). POSTed
  // authorization requests are left alone.
  provider.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/auth') {
      const q = new URLSearchParams(ctx.querystring);
      const scopes = (q.get('scope') || '').split(' ');
      const prompts = (q.get('prompt') || '').split(' ').filter(Boolean);
      if (scopes.includes('offline_access') && !prompts.includes('consent') && !prompts.includes('none')) {
        q.set('prompt', [...prompts, 'consent'].join(' '));
        ctx.querystring = q.toString();
      }
    }
    return next();
  });

  // Our interactions: a login form; consent is granted automatically.
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([^/]+)(\/login)?$/.exec(ctx.path);
    if (!m) return next();
    ctx.set('cache-control', 'no-store');
    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = page('Sign-in expired', `<p>${escapeHtml(err.error_description || err.message)}.
Go back to the application and sign in again.</p>`);
      return undefined;
    }
    const { uid, prompt, params } = details;
    if (m[2]) {
      if (ctx.method !== 'POST') ctx.throw(405);
      const form = await readForm(ctx);
      const login = form.get('login') || '';
      const user = users.get(login);
      if (!user || user.password !== (form.get('password') || '')) {
        log('login', `user=${JSON.stringify(login)}`, 'failed');
        ctx.type = 'html';
        ctx.status = 200;
        ctx.body = loginPage(uid, params.client_id, login, BAD_LOGIN);
        return undefined;
      }
      log('login', `user=${login}`, 'ok');
      const to = await provider.interactionResult(ctx.req, ctx.res,
        { login: { accountId: login } }, { mergeWithLastSubmission: false });
      ctx.status = 303;
      return ctx.redirect(to);
    }
    if (ctx.method !== 'GET') ctx.throw(405);
    if (prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = loginPage(uid, params.client_id, params.login_hint || '', '');
      return undefined;
    }
    if (prompt.name === 'consent') {
      const { grantId, session } = details;
      const grant = grantId ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const to = await provider.interactionResult(ctx.req, ctx.res,
        { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
      ctx.status = 303;
      return ctx.redirect(to);
    }
    ctx.throw(400, `unsupported prompt ${prompt.name}`);
    return undefined;
  });

  // oidc-provider checks static clients on first use; check them now so that a bad one fails the start
  for (const { client_id: id } of config.clients) {
    try {
      await provider.Client.find(id);
    } catch (err) {
      throw new Error(`client ${id}: ${err.error_description || err.message}`);
    }
  }

  server.on('request', provider.callback());

  if (config.ready_file) {
    const tmp = `${config.ready_file}.tmp`;
    writeFileSync(tmp, JSON.stringify({ port, pid: process.pid, issuer }));
    renameSync(tmp, config.ready_file);
  }
  log('listening', issuer, `pid=${process.pid}`);

  const shutdown = (signal) => {
    log('shutdown on', signal);
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`apex-hub local OIDC provider failed: ${err.stack || err}\n`);
  process.exit(1);
});
